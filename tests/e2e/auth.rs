//! Authentication and per-caller views: the real binary with an `[auth]` section and a tokens file of
//! hashes, real gRPC clients with bearer tokens and with client certificates.

use std::process::{Command, Stdio};

use serde_json::json;
use tonic::{
    metadata::MetadataValue,
    service::interceptor::InterceptedService,
    transport::{Certificate, Channel, ClientTlsConfig, Identity},
    Code, Request, Status,
};
use tributary_proto::v1::{
    self as pb, packages_service_client::PackagesServiceClient,
    plugins_service_client::PluginsServiceClient,
};
use tributary_tests::{artifacts, keys, list_request, PluginDir};

use crate::{
    binary::{write_config, SOURCES},
    tls::{write_server_pair, Authority},
};

type Bearer = Box<dyn FnMut(Request<()>) -> Result<Request<()>, Status> + Send>;
type Client = PackagesServiceClient<InterceptedService<Channel, Bearer>>;

/// `tributary auth hash-token IDENTITY` with `token` on standard input: the tokens-file line.
pub(crate) fn hash_line(token: &str, identity: &str) -> String {
    use std::io::Write;
    let mut child = Command::new(&artifacts().binary)
        .args(["auth", "hash-token", identity])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{token}").unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap()
}

fn bearer(token: Option<&str>) -> Bearer {
    let value = token.map(|t| MetadataValue::try_from(format!("Bearer {t}")).unwrap());
    Box::new(move |mut request: Request<()>| {
        if let Some(v) = &value {
            request.metadata_mut().insert("authorization", v.clone());
        }
        Ok(request)
    })
}

async fn client(address: &str, token: Option<&str>) -> Client {
    let channel = Channel::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    PackagesServiceClient::with_interceptor(channel, bearer(token))
}

/// Every key of the listing in pages of 2.
async fn page_all(client: &mut Client, sources: &[&str]) -> Result<Vec<String>, Status> {
    let filter = (!sources.is_empty()).then(|| pb::FilterOptions {
        sources: sources.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    });
    let (mut seen, mut token) = (Vec::new(), String::new());
    loop {
        let page = client
            .list_available_package_summaries(list_request(2, &token, filter.clone()))
            .await?
            .into_inner();
        seen.extend(keys(&page.available_package_summaries));
        if page.next_page_token.is_empty() {
            return Ok(seen);
        }
        token = page.next_page_token;
    }
}

fn detail(source: &str, identifier: &str) -> pb::GetAvailablePackageDetailRequest {
    pb::GetAvailablePackageDetailRequest {
        available_package_ref: Some(pb::AvailablePackageReference {
            source: source.into(),
            identifier: identifier.into(),
        }),
    }
}

