//! REST/JSON on the gRPC port: every path answers what the RPC answers (pages, details, plugins,
//! errors), in the proto3 JSON mapping, through a real HTTP/1.1 client.

use serde_json::{json, Value};
use tonic::Code;
use tributary_proto::v1 as pb;
use tributary_tests::{keys, list, source, start_with, TestServer};

/// `GET http://{address}{path}` with an optional bearer token: the status and the parsed JSON body
/// (`Value::Null` when the body is not JSON).
pub async fn get(address: std::net::SocketAddr, path: &str, token: Option<&str>) -> (u16, Value) {
    let url = format!("http://{address}{path}");
    let token = token.map(|t| format!("Bearer {t}"));
    tokio::task::spawn_blocking(move || {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent();
        let mut request = agent.get(&url);
        if let Some(token) = &token {
            request = request.header("authorization", token);
        }
        let mut response = request.call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_vec().unwrap();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    })
    .await
    .unwrap()
}

fn items() -> Value {
    json!({ "items": [
        { "name": "apache", "id": "charts/apache", "categories": ["web"], "repository": "bitnami" },
        { "name": "nginx", "id": "charts/nginx", "categories": ["web", "proxy"], "repository": "bitnami" },
        { "name": "old", "id": "legacy/old", "deprecated": true },
        { "name": "redis", "id": "charts/redis", "categories": ["db"], "repository": "other" },
    ] })
}

async fn two_sources() -> (tributary_tests::PluginDir, TestServer) {
    start_with(
        &["testkit"],
        vec![
            source("b", "testkit", items()),
            source("a", "testkit", items()),
        ],
    )
    .await
}

