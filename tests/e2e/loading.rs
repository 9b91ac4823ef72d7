//! Safe loading: only regular files in trusted folders are loaded, from a private copy, so that
//! changing the operator's file cannot touch the running code.

use std::os::unix::fs::PermissionsExt;

use tributary_runtime::{loader::RejectionKind, registry::Registry};
use tributary_tests::*;

/// What became of one file: the plugin's name, or the rejection's kind and message.
type Outcome = Result<String, (RejectionKind, String)>;

/// A FIFO named like a library is refused at once: `dlopen` on it would block start-up forever.
#[test]
fn a_fifo_named_like_a_library_is_refused_without_blocking() {
    let plugins = PluginDir::with(&["testkit"]);
    let fifo = plugins.path().join("libx.so");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let (tx, rx) = std::sync::mpsc::channel();
    let path = plugins.path().to_path_buf();
    std::thread::spawn(move || {
        let registry = Registry::load(&config(&path, &path, vec![])).unwrap();
        let outcomes: Vec<(String, Outcome)> = registry
            .files
            .iter()
            .map(|f| {
                (
                    f.path.file_name().unwrap().to_string_lossy().into_owned(),
                    f.outcome
                        .as_ref()
                        .map(|p| p.meta.name.clone())
                        .map_err(|r| (r.kind, r.to_string())),
                )
            })
            .collect();
        tx.send(outcomes).unwrap();
    });
    let outcomes = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("loading returned (a FIFO must not block it)");
    assert_eq!(outcomes.len(), 2);
    assert_eq!(
        outcomes[1],
        (
            "libx.so".to_owned(),
            Err((
                RejectionKind::Unreadable,
                format!(
                    "{} is not a regular file (a FIFO, device, socket or directory is never loaded)",
                    std::fs::canonicalize(&fifo).unwrap().display()
                )
            ))
        )
    );
    assert_eq!(
        outcomes[0],
        ("libtestkit.so".to_owned(), Ok("testkit".to_owned()))
    );
}

/// A symlink in a safe plugin directory to a root-owned file in a folder anyone can write is refused:
/// whoever can write that folder can swap the file.
#[test]
fn a_symlink_to_a_file_in_a_world_writable_folder_is_refused() {
    let plugins = PluginDir::with(&[]);
    let open = tempfile::Builder::new().tempdir_in(private_root()).unwrap();
    std::fs::set_permissions(open.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let target = open.path().join("libtestkit.so");
    std::fs::copy(&artifacts().libraries["tributary_plugin_testkit"], &target).unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::os::unix::fs::symlink(&target, plugins.path().join("libtestkit.so")).unwrap();
    let registry = Registry::load(&config(plugins.path(), plugins.path(), vec![])).unwrap();
    let reason = registry.files[0].outcome.as_ref().err().expect("refused");
    assert_eq!(reason.kind, RejectionKind::Insecure);
    let reason = reason.to_string();
    assert!(
        reason.starts_with("folder above plugin file ")
            && reason.contains("is writable by group and others (mode 0777)"),
        "{reason}"
    );
}

/// `cp` over a loaded library (a rewrite of the same inode), truncation and deletion under 16 clients
/// paging: the server keeps serving from its private copy, with no error.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cp_truncate_and_delete_under_paging_clients_do_not_crash() {
    let plugins = PluginDir::with(&["testkit"]);
    let sources = vec![source(
        "t",
        "testkit",
        serde_json::json!({ "generate": 400 }),
    )];
    let server = TestServer::start(config(plugins.path(), plugins.path(), sources)).await;
    let listing = server.listing().await;
    assert_eq!(listing.plugins[0].sha256.len(), 64, "{listing:?}");
    let file = plugins.path().join("libtestkit.so");
    let other = artifacts().libraries["tributary_plugin_catalog"].clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..16 {
        let mut client = server.packages().await;
        let stop = stop.clone();
        clients.push(tokio::spawn(async move {
            let mut pages = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut token = String::new();
                let mut items = 0;
                loop {
                    let page = list(&mut client, 37, &token, None).await;
                    assert!(page.failed_sources.is_empty(), "{:?}", page.failed_sources);
                    items += page.available_package_summaries.len();
                    pages += 1;
                    if page.next_page_token.is_empty() {
                        break;
                    }
                    token = page.next_page_token;
                }
                assert_eq!(items, 400);
            }
            pages
        }));
    }
    let pause = || tokio::time::sleep(std::time::Duration::from_millis(300));
    pause().await;
    // What `cp` does: open the existing file, truncate it, write new bytes into the same inode.
    std::fs::write(&file, std::fs::read(&other).unwrap()).unwrap();
    pause().await;
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&file)
        .unwrap();
    pause().await;
    std::fs::remove_file(&file).unwrap();
    pause().await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut pages = 0;
    for c in clients {
        pages += c.await.expect("client finished without error");
    }
    assert!(pages > 16, "{pages} pages");
    server.stop().await;
}
