//! Page tokens: every bad token is INVALID_ARGUMENT with a message, never INTERNAL, never a crash.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use serde_json::json;
use sha2::{Digest, Sha256};
use tonic::Code;
use tributary_proto::v1 as pb;
use tributary_tests::{keys, list, list_request, source, start_with};

#[tokio::test]
async fn bad_tokens_are_invalid_argument() {
    let (_plugins, server) = start_with(
        &["testkit"],
        vec![source("gen", "testkit", json!({ "generate": 50 }))],
    )
    .await;
    let mut client = server.packages().await;
    let first = list(&mut client, 10, "", None).await;
    let good = first.next_page_token.clone();
    assert!(
        good.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "URL-safe: {good}"
    );

    // Same layout, but version byte 3 (no server writes it; 1 is name order, 2 the other orders)
    // with a valid checksum.
    let mut raw = URL_SAFE_NO_PAD.decode(&good).unwrap();
    raw[0] = 3;
    let n = raw.len();
    let sum = Sha256::digest(&raw[..n - 4]);
    raw[n - 4..].copy_from_slice(&sum[..4]);
    let other_version = URL_SAFE_NO_PAD.encode(&raw);

    let mut tampered = good.clone().into_bytes();
    let mid = tampered.len() / 2;
    tampered[mid] = if tampered[mid] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();

    let cases: Vec<(&str, String, &str)> = vec![
        ("garbage", "!!not a token!!".into(), "page_token"),
        ("null", "null".into(), "page_token"),
        ("JSON map", "{\"gen\":10}".into(), "page_token"),
        ("truncated", good[..good.len() - 3].into(), "page_token"),
        ("half", good[..good.len() / 2].into(), "page_token"),
        ("tampered", tampered, "page_token"),
        ("other version", other_version, "version 3"),
        ("huge", "A".repeat(20_000), "longer than"),
    ];
    for (what, token, expected) in cases {
        let err = client
            .list_available_package_summaries(list_request(10, &token, None))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
        assert!(
            err.message().contains(expected),
            "{what}: {:?} lacks {expected:?}",
            err.message()
        );
    }

    // Reused with another filter.
    let filter = Some(pb::FilterOptions {
        query: "pkg".into(),
        ..Default::default()
    });
    let err = client
        .list_available_package_summaries(list_request(10, &good, filter))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("different filter"),
        "{}",
        err.message()
    );

    // A changed page size is honoured, and the server is still fine after all of that.
    let next = list(&mut client, 3, &good, None).await;
    assert_eq!(
        keys(&next.available_package_summaries),
        [
            "pkg-0000000010@gen/g10",
            "pkg-0000000011@gen/g11",
            "pkg-0000000012@gen/g12"
        ]
    );
    server.stop().await;
}

#[tokio::test]
async fn oversized_requests_are_refused() {
    let (_plugins, server) = start_with(
        &["testkit"],
        vec![source("gen", "testkit", json!({ "generate": 5 }))],
    )
    .await;
    let mut client = server.packages().await;
    let filter = Some(pb::FilterOptions {
        query: "q".repeat(2 * 1024 * 1024),
        ..Default::default()
    });
    let err = client
        .list_available_package_summaries(list_request(5, "", filter))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    assert!(err.message().contains("too large"), "{}", err.message());
    // The server is unaffected.
    let page = list(&mut client, 5, "", None).await;
    assert_eq!(page.available_package_summaries.len(), 5);
    server.stop().await;
}
