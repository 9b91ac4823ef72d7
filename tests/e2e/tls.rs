//! TLS on the listener: the real binary with a `[tls]` section and certificates made by the test, a
//! real tonic client over TLS; client certificates (mTLS) when required; certificates reloaded when
//! their files change.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tributary_proto::v1::packages_service_client::PackagesServiceClient;
use tributary_tests::{keys, list, PluginDir};

use crate::binary::{write_config, SOURCES};

/// A certificate authority that issues the server's and clients' certificates.
pub(crate) struct Authority {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Authority {
    pub(crate) fn new(name: &str) -> Authority {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        Authority {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    pub(crate) fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate and key (PEM) for `names`, for a server or a client.
    pub(crate) fn issue(
        &self,
        names: &[&str],
        purpose: ExtendedKeyUsagePurpose,
    ) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names.clone()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, names[0].as_str());
        params.extended_key_usages = vec![purpose];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

pub(crate) fn write_server_pair(dir: &Path, authority: &Authority) {
    let (cert, key) = authority.issue(
        &["localhost", "127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    // Written to the side and renamed into place, as certificate managers do.
    std::fs::write(dir.join("server.pem.new"), cert).unwrap();
    std::fs::write(dir.join("server.key.new"), key).unwrap();
    std::fs::rename(dir.join("server.key.new"), dir.join("server.key")).unwrap();
    std::fs::rename(dir.join("server.pem.new"), dir.join("server.pem")).unwrap();
}

async fn connect(
    address: &str,
    ca_pem: &str,
    identity: Option<(String, String)>,
) -> Result<PackagesServiceClient<Channel>, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let port = address.rsplit(':').next().unwrap();
    let channel = Channel::from_shared(format!("https://localhost:{port}"))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await?;
    Ok(PackagesServiceClient::new(channel))
}

const ALL: [&str; 7] = [
    "a@one/a", "b@two/b", "c@one/c", "d@two/d", "e@one/e", "f@two/f", "g@one/g",
];

/// Pages the whole catalog in pages of 3.
async fn page_all(client: &mut PackagesServiceClient<Channel>) -> Vec<String> {
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = list(client, 3, &token, None).await;
        seen.extend(keys(&page.available_package_summaries));
        if page.next_page_token.is_empty() {
            return seen;
        }
        token = page.next_page_token;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_pages_the_catalog_and_a_plaintext_one_is_refused() {
    let plugins = PluginDir::with(&["testkit"]);
    let dir = tempfile::tempdir().unwrap();
    let authority = Authority::new("tributary test CA");
    write_server_pair(dir.path(), &authority);
    let config = write_config(
        dir.path(),
        plugins.path(),
        &format!("[tls]\ncert_file = \"server.pem\"\nkey_file = \"server.key\"\n{SOURCES}"),
    );
    let server = tributary_tests::TestServer::from_file(&config).await;
    let address = server.address.to_string();

    let mut client = connect(&address, &authority.pem(), None).await.unwrap();
    assert_eq!(page_all(&mut client).await, ALL);

    // REST over the same TLS port, HTTP/1.1 and HTTP/2 (ALPN), with curl trusting the test CA.
    std::fs::write(dir.path().join("ca.pem"), authority.pem()).unwrap();
    let port = address.rsplit(':').next().unwrap();
    for version in ["--http1.1", "--http2"] {
        let output = std::process::Command::new("curl")
            .args(["-s", "-S", version, "--cacert"])
            .arg(dir.path().join("ca.pem"))
            .arg(format!(
                "https://localhost:{port}/v1/packages?page_size=100"
            ))
            .args(["-w", "\n%{http_version} %{http_code}"])
            .output()
            .expect("run curl (.ci/run installs it)");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let (body, status) = stdout.rsplit_once('\n').unwrap_or_default();
        assert_eq!(
            status,
            if version == "--http2" {
                "2 200"
            } else {
                "1.1 200"
            },
            "{version}: {stdout} {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let page: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            page["availablePackageSummaries"].as_array().unwrap().len(),
            ALL.len()
        );
    }

    // A plaintext HTTP/2 client gets no answer from a TLS port.
    let mut plain = PackagesServiceClient::connect(format!("http://{address}"))
        .await
        .unwrap();
    assert!(plain
        .list_available_package_summaries(tributary_tests::list_request(3, "", None))
        .await
        .is_err());

    // A client that trusts another authority refuses the server.
    let stranger = Authority::new("another CA");
    let refused = match connect(&address, &stranger.pem(), None).await {
        Err(_) => true,
        Ok(mut c) => c
            .list_available_package_summaries(tributary_tests::list_request(3, "", None))
            .await
            .is_err(),
    };
    assert!(
        refused,
        "a client that does not trust the server's CA got an answer"
    );

    // A new certificate from a new authority, renamed into place: new connections get it.
    let renewed = Authority::new("renewed CA");
    write_server_pair(dir.path(), &renewed);
    let mut served_by_new = false;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        if let Ok(mut c) = connect(&address, &renewed.pem(), None).await {
            if c.list_available_package_summaries(tributary_tests::list_request(3, "", None))
                .await
                .is_ok()
            {
                served_by_new = true;
                break;
            }
        }
    }
    assert!(served_by_new, "the renewed certificate was never served");
    // The connection opened before the renewal keeps working.
    assert_eq!(page_all(&mut client).await, ALL);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_client_certificates_admit_only_clients_the_ca_signed() {
    let plugins = PluginDir::with(&["testkit"]);
    let dir = tempfile::tempdir().unwrap();
    let authority = Authority::new("tributary test CA");
    write_server_pair(dir.path(), &authority);
    let clients = Authority::new("client CA");
    std::fs::write(dir.path().join("clients.pem"), clients.pem()).unwrap();
    let config = write_config(
        dir.path(),
        plugins.path(),
        &format!(
            "[tls]\ncert_file = \"server.pem\"\nkey_file = \"server.key\"\nclient_ca_file = \"clients.pem\"\nclient_auth = \"required\"\n{SOURCES}"
        ),
    );
    let server = tributary_tests::TestServer::from_file(&config).await;
    let address = server.address.to_string();

    let identity = clients.issue(&["reader"], ExtendedKeyUsagePurpose::ClientAuth);
    let mut client = connect(&address, &authority.pem(), Some(identity))
        .await
        .unwrap();
    assert_eq!(page_all(&mut client).await, ALL);

    let ask = |client: Result<PackagesServiceClient<Channel>, tonic::transport::Error>| async move {
        match client {
            Err(_) => false,
            Ok(mut c) => c
                .list_available_package_summaries(tributary_tests::list_request(3, "", None))
                .await
                .is_ok(),
        }
    };
    assert!(
        !ask(connect(&address, &authority.pem(), None).await).await,
        "a client without a certificate was served"
    );
    let forged =
        Authority::new("client CA").issue(&["reader"], ExtendedKeyUsagePurpose::ClientAuth);
    assert!(
        !ask(connect(&address, &authority.pem(), Some(forged)).await).await,
        "a client whose certificate another CA signed was served"
    );
    server.stop().await;
}

#[test]
fn a_missing_certificate_file_is_a_config_error_naming_it() {
    let plugins = PluginDir::with(&["testkit"]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        plugins.path(),
        &format!("[tls]\ncert_file = \"nowhere.pem\"\nkey_file = \"server.key\"\n{SOURCES}"),
    );
    let output = std::process::Command::new(&tributary_tests::artifacts().binary)
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot read cert_file") && stderr.contains("nowhere.pem"),
        "{stderr}"
    );
}

/// The idle timeout counts requests on TLS connections too: a request longer than the timeout is not
/// cut, and a client whose connection was closed while idle reconnects on its next call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_a_long_request_outlives_the_idle_timeout() {
    let plugins = PluginDir::with(&["testkit"]);
    let dir = tempfile::tempdir().unwrap();
    let authority = Authority::new("tributary test CA");
    write_server_pair(dir.path(), &authority);
    let config = write_config(
        dir.path(),
        plugins.path(),
        "idle_timeout_ms = 400\n[tls]\ncert_file = \"server.pem\"\nkey_file = \"server.key\"\n\
         [[source]]\nname = \"slow\"\nplugin = \"testkit\"\n\
         config = { items = [{ name = \"a\" }], sleep_ms = 1200 }\n",
    );
    let server = tributary_tests::TestServer::from_file(&config).await;
    let address = server.address.to_string();
    let mut client = connect(&address, &authority.pem(), None).await.unwrap();
    let started = std::time::Instant::now();
    let page = list(&mut client, 10, "", None).await;
    assert_eq!(keys(&page.available_package_summaries), ["a@slow/a"]);
    assert!(started.elapsed() >= std::time::Duration::from_millis(1200));
    // Idle past the timeout: the server closes the connection; the channel reconnects.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let page = list(&mut client, 10, "", None).await;
    assert_eq!(keys(&page.available_package_summaries), ["a@slow/a"]);
    server.stop().await;
}
