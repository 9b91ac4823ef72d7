//! Interface compatibility: a plugin built against the frozen interface 1.0 loads and serves in
//! today's host; one that declares another major version, or whose types' layout differs, is rejected
//! with one line saying what to rebuild against.

use serde_json::json;
use tributary_proto::v1::plugin_info::Status as PluginStatus;
use tributary_tests::{keys, list, start_with};

#[tokio::test]
async fn frozen_interface_plugins_load_and_incompatible_ones_are_named() {
    let (_plugins, server) = start_with(
        &["compat-v1-0", "compat-major-2", "compat-layout", "testkit"],
        vec![
            tributary_tests::source("compat-v1-0", "compat-v1-0", json!({})),
            tributary_tests::source("t", "testkit", json!({ "items": [{ "name": "legacy-a" }] })),
        ],
    )
    .await;
    let listing = server.listing().await;
    let file = |name: &str| {
        listing
            .plugins
            .iter()
            .find(|p| p.path.ends_with(name))
            .unwrap()
            .clone()
    };

    let v1 = file("libcompat-v1-0.so");
    assert_eq!(v1.status, PluginStatus::Loaded as i32, "{}", v1.reason);
    assert_eq!(
        (v1.name.as_str(), v1.interface_version.as_str()),
        ("compat-v1-0", "1.0")
    );

    let major = file("libcompat-major-2.so");
    assert_eq!(major.status, PluginStatus::Rejected as i32);
    assert_eq!(
        major.reason,
        "built for plugin interface 2.0, this host speaks 1.x: rebuild the plugin against tributary-plugin-api 1.x"
    );
    let layout = file("libcompat-layout.so");
    assert_eq!(layout.status, PluginStatus::Rejected as i32);
    assert!(
        layout
            .reason
            .starts_with("plugin interface layout does not match"),
        "{}",
        layout.reason
    );
    assert!(!layout.reason.contains('\n'), "one line");

    // The 1.0 plugin serves through today's engine, merged with a current plugin.
    let mut client = server.packages().await;
    let page = list(&mut client, 10, "", None).await;
    assert_eq!(
        keys(&page.available_package_summaries),
        [
            "legacy-a@compat-v1-0/legacy-a",
            "legacy-a@t/legacy-a",
            "legacy-b@compat-v1-0/legacy-b"
        ]
    );
    server.stop().await;
}
