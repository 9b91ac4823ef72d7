//! Honest answers under hostile plugins: every answer and every plugin error is checked against the
//! contract (`tributary_plugin_api::contract`), on the detail path as on the list path.

use serde_json::json;
use tonic::Code;
use tributary_proto::v1 as pb;
use tributary_tests::{source, start_with};

fn detail_request(source: &str, identifier: &str) -> pb::GetAvailablePackageDetailRequest {
    pb::GetAvailablePackageDetailRequest {
        available_package_ref: Some(pb::AvailablePackageReference {
            source: source.into(),
            identifier: identifier.into(),
        }),
    }
}

#[tokio::test]
async fn detail_answers_and_plugin_errors_are_checked() {
    let (_plugins, server) = start_with(
        &["testkit"],
        vec![
            source(
                "bad-utf8",
                "testkit",
                json!({ "items": [{ "name": "x" }], "bad_utf8_in_detail": true }),
            ),
            source(
                "long-error",
                "testkit",
                json!({ "items": [{ "name": "x" }], "long_error_in_detail": 1_000_000 }),
            ),
            source(
                "short-error",
                "testkit",
                json!({ "items": [{ "name": "x" }], "long_error_in_detail": 10 }),
            ),
        ],
    )
    .await;
    let mut client = server.packages().await;

    let err = client
        .get_available_package_detail(detail_request("bad-utf8", "x"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    assert_eq!(
        err.message(),
        "source \"bad-utf8\" (plugin \"testkit\"), identifier \"x\": contract_violation: item \"x\" has a display_name that is not valid UTF-8"
    );

    let err = client
        .get_available_package_detail(detail_request("long-error", "x"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    assert_eq!(
        err.message(),
        "source \"long-error\" (plugin \"testkit\"), identifier \"x\": contract_violation: error of kind unavailable has a message of 1000000 bytes, at most 4096 are allowed"
    );

    let err = client
        .get_available_package_detail(detail_request("short-error", "x"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(
        err.message(),
        "source \"short-error\" (plugin \"testkit\"), identifier \"x\": unavailable: eeeeeeeeee"
    );
    server.stop().await;
}