fn page(json: Value) -> pb::ListAvailablePackageSummariesResponse {
    serde_json::from_value(json).expect("a ListAvailablePackageSummariesResponse in JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_pages_are_the_grpc_pages() {
    let (_plugins, server) = two_sources().await;
    let mut client = server.packages().await;

    // Page after page, following the token, REST and gRPC give the same pages.
    let mut token = String::new();
    let mut all = Vec::new();
    for _ in 0..10 {
        let native = list(&mut client, 4, &token, None).await;
        let path = format!("/v1/packages?page_size=4&page_token={token}");
        let (status, body) = get(server.address, &path, None).await;
        assert_eq!(status, 200, "{body}");
        // The proto3 JSON mapping: camelCase names; an empty token is left out.
        assert!(body.get("availablePackageSummaries").is_some(), "{body}");
        assert_eq!(
            body["availablePackageSummaries"][0]["availablePackageRef"]["source"],
            json!(
                native.available_package_summaries[0]
                    .available_package_ref
                    .as_ref()
                    .unwrap()
                    .source
            )
        );
        assert_eq!(page(body), native);
        all.extend(keys(&native.available_package_summaries));
        token = native.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(
        all,
        [
            "apache@a/charts/apache",
            "apache@b/charts/apache",
            "nginx@a/charts/nginx",
            "nginx@b/charts/nginx",
            "redis@a/charts/redis",
            "redis@b/charts/redis"
        ]
    );

    // Filters: repeated parameters repeat; deprecated packages on request.
    let filter = pb::FilterOptions {
        categories: vec!["db".into(), "proxy".into()],
        sources: vec!["b".into()],
        ..Default::default()
    };
    let native = list(&mut client, 10, "", Some(filter)).await;
    assert_eq!(
        keys(&native.available_package_summaries),
        ["nginx@b/charts/nginx", "redis@b/charts/redis"]
    );
    let (status, body) = get(
        server.address,
        "/v1/packages?categories=db&categories=proxy&sources=b&page_size=10",
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(page(body), native);

    let (status, body) = get(
        server.address,
        "/v1/packages?query=OL&include_deprecated=true",
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let found = page(body);
    assert_eq!(
        keys(&found.available_package_summaries),
        ["old@a/legacy/old", "old@b/legacy/old"]
    );
    assert!(
        found.available_package_summaries[0].deprecated,
        "deprecated items are listed on request"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_detail_takes_identifiers_with_slashes() {
    let (_plugins, server) = two_sources().await;
    let mut client = server.packages().await;
    let native = client
        .get_available_package_detail(pb::GetAvailablePackageDetailRequest {
            available_package_ref: Some(pb::AvailablePackageReference {
                source: "a".into(),
                identifier: "charts/nginx".into(),
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let (status, body) = get(server.address, "/v1/packages/a/charts/nginx", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["availablePackageDetail"]["summary"]["name"],
        json!("nginx")
    );
    let rest: pb::GetAvailablePackageDetailResponse = serde_json::from_value(body).unwrap();
    assert_eq!(rest, native);

    // Not found: the RPC's code and message, as JSON with HTTP 404.
    let grpc = client
        .get_available_package_detail(pb::GetAvailablePackageDetailRequest {
            available_package_ref: Some(pb::AvailablePackageReference {
                source: "a".into(),
                identifier: "charts/none".into(),
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(grpc.code(), Code::NotFound);
    let (status, body) = get(server.address, "/v1/packages/a/charts/none", None).await;
    assert_eq!(status, 404);
    assert_eq!(
        body,
        json!({ "code": "NOT_FOUND", "status": 404, "message": grpc.message() })
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_errors_carry_the_rpc_code_and_message() {
    let (_plugins, server) = two_sources().await;
    let mut client = server.packages().await;

    // Errors of the service itself: the same message as gRPC.
    let cases: [(&str, pb::ListAvailablePackageSummariesRequest); 3] = [
        (
            "/v1/packages?page_size=-1",
            tributary_tests::list_request(-1, "", None),
        ),
        (
            "/v1/packages?sources=nowhere",
            tributary_tests::list_request(
                0,
                "",
                Some(pb::FilterOptions {
                    sources: vec!["nowhere".into()],
                    ..Default::default()
                }),
            ),
        ),
        (
            "/v1/packages?page_token=not-a-token",
            tributary_tests::list_request(0, "not-a-token", None),
        ),
    ];
    for (path, request) in cases {
        let grpc = client
            .list_available_package_summaries(request)
            .await
            .unwrap_err();
        assert_eq!(grpc.code(), Code::InvalidArgument, "{path}");
        let (status, body) = get(server.address, path, None).await;
        assert_eq!(status, 400, "{path}");
        assert_eq!(
            body,
            json!({ "code": "INVALID_ARGUMENT", "status": 400, "message": grpc.message() }),
            "{path}"
        );
    }

    // Bad query parameters: 400 naming the parameter.
    for (path, message) in [
        (
            "/v1/packages?page_size=ten",
            "query parameter `page_size`: not an integer: \"ten\"",
        ),
        (
            "/v1/packages?include_deprecated=perhaps",
            "query parameter `include_deprecated`: not a boolean (true or false): \"perhaps\"",
        ),
        (
            "/v1/packages?query=a&query=b",
            "query parameter `query`: given more than once",
        ),
    ] {
        let (status, body) = get(server.address, path, None).await;
        assert_eq!(status, 400, "{path}");
        assert_eq!(
            body,
            json!({ "code": "INVALID_ARGUMENT", "status": 400, "message": message }),
            "{path}"
        );
    }
    let (status, body) = get(server.address, "/v1/packages?colour=red", None).await;
    assert_eq!(status, 400);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("query parameter `colour`: unknown"),
        "{body}"
    );

    // Paths that do not exist.
    let (status, body) = get(server.address, "/v2/nothing", None).await;
    assert_eq!(status, 404);
    assert_eq!(
        body,
        json!({ "code": "NOT_FOUND", "status": 404,
                "message": "no such path: GET /v2/nothing (see /v1/openapi.json)" })
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_plugins_health_and_readiness() {
    let (_plugins, server) = two_sources().await;
    let native = server.listing().await;
    let (status, body) = get(server.address, "/v1/plugins", None).await;
    assert_eq!(status, 200, "{body}");
    // uint64 as a string, enums by name.
    assert_eq!(body["generation"], json!("1"));
    assert_eq!(body["sources"][0]["status"], json!("STATUS_READY"));
    let rest: pb::ListPluginsResponse = serde_json::from_value(body).unwrap();
    assert_eq!(rest.sources, native.sources);
    assert_eq!(rest.plugins, native.plugins);

    assert_eq!(
        get(server.address, "/healthz", None).await,
        (200, json!({ "status": "SERVING" }))
    );
    assert_eq!(
        get(server.address, "/readyz", None).await,
        (200, json!({ "status": "SERVING" }))
    );
    server.stop().await;
}

/// Every path of the OpenAPI document answers 200, its placeholders filled with a real package.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_openapi_path_answers() {
    let (_plugins, server) = two_sources().await;
    let (status, document) = get(server.address, "/v1/openapi.json", None).await;
    assert_eq!(status, 200);
    assert_eq!(document["openapi"], json!("3.0.3"));
    let paths: Vec<&String> = document["paths"].as_object().unwrap().keys().collect();
    assert_eq!(paths.len(), 6, "{paths:?}");
    for path in paths {
        let concrete = path
            .replace("{source}", "a")
            .replace("{identifier}", "charts/redis");
        let (status, body) = get(server.address, &concrete, None).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert!(body.is_object(), "{path}: {body}");
        assert!(
            document["paths"][path]["get"]["responses"]["200"].is_object(),
            "{path} documents its answer"
        );
    }
    server.stop().await;
}

/// The README's curl examples, run as written against the example catalog the README starts
/// (`examples/tributary.toml`: the real helm and catalog plugins): each answers 200 with JSON
/// holding exactly the expected items.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_curl_example_in_the_readme_answers() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let examples: Vec<&str> = readme
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("curl "))
        .collect();
    let plugins = tributary_tests::PluginDir::with(&["helm", "catalog"]);
    let server = tributary_tests::TestServer::start(tributary_tests::config(
        plugins.path(),
        &tributary_tests::examples_dir(),
        tributary_tests::example_sources(),
    ))
    .await;
    // What each example's answer holds: the listed keys, or one field.
    let listed = |keys: &[&str]| {
        json!(keys
            .iter()
            .map(|k| Value::String((*k).to_owned()))
            .collect::<Vec<_>>())
    };
    let expected = [
        listed(&[
            "apache@bitnami/bitnami/apache",
            "auth-gateway@internal/auth-gateway",
            "billing-api@internal/billing-api",
            "cert-manager@community/community/cert-manager",
            "common@bitnami/bitnami/common",
        ]),
        listed(&README_PAGE_2),
        listed(&["redis@bitnami/bitnami/redis"]),
        // Every match scores 2 (the word in a description): ties, by name.
        listed(&[
            "mariadb@bitnami/bitnami/mariadb",
            "memcached@bitnami/bitnami/memcached",
            "mongodb@bitnami/bitnami/mongodb",
            "postgresql@bitnami/bitnami/postgresql",
            "prometheus@community/community/prometheus",
            "search-indexer@internal/search-indexer-v0",
        ]),
        listed(&[
            "postgresql@bitnami/bitnami/postgresql",
            "wordpress@bitnami/bitnami/wordpress",
            "mysql@bitnami/bitnami/mysql",
        ]),
        listed(&README_CATEGORIES),
        json!({ "detail": "redis" }),
        json!({ "sources": ["bitnami", "community", "internal"] }),
        listed(&README_INTERNAL),
        json!({ "status": "SERVING" }),
        json!({ "status": "SERVING" }),
    ];
    assert_eq!(examples.len(), expected.len(), "{examples:#?}");

    let mut token = String::new();
    for (example, expected) in examples.iter().zip(expected) {
        let command = example
            .replace("127.0.0.1:50051", &server.address.to_string())
            .replace("AQ...", &token);
        let script = format!("{command} -w '\\n%{{http_code}}'");
        let output = tokio::task::spawn_blocking(move || {
            std::process::Command::new("sh")
                .args(["-c", &script])
                .env("TOKEN", "unused-without-auth")
                .output()
                .expect("run curl (.ci/run installs it)")
        })
        .await
        .unwrap();
        assert!(output.status.success(), "{example}: {output:?}");
        let stdout = String::from_utf8(output.stdout).unwrap();
        let (body, status) = stdout.rsplit_once('\n').unwrap();
        assert_eq!(status, "200", "{example}: {body}");
        let body: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{example}: {e}"));
        let got = if let Some(summaries) = body.get("availablePackageSummaries") {
            if let Some(next) = body["nextPageToken"].as_str() {
                token = next.to_owned();
            }
            let page: pb::ListAvailablePackageSummariesResponse =
                serde_json::from_value(body.clone()).unwrap();
            assert!(summaries.is_array());
            listed(
                &keys(&page.available_package_summaries)
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>(),
            )
        } else if let Some(detail) = body.get("availablePackageDetail") {
            json!({ "detail": detail["summary"]["name"] })
        } else if let Some(sources) = body.get("sources") {
            json!({ "sources": sources
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["name"].clone())
                .collect::<Vec<_>>() })
        } else {
            body
        };
        assert_eq!(got, expected, "{example}");
    }
    server.stop().await;
}

/// The example catalog's second page of 5.
const README_PAGE_2: [&str; 5] = [
    "feature-flags@internal/feature-flags",
    "grafana@community/community/grafana",
    "job-runner@internal/job-runner",
    "kafka@bitnami/bitnami/kafka",
    "log-shipper@internal/log-shipper",
];
/// The example catalog's packages in `Database` or `Monitoring`, deprecated ones included.
const README_CATEGORIES: [&str; 12] = [
    "grafana@community/community/grafana",
    "log-shipper@internal/log-shipper",
    "mariadb@bitnami/bitnami/mariadb",
    "memcached@bitnami/bitnami/memcached",
    "metrics-agent@internal/metrics-agent",
    "mongodb@bitnami/bitnami/mongodb",
    "mysql@bitnami/bitnami/mysql",
    "postgresql@bitnami/bitnami/postgresql",
    "postgresql@internal/postgresql",
    "prometheus@community/community/prometheus",
    "redis@bitnami/bitnami/redis",
    "redis@internal/redis",
];
/// The example catalog's first page of source `internal` (its deprecated cron-runner left out).
const README_INTERNAL: [&str; 10] = [
    "auth-gateway@internal/auth-gateway",
    "billing-api@internal/billing-api",
    "feature-flags@internal/feature-flags",
    "job-runner@internal/job-runner",
    "log-shipper@internal/log-shipper",
    "metrics-agent@internal/metrics-agent",
    "nginx@internal/nginx",
    "postgresql@internal/postgresql",
    "redis@internal/redis",
    "search-indexer@internal/search-indexer-v0",
];
/// `method` `http://{address}{path}` with `content_type` and `body`: the status, the headers and
/// the body as text.
async fn send(
    address: std::net::SocketAddr,
    method: &'static str,
    path: &str,
    content_type: &'static str,
    body: Vec<u8>,
) -> (u16, http::HeaderMap, String) {
    let url = format!("http://{address}{path}");
    tokio::task::spawn_blocking(move || {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .allow_non_standard_methods(true)
            .build()
            .new_agent();
        let request = http::Request::builder()
            .method(method)
            .uri(&url)
            .header("content-type", content_type)
            .body(body)
            .unwrap();
        let mut response = agent
            .run(request)
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.body_mut().read_to_vec().unwrap();
        (status, headers, String::from_utf8_lossy(&body).into_owned())
    })
    .await
    .unwrap()
}

/// Client errors that HTTP or gRPC-web catch before the service are answered like the service's
/// own: REST in the JSON shape with the HTTP status of the code, gRPC-web as INVALID_ARGUMENT with a
/// message saying what was wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_errors_before_the_service_answer_in_the_api_shape() {
    let (_plugins, server) = two_sources().await;

    // A query value that is not UTF-8 once percent-decoded names its parameter (it was read as
    // U+FFFD and searched for).
    let (status, body) = get(server.address, "/v1/packages?query=%ff", None).await;
    assert_eq!(
        (status, body),
        (
            400,
            json!({ "code": "INVALID_ARGUMENT", "status": 400,
                    "message": "query parameter `query`: not UTF-8 once percent-decoded (byte 0 of \"%ff\")" })
        )
    );
    // A detail path that is not UTF-8 once percent-decoded (was a plain-text 400).
    let (status, body) = get(server.address, "/v1/packages/a/charts%ff", None).await;
    assert_eq!(
        (status, body),
        (
            400,
            json!({ "code": "INVALID_ARGUMENT", "status": 400,
                    "message": "the path \"/v1/packages/a/charts%ff\" is not UTF-8 once percent-decoded (the source and the identifier must be)" })
        )
    );
    // The smallest page_size the schema allows is the smallest the server takes.
    let (status, document) = get(server.address, "/v1/openapi.json", None).await;
    assert_eq!(status, 200);
    let page_size = document["paths"]["/v1/packages"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "page_size")
        .unwrap()["schema"]
        .clone();
    assert_eq!(page_size["minimum"], json!(0));
    assert_eq!(page_size["maximum"], json!(i32::MAX));
    let (status, _) = get(server.address, "/v1/packages?page_size=0", None).await;
    assert_eq!(status, 200);
    let (status, _) = get(server.address, "/v1/packages?page_size=2147483647", None).await;
    assert_eq!(status, 200);
    let (status, body) = get(server.address, "/v1/packages?page_size=-1", None).await;
    assert_eq!((status, &body["code"]), (400, &json!("INVALID_ARGUMENT")));

    // Another method than GET: 405 with Allow, in the JSON shape (was an empty body).
    let (status, headers, body) = send(
        server.address,
        "POST",
        "/v1/packages",
        "application/json",
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(status, 405);
    assert_eq!(headers["allow"], "GET,HEAD");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({ "code": "UNIMPLEMENTED", "status": 405,
                "message": "method POST is not allowed on /v1/packages (allowed: GET, HEAD)" })
    );

    // An identifier's slashes may come as %2F: a path segment like `..` inside an identifier then
    // reaches no other path.
    let (status, body) = get(server.address, "/v1/packages/a/charts%2Fnginx", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["availablePackageDetail"]["summary"]["availablePackageRef"]["identifier"],
        json!("charts/nginx")
    );
    let (status, body) = get(
        server.address,
        "/v1/packages/a/z%2F..%2F..%2F..%2Fv1%2Fplugins",
        None,
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("\"z/../../../v1/plugins\""),
        "{body}"
    );

    // gRPC-web bodies that are not gRPC-web: INVALID_ARGUMENT naming the problem (was INTERNAL).
    let method = "/tributary.v1.PackagesService/ListAvailablePackageSummaries";
    for (content_type, body, message) in [
        (
            "application/grpc-web+proto",
            vec![0, 0, 0, 0, 9, 8, 1],
            "malformed gRPC-web request: message 0 is truncated: it declares 9 bytes, 2 arrived",
        ),
        (
            "application/grpc-web+proto",
            vec![2, 0, 0, 0, 0],
            "malformed gRPC-web request: message 0 has compression flag 2: this server takes only uncompressed messages (flag 0)",
        ),
        (
            "application/grpc-web-text+proto",
            b"AAAA*AIIAQ==".to_vec(),
            "malformed gRPC-web request: invalid base64 at character 4: Invalid symbol 42, offset 0.",
        ),
    ] {
        let (status, headers, _) = send(server.address, "POST", method, content_type, body).await;
        assert_eq!(status, 200);
        assert_eq!(headers["grpc-status"], "3", "{content_type}: {headers:?}");
        let text = headers["grpc-message"].to_str().unwrap().to_owned();
        let decoded = url::form_urlencoded::parse(format!("m={}", text.replace('+', "%2B")).as_bytes())
            .next()
            .unwrap()
            .1
            .into_owned();
        assert_eq!(decoded, message);
    }
    // A well-formed one still answers.
    let (status, headers, body) = send(
        server.address,
        "POST",
        method,
        "application/grpc-web-text+proto",
        b"AAAAAAA=".to_vec(),
    )
    .await;
    assert_eq!(status, 200);
    assert!(headers.get("grpc-status").is_none(), "{headers:?}");
    // No Accept header: the answer comes in binary, its trailers in a frame of the body.
    assert!(body.contains("grpc-status:0"), "{body:?}");
    server.stop().await;
}
