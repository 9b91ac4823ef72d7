//! The merged order and paging, starting from the cases of Kubeapps' own core test.

use serde_json::json;
use tonic::Code;
use tributary_proto::v1 as pb;
use tributary_tests::{
    config, keys, list, list_request, page_through, source, start_with, PluginDir, TestServer,
};

/// Two sources, each with `pkg-1` and `pkg-2`.
async fn two_sources() -> (PluginDir, TestServer) {
    let plugins = PluginDir::with(&["testkit"]);
    let items =
        json!({ "items": [{ "name": "pkg-1", "id": "1" }, { "name": "pkg-2", "id": "2" }] });
    let cfg = config(
        plugins.path(),
        plugins.path(),
        vec![
            source("b", "testkit", items.clone()),
            source("a", "testkit", items),
        ],
    );
    let server = TestServer::start(cfg).await;
    (plugins, server)
}

#[tokio::test]
async fn kubeapps_core_cases() {
    let (_plugins, server) = two_sources().await;
    let mut client = server.packages().await;
    let all = ["pkg-1@a/1", "pkg-1@b/1", "pkg-2@a/2", "pkg-2@b/2"];

    // The whole list, in order.
    let page = list(&mut client, 0, "", None).await;
    assert_eq!(keys(&page.available_package_summaries), all);
    assert_eq!(page.next_page_token, "");
    assert!(page.failed_sources.is_empty());

    // Page size 2: the first two, and a token.
    let page = list(&mut client, 2, "", None).await;
    assert_eq!(keys(&page.available_package_summaries), all[..2]);
    assert_ne!(page.next_page_token, "");

    // Page size 3 then 2: the first three, then pkg-2@b with an empty token.
    let first = list(&mut client, 3, "", None).await;
    assert_eq!(keys(&first.available_package_summaries), all[..3]);
    let second = list(&mut client, 2, &first.next_page_token, None).await;
    assert_eq!(keys(&second.available_package_summaries), ["pkg-2@b/2"]);
    assert_eq!(second.next_page_token, "");

    // Page size 3 then 1: pkg-2@b with a token, then an empty page with an empty token. A page
    // smaller than the number of sources asks each source for one item and no look-ahead item, so
    // the merge cannot know that `b` has nothing after pkg-2 (see engine::first_limit).
    let second = list(&mut client, 1, &first.next_page_token, None).await;
    assert_eq!(keys(&second.available_package_summaries), ["pkg-2@b/2"]);
    assert_ne!(second.next_page_token, "");
    let third = list(&mut client, 1, &second.next_page_token, None).await;
    assert!(third.available_package_summaries.is_empty());
    assert_eq!(third.next_page_token, "");
    server.stop().await;
}

#[tokio::test]
async fn every_page_size_concatenates_to_the_whole_list() {
    let (_plugins, server) = two_sources().await;
    let mut client = server.packages().await;
    let all = ["pkg-1@a/1", "pkg-1@b/1", "pkg-2@a/2", "pkg-2@b/2"];
    for size in 1..=5 {
        let pages = page_through(&mut client, &[size], None, 10).await;
        assert_eq!(pages.concat(), all, "page size {size}");
        for page in &pages[..pages.len() - 1] {
            assert_eq!(
                page.len(),
                size as usize,
                "page size {size}: only the last page is short"
            );
        }
    }
}

