//! Scenario 13, REST pages: `GET /v1/packages?page_size=20&page_token=...` resumed from random
//! tokens (scenario 3's catalog and tokens: 3 `testkit` sources of 300,000 generated items each),
//! by 1 and by 32 concurrent HTTP/1.1 keep-alive clients on loopback, against a server that answers
//! every such request with a prebuilt JSON page: the same server's JSON for the first token's page,
//! saved once. The baseline runs tonic's server accepting HTTP/1.1 with `TCP_NODELAY`, as
//! `tributary serve` does, so the ratio is the cost of the page and of the server's layers. Every
//! server runs in its own process; the clients run in this one.
//!
//! Every answer is checked: status 200, a JSON body whose `availablePackageSummaries` holds 20
//! objects with a name, no failed source; anything else counts as a bad call, not a page. Before
//! the load, the saved page is read in the proto3 JSON mapping and compared with the gRPC page for
//! the same token, and the baseline's answer with the saved bytes.

use std::sync::Arc;

use tributary_proto::v1 as pb;

use crate::{
    harness::{
        grpc,
        process::{ServerProcess, Workdir},
        rest,
        timing::{fmt_rate, with_spread, Samples, NOISY},
        Bench, Report, Row, Target,
    },
    scenarios::s3_grpc,
};

const PAGE_SIZE: usize = 20;

/// The JSON page of `token` from `server`, checked as a real page and against the gRPC page for
/// the same token (same items, same next token).
fn json_page(bench: &Bench, server: &ServerProcess, token: &str) -> bytes::Bytes {
    let (address, url, token) = (server.address, server.url(), token.to_owned());
    let (answer, grpc_page) = bench.run(async move {
        let mut client = rest::connect(address).await;
        let answer = client
            .get(&rest::page_path(PAGE_SIZE, &token))
            .await
            .unwrap_or_else(|e| panic!("GET /v1/packages: {e}"));
        let mut grpc_client = grpc::connect(&url).await;
        let grpc_page = grpc::list(
            &mut grpc_client,
            grpc::request(PAGE_SIZE as i32, &token, &[]),
        )
        .await;
        (answer, grpc_page)
    });
    rest::check_page(&answer, PAGE_SIZE)
        .unwrap_or_else(|e| panic!("the server's REST page is not a real page: {e}"));
    let page: pb::ListAvailablePackageSummariesResponse = serde_json::from_slice(&answer.body)
        .unwrap_or_else(|e| panic!("the REST page is not the proto3 JSON of a page: {e}"));
    assert_eq!(
        page.available_package_summaries, grpc_page.available_package_summaries,
        "the REST page holds the gRPC page's items"
    );
    assert_eq!(page.next_page_token, grpc_page.next_page_token);
    answer.body
}

pub fn run(bench: &Bench, report: &mut Report) {
    let id = "13";
    let per_source = s3_grpc::per_source(bench);
    let work = Workdir::new();
    let config = s3_grpc::write_config(&work, per_source);
    let ours = ServerProcess::tributary(&config);
    let tokens = Arc::new(s3_grpc::tokens(per_source));

    // The prebuilt page is a real page of ours, so both answers weigh the same on the wire.
    let page = json_page(bench, &ours, &tokens[0]);
    let page_file = work.path().join("prebuilt-13.json");
    std::fs::write(&page_file, &page).expect("write the prebuilt page");
    let baseline = ServerProcess::rest_baseline(&page_file);
    let address = baseline.address;
    let answer = bench.run(async move {
        rest::connect(address)
            .await
            .get(&rest::page_path(PAGE_SIZE, "any"))
            .await
            .unwrap_or_else(|e| panic!("GET /v1/packages from the baseline: {e}"))
    });
    rest::check_page(&answer, PAGE_SIZE)
        .unwrap_or_else(|e| panic!("the baseline's page is not a real page: {e}"));
    assert_eq!(
        answer.body, page,
        "the baseline answers with the saved page"
    );

    let what = format!("REST, 3×{per_source} generated");
    let rounds = bench.settings.pick(3, 1);
    let duration = bench.settings.load_duration();
    for clients in [1usize, 32] {
        let (mut ours_rate, mut base_rate) = (Samples::new(), Samples::new());
        let mut bad = 0;
        for round in 0..rounds {
            let mut order = [(&ours, &mut ours_rate), (&baseline, &mut base_rate)];
            if round % 2 == 1 {
                order.reverse();
            }
            for (server, samples) in order {
                let (address, tokens) = (server.address, tokens.clone());
                let load = bench.run(async move {
                    rest::load(address, clients, PAGE_SIZE, tokens, duration).await
                });
                samples.push(load.pages_per_second);
                bad += load.bad;
            }
        }
        if bad > 0 {
            report.note(
                id,
                format!(
                    "{what}, {clients} clients: {bad} calls failed, were not 200 or were not a real \
                     20-item page"
                ),
            );
        }
        report.row(
            Row::new(
                id,
                format!(
                    "{what}: 20-item JSON pages, random tokens, {clients} client{}",
                    if clients == 1 { "" } else { "s" }
                ),
            )
            .figures(
                with_spread(fmt_rate(ours_rate.median(), "pages"), &ours_rate),
                with_spread(fmt_rate(base_rate.median(), "pages"), &base_rate),
            )
            .ratio(ours_rate.median() / base_rate.median())
            .target(Target::AtLeast(0.7))
            .noisy(ours_rate.spread() > NOISY || base_rate.spread() > NOISY),
        );
    }
}