pub(crate) const AUTH: &str = r#"
[auth]
tokens_file = "tokens"
[[auth.identity]]
name = "reader"
sources = ["one"]
[[auth.identity]]
name = "admin"
sources = ["*"]
admin = true
[[auth.identity]]
name = "ops"
sources = ["two"]
certificate_names = ["ops-client"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_authenticate_and_each_caller_sees_only_its_sources() {
    let plugins = PluginDir::with(&["testkit"]);
    let dir = tempfile::tempdir().unwrap();
    let tokens = format!(
        "# reader and admin\n{}{}",
        hash_line("t-reader", "reader"),
        hash_line("t-admin", "admin")
    );
    assert!(!tokens.contains("t-reader"), "the file holds hashes only");
    std::fs::write(dir.path().join("tokens"), tokens).unwrap();
    let config = write_config(dir.path(), plugins.path(), &format!("{AUTH}{SOURCES}"));
    let server = tributary_tests::TestServer::from_file(&config).await;
    let address = server.address.to_string();

    // No token, a wrong token: refused alike.
    for token in [None, Some("t-wrong")] {
        let err = page_all(&mut client(&address, token).await, &[])
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{token:?}: {err}");
    }
    // Health needs no token (probes and load balancers).
    let channel = Channel::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let health = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status, 1, "SERVING");

    // REST takes the same tokens (`Authorization: Bearer`); its probes need none.
    let http: std::net::SocketAddr = address.parse().unwrap();
    for token in [None, Some("t-wrong")] {
        let (status, body) = crate::rest::get(http, "/v1/packages", token).await;
        assert_eq!(status, 401, "{token:?}");
        assert_eq!(
            body,
            serde_json::json!({ "code": "UNAUTHENTICATED", "status": 401,
                "message": "a valid bearer token or client certificate is required" })
        );
    }
    let (status, body) =
        crate::rest::get(http, "/v1/packages?page_size=10", Some("t-reader")).await;
    assert_eq!(status, 200, "{body}");
    let names: Vec<&str> = body["availablePackageSummaries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "c", "e", "g"]);
    let (status, _) = crate::rest::get(http, "/v1/packages/two/b", Some("t-reader")).await;
    assert_eq!(status, 404, "a source the reader may not see");
    // Counts cover the caller's sources only: a hidden source is neither counted nor named.
    for (token, total, sources) in [
        ("t-reader", "4", json!([{ "value": "one", "count": "4" }])),
        (
            "t-admin",
            "7",
            json!([{ "value": "one", "count": "4" }, { "value": "two", "count": "3" }]),
        ),
    ] {
        let (status, body) = crate::rest::get(
            http,
            "/v1/packages?page_size=1&include_facets=true&sort=updated",
            Some(token),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["totalSize"], json!(total), "{token}");
        assert_eq!(body["facets"]["sources"], sources, "{token}");
        assert_eq!(body["facets"]["complete"], json!(true), "{token}");
    }
    assert_eq!(crate::rest::get(http, "/healthz", None).await.0, 200);
    assert_eq!(crate::rest::get(http, "/readyz", None).await.0, 200);
    // The web page's files load without a credential; the page then asks for one.
    assert_eq!(crate::rest::get(http, "/", None).await.0, 200);
    assert_eq!(crate::rest::get(http, "/assets/app.js", None).await.0, 200);
    assert_eq!(
        crate::rest::get(http, "/assets/other.js", None).await.0,
        401
    );

    let mut admin = client(&address, Some("t-admin")).await;
    let mut reader = client(&address, Some("t-reader")).await;
    assert_eq!(
        page_all(&mut admin, &[]).await.unwrap(),
        ["a@one/a", "b@two/b", "c@one/c", "d@two/d", "e@one/e", "f@two/f", "g@one/g"]
    );
    assert_eq!(
        page_all(&mut reader, &[]).await.unwrap(),
        ["a@one/a", "c@one/c", "e@one/e", "g@one/g"]
    );
    let err = page_all(&mut reader, &["two"]).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.message(),
        "filter.sources names unknown source \"two\" (known: one)"
    );

    // A source the reader may not see reads as one that does not exist.
    let hidden = reader
        .get_available_package_detail(detail("two", "b"))
        .await
        .unwrap_err();
    let missing = reader
        .get_available_package_detail(detail("nowhere", "b"))
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound);
    assert_eq!(
        hidden.message().replace("\"two\"", "\"nowhere\""),
        missing.message()
    );
    assert!(reader
        .get_available_package_detail(detail("one", "a"))
        .await
        .is_ok());
    assert!(admin
        .get_available_package_detail(detail("two", "b"))
        .await
        .is_ok());

    // A token issued to the admin's view does not widen the reader's.
    let first = admin
        .list_available_package_summaries(list_request(2, "", None))
        .await
        .unwrap()
        .into_inner();
    let err = reader
        .list_available_package_summaries(list_request(2, &first.next_page_token, None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");

    // ListPlugins: only the caller's sources; the plugin directory for admins only.
    let channel = Channel::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut plugins_client =
        PluginsServiceClient::with_interceptor(channel.clone(), bearer(Some("t-reader")));
    let listing = plugins_client
        .list_plugins(pb::ListPluginsRequest {})
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = listing.sources.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["one"]);
    assert!(listing.plugin_dir.is_empty());
    let mut admin_plugins =
        PluginsServiceClient::with_interceptor(channel, bearer(Some("t-admin")));
    let listing = admin_plugins
        .list_plugins(pb::ListPluginsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listing.sources.len(), 2);
    assert!(!listing.plugin_dir.is_empty());

    // Reload is an admin call.
    let err = plugins_client
        .reload(pb::ReloadRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    assert!(err.message().contains("\"reader\""), "{err}");
    let reloaded = admin_plugins
        .reload(pb::ReloadRequest {})
        .await
        .unwrap()
        .into_inner();
    // Nothing changed: the generation is kept.
    assert_eq!(reloaded.generation, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_authenticates_its_identity() {
    let plugins = PluginDir::with(&["testkit"]);
    let dir = tempfile::tempdir().unwrap();
    let server_ca = Authority::new("server CA");
    write_server_pair(dir.path(), &server_ca);
    let client_ca = Authority::new("client CA");
    std::fs::write(dir.path().join("clients.pem"), client_ca.pem()).unwrap();
    std::fs::write(dir.path().join("tokens"), "").unwrap();
    let config = write_config(
        dir.path(),
        plugins.path(),
        &format!(
            "[tls]\ncert_file = \"server.pem\"\nkey_file = \"server.key\"\nclient_ca_file = \"clients.pem\"\nclient_auth = \"optional\"\n{AUTH}{SOURCES}"
        ),
    );
    let server = tributary_tests::TestServer::from_file(&config).await;
    let address = server.address.to_string();
    let port = address.rsplit(':').next().unwrap();
    let connect = |identity: Option<(String, String)>| {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(server_ca.pem()))
            .domain_name("localhost");
        if let Some((cert, key)) = identity {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        let url = format!("https://localhost:{port}");
        async move {
            let channel = Channel::from_shared(url)
                .unwrap()
                .tls_config(tls)
                .unwrap()
                .connect()
                .await
                .unwrap();
            PackagesServiceClient::with_interceptor(channel, bearer(None))
        }
    };
    let ops = client_ca.issue(&["ops-client"], rcgen::ExtendedKeyUsagePurpose::ClientAuth);
    assert_eq!(
        page_all(&mut connect(Some(ops)).await, &[]).await.unwrap(),
        ["b@two/b", "d@two/d", "f@two/f"]
    );
    // Verified, but named by no identity; and no certificate at all.
    let stranger = client_ca.issue(&["someone"], rcgen::ExtendedKeyUsagePurpose::ClientAuth);
    for identity in [Some(stranger), None] {
        let err = page_all(&mut connect(identity).await, &[])
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
    }
    server.stop().await;
}

/// Nothing of a hidden source leaks to a caller that may not see it: its health entry answers as
/// an unknown name does (without a credential too), a failed reload's reason (which can quote its
/// configuration) is for admins, and a library shows its file name, not where it lives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hidden_sources_leak_through_neither_health_nor_list_plugins() {
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    let plugins = PluginDir::with(&["testkit"]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tokens"),
        format!(
            "{}{}",
            hash_line("t-reader", "reader"),
            hash_line("t-admin", "admin")
        ),
    )
    .unwrap();
    let config = write_config(dir.path(), plugins.path(), &format!("{AUTH}{SOURCES}"));
    let server = tributary_tests::TestServer::from_file(&config).await;
    let address = server.address.to_string();
    let channel = Channel::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();

    // Health: the overall entry and the services' entries are open; a source's entry answers only
    // a caller that may see it, and a hidden one reads exactly as an unknown one.
    let check = |token: Option<&'static str>, service: &'static str| {
        let channel = channel.clone();
        async move {
            HealthClient::with_interceptor(channel, bearer(token))
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .map(|r| r.into_inner().status)
                .map_err(|e| (e.code(), e.message().to_owned()))
        }
    };
    let watch = |token: Option<&'static str>, service: &'static str| {
        let channel = channel.clone();
        async move {
            HealthClient::with_interceptor(channel, bearer(token))
                .watch(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .map(|_| ())
                .map_err(|e| (e.code(), e.message().to_owned()))
        }
    };
    assert_eq!(check(None, "").await, Ok(1));
    assert_eq!(check(None, "tributary.v1.PackagesService").await, Ok(1));
    let unknown = check(None, "tributary.source/nowhere").await.unwrap_err();
    assert_eq!(unknown.0, Code::NotFound);
    for token in [None, Some("t-wrong"), Some("t-reader")] {
        assert_eq!(
            check(token, "tributary.source/two").await,
            Err(unknown.clone()),
            "{token:?}"
        );
        let watched = watch(token, "tributary.source/two").await.unwrap_err();
        assert_eq!(
            watched,
            watch(token, "tributary.source/nowhere").await.unwrap_err(),
            "{token:?}"
        );
    }
    assert_eq!(check(Some("t-reader"), "tributary.source/one").await, Ok(1));
    assert_eq!(check(Some("t-admin"), "tributary.source/two").await, Ok(1));
    assert!(watch(Some("t-admin"), "tributary.source/two").await.is_ok());

    // A reload that fails on a line of a source the reader may not see.
    std::fs::write(
        &config,
        format!(
            "plugin_dir = {:?}\nlisten = \"127.0.0.1:0\"\n{AUTH}{SOURCES}\n[[source]]\nname = \"three\"\nplugin = \"testkit\"\nconfig = {{ password = \"hunter2\"\n",
            plugins.path().display().to_string()
        ),
    )
    .unwrap();
    let mut admin =
        PluginsServiceClient::with_interceptor(channel.clone(), bearer(Some("t-admin")));
    let mut reader =
        PluginsServiceClient::with_interceptor(channel.clone(), bearer(Some("t-reader")));
    let failed = admin.reload(pb::ReloadRequest {}).await.unwrap_err();
    assert!(failed.message().contains("hunter2"), "{failed:?}");

    let admin_view = admin
        .list_plugins(pb::ListPluginsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        admin_view.last_reload_error.contains("hunter2"),
        "{}",
        admin_view.last_reload_error
    );
    assert!(admin_view.plugins[0].path.starts_with('/'));
    let reader_view = reader
        .list_plugins(pb::ListPluginsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        reader_view.last_reload_error,
        "the last reload failed (an admin identity sees why)"
    );
    assert!(reader_view.last_reload_unix > 0);
    let paths: Vec<&str> = reader_view
        .plugins
        .iter()
        .map(|p| p.path.as_str())
        .collect();
    assert_eq!(paths, ["libtestkit.so"]);
    assert!(reader_view.plugin_dir.is_empty());
    server.stop().await;
}