#[tokio::test]
async fn page_sizes_are_defaulted_and_coerced() {
    let (_plugins, server) = start_with(
        &["testkit"],
        vec![source("gen", "testkit", json!({ "generate": 1500 }))],
    )
    .await;
    let mut client = server.packages().await;
    let page = |size| list_request(size, "", None);

    let default = client
        .list_available_package_summaries(page(0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(default.available_package_summaries.len(), 20);
    let huge = client
        .list_available_package_summaries(page(i32::MAX))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(huge.available_package_summaries.len(), 1000);
    assert_eq!(huge.available_package_summaries[999].name, "pkg-0000000999");
    let negative = client
        .list_available_package_summaries(page(-1))
        .await
        .unwrap_err();
    assert_eq!(negative.code(), Code::InvalidArgument);
    assert!(
        negative.message().contains("page_size"),
        "{}",
        negative.message()
    );
    server.stop().await;
}

#[tokio::test]
async fn filters_select_and_unknown_sources_are_named() {
    let (_plugins, server) = start_with(&["testkit"], vec![
            source(
                "one",
                "testkit",
                json!({ "items": [
                    { "name": "redis", "description": "In-memory store", "categories": ["Database"], "repository": "r1" },
                    { "name": "nginx", "display_name": "NGINX Web", "categories": ["Web"], "repository": "r2" },
                ] }),
            ),
            source(
                "two",
                "testkit",
                json!({ "items": [
                    { "name": "Redis-Operator", "categories": ["Operator", "Database"], "repository": "r1" },
                    { "name": "apache", "description": "web server", "repository": "r3" },
                ] }),
            ),
        ]).await;
    let mut client = server.packages().await;
    let filter = |query: &str, categories: &[&str], repositories: &[&str], sources: &[&str]| {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Some(pb::FilterOptions {
            query: query.into(),
            categories: v(categories),
            repositories: v(repositories),
            sources: v(sources),
            include_deprecated: false,
        })
    };
    let cases = [
        (
            filter("REDIS", &[], &[], &[]),
            vec!["Redis-Operator@two/Redis-Operator", "redis@one/redis"],
        ),
        (
            filter("web", &[], &[], &[]),
            vec!["apache@two/apache", "nginx@one/nginx"],
        ),
        (
            filter("", &["Database"], &[], &[]),
            vec!["Redis-Operator@two/Redis-Operator", "redis@one/redis"],
        ),
        (
            filter("", &["Web", "Operator"], &[], &[]),
            vec!["Redis-Operator@two/Redis-Operator", "nginx@one/nginx"],
        ),
        (filter("", &[], &["r1"], &["one"]), vec!["redis@one/redis"]),
        (
            filter("", &[], &[], &["two"]),
            vec!["Redis-Operator@two/Redis-Operator", "apache@two/apache"],
        ),
        (filter("nothing-matches", &[], &[], &[]), vec![]),
    ];
    for (f, expected) in cases {
        let pages = page_through(&mut client, &[1], f.clone(), 10).await;
        assert_eq!(pages.concat(), expected, "filter {f:?}");
    }
    let err = client
        .list_available_package_summaries(list_request(5, "", filter("", &[], &[], &["three"])))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("\"three\""), "{}", err.message());
    server.stop().await;
}

#[tokio::test]
async fn detail_is_routed_to_the_owning_source() {
    let (_plugins, server) = two_sources().await;
    let mut client = server.packages().await;
    let reference = |source: &str, identifier: &str| pb::GetAvailablePackageDetailRequest {
        available_package_ref: Some(pb::AvailablePackageReference {
            source: source.into(),
            identifier: identifier.into(),
        }),
    };
    let detail = client
        .get_available_package_detail(reference("b", "2"))
        .await
        .unwrap()
        .into_inner()
        .available_package_detail
        .unwrap();
    let summary = detail.summary.unwrap();
    assert_eq!(summary.name, "pkg-2");
    assert_eq!(summary.available_package_ref.unwrap().source, "b");

    let err = client
        .get_available_package_detail(reference("zzz", "2"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("\"zzz\""), "{}", err.message());
    let err = client
        .get_available_package_detail(reference("a", "nope"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("\"nope\""), "{}", err.message());
    let err = client
        .get_available_package_detail(pb::GetAvailablePackageDetailRequest {
            available_package_ref: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    server.stop().await;
}

#[tokio::test]
async fn health_and_reflection_answer() {
    use tonic_health::pb::{
        health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
    };
    use tonic_reflection::pb::v1::{
        server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        ServerReflectionRequest,
    };
    let (_plugins, server) = two_sources().await;
    let channel = server.channel().await;

    let mut health = HealthClient::new(channel.clone());
    for service in [
        "",
        "tributary.v1.PackagesService",
        "tributary.v1.PluginsService",
    ] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "service {service:?}");
    }

    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer {response:?}");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "tributary.v1.PackagesService",
            "tributary.v1.PluginsService"
        ]
    );
    server.stop().await;
}
