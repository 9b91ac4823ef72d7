//! Scenario 2, the plugin boundary: the `testkit` source loaded from its `.so` against the same
//! source linked into this binary as a plain Rust value (wrapped by `ffi::source_box`, as the host
//! wraps a loaded one). Both serve the same 100,000 stored items.
//!
//! Two figures: the host's whole work for a page (the engine page and its conversion into the API
//! form, which is where strings allocated by the plugin are copied into the host's), and a bare
//! `list` call of 21 items.

use std::sync::Arc;

use tributary_host::service::summary_pb;
use tributary_plugin_api::{
    abi_stable::std_types::RResult, ffi::source_box, Filter, ListRequest, Plugin, ROption, RStr,
    RString, SeekKey,
};
use tributary_plugin_testkit::TestkitPlugin;
use tributary_runtime::{call::SourceHandle as Source, loader, merge::token::MergeKey};

use crate::harness::{
    data::{self, item_name},
    process::artifacts,
    progress,
    rng::Rng,
    timing::{fmt_secs, time, time_async, with_spread, Samples, NOISY},
    Bench, Report, Row, Target,
};

pub fn run(bench: &Bench, report: &mut Report) {
    let n = bench.settings.pick(100_000, 10_000);
    let pages = bench.settings.pick(20_000, 2_000);
    let calls = bench.settings.pick(100_000, 10_000);
    let reps = bench.settings.pick(9, 2);

    let config = serde_json::json!({
        "items": (0..n)
            .map(|i| serde_json::json!({
                "name": item_name(i),
                "id": format!("id{i:010}"),
                "display_name": item_name(i),
                "description": "a stored package for the benchmarks",
                "version": "1.2.3",
                "repository": "bench",
            }))
            .collect::<Vec<_>>()
    })
    .to_string();

    let library = artifacts().testkit.clone();
    let files = loader::load_all(std::slice::from_ref(&library), false);
    let plugin = files[0]
        .outcome
        .as_ref()
        .unwrap_or_else(|e| panic!("{} does not load: {e}", library.display()));
    let module = plugin
        .module
        .expect("load_all opens the library in this process");
    let loaded = match (module.new_source())(
        &tributary_runtime::context::context(
            "s",
            std::path::Path::new(""),
            std::time::Duration::from_secs(5),
        ),
        RStr::from_str(&config),
    ) {
        RResult::ROk(imp) => Arc::new(Source::new("s", "testkit", imp)),
        RResult::RErr(e) => panic!("the loaded testkit rejects its config: {e}"),
    };
    let linked = Arc::new(Source::new(
        "s",
        "testkit",
        source_box(
            TestkitPlugin::new_source(tributary_plugin_api::Host::detached("s", None), &config)
                .expect("testkit config"),
        ),
    ));

    let mut rng = Rng::new(2);
    let positions: Arc<Vec<usize>> = Arc::new(
        (0..pages)
            .map(|_| rng.below(n as u64 - 40) as usize)
            .collect(),
    );

    // The host's work per page.
    let (mut so_page, mut rs_page) = (Samples::new(), Samples::new());
    for rep in 0..=reps {
        for (source, samples) in [(&loaded, &mut so_page), (&linked, &mut rs_page)] {
            let (source, positions) = (source.clone(), positions.clone());
            let t = bench.run(async move {
                let (t, _) = time_async(async {
                    for &i in positions.iter() {
                        let after = MergeKey {
                            name: item_name(i),
                            source: "s".to_owned(),
                            identifier: format!("id{i:010}"),
                        };
                        let page = data::page(std::slice::from_ref(&source), 20, Some(after)).await;
                        let api: Vec<_> = page
                            .items
                            .into_iter()
                            .map(|item| summary_pb(&source.name, item.summary))
                            .collect();
                        assert_eq!(api.len(), 20);
                    }
                })
                .await;
                t
            });
            if rep > 0 {
                samples.push(t.as_secs_f64() / pages as f64);
            }
        }
    }
    progress("pages done");
    report.row(
        Row::new(
            "2",
            "plugin boundary: engine page + API conversion, 20 items, .so vs linked",
        )
        .figures(
            with_spread(fmt_secs(so_page.median()), &so_page),
            with_spread(fmt_secs(rs_page.median()), &rs_page),
        )
        .ratio(so_page.median() / rs_page.median())
        .target(Target::AtMost(1.1))
        .noisy(so_page.spread() > NOISY || rs_page.spread() > NOISY),
    );

    // A bare call.
    let requests: Vec<ListRequest> = (0..calls)
        .map(|_| {
            let i = rng.below(n as u64 - 40) as usize;
            ListRequest {
                after: ROption::RSome(SeekKey {
                    name: RString::from(item_name(i)),
                    identifier: RString::from(format!("id{i:010}")),
                }),
                limit: 21,
                filter: Filter::default(),
                extensions: Default::default(),
            }
        })
        .collect();
    let (mut so_call, mut rs_call) = (Samples::new(), Samples::new());
    for rep in 0..=reps {
        for (source, samples) in [(&loaded, &mut so_call), (&linked, &mut rs_call)] {
            let (t, ()) = time(|| {
                for request in &requests {
                    match source.imp.list(request) {
                        RResult::ROk(items) => assert_eq!(items.into_vec().len(), 21),
                        RResult::RErr(e) => panic!("list failed: {e}"),
                    }
                }
            });
            if rep > 0 {
                samples.push(t.as_secs_f64() / calls as f64);
            }
        }
    }
    report.row(
        Row::new(
            "2",
            "plugin boundary: bare list call, 21 items, .so vs linked",
        )
        .figures(
            with_spread(fmt_secs(so_call.median()), &so_call),
            with_spread(fmt_secs(rs_call.median()), &rs_call),
        )
        .ratio(so_call.median() / rs_call.median())
        .target(Target::AtMost(1.1))
        .noisy(so_call.spread() > NOISY || rs_call.spread() > NOISY),
    );
}
