//! Scale-out: replicas of the real binary behind a client-side balancer that sends only to replicas
//! whose health says SERVING (what a Kubernetes Service does with readiness probes). Clients page the
//! whole catalog with each page sent to whichever replica the balancer picks, so tokens from one
//! replica are served by another; meanwhile every replica is restarted in turn with SIGTERM. Not one
//! request may fail and every listing must be exact.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
use tributary_proto::v1::packages_service_client::PackagesServiceClient;
use tributary_tests::{artifacts, keys, list_request, PluginDir};

use crate::binary::{terminate, write_config, SOURCES};

const ALL: [&str; 7] = [
    "a@one/a", "b@two/b", "c@one/c", "d@two/d", "e@one/e", "f@two/f", "g@one/g",
];

/// One replica as the balancer sees it.
struct Replica {
    client: PackagesServiceClient<Channel>,
    serving: Arc<AtomicBool>,
}

/// Starts a replica (`tributary serve` with a shutdown delay) and a task that follows its health.
async fn start(config: &std::path::Path) -> (std::process::Child, Replica) {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(&artifacts().binary)
        .args([
            "serve",
            "--shutdown-delay-ms",
            "1000",
            "--grace-ms",
            "5000",
            "--config",
        ])
        .arg(config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let address = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_owned();
    let channel = Channel::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let serving = Arc::new(AtomicBool::new(false));
    let mut watch = HealthClient::new(channel.clone())
        .watch(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    // The first status arrives at once.
    let first = watch.next().await.unwrap().unwrap();
    serving.store(first.status == 1, Ordering::SeqCst);
    let flag = serving.clone();
    tokio::spawn(async move {
        while let Some(Ok(status)) = watch.next().await {
            flag.store(status.status == 1, Ordering::SeqCst);
        }
        flag.store(false, Ordering::SeqCst);
    });
    (
        child,
        Replica {
            client: PackagesServiceClient::new(channel),
            serving,
        },
    )
}

#[tokio::test]
async fn a_rolling_restart_under_load_loses_no_request() {
    let plugins = PluginDir::with(&["testkit"]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), plugins.path(), SOURCES);
    let replicas: Arc<Mutex<Vec<Replica>>> = Arc::new(Mutex::new(Vec::new()));
    let mut children = Vec::new();
    for _ in 0..2 {
        let (child, replica) = start(&config).await;
        children.push(child);
        replicas.lock().unwrap().push(replica);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let (requests, listings, failures) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(Mutex::new(Vec::<String>::new())),
    );
    let turn = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (replicas, stop, requests, listings, failures, turn) = (
            replicas.clone(),
            stop.clone(),
            requests.clone(),
            listings.clone(),
            failures.clone(),
            turn.clone(),
        );
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let (mut seen, mut token) = (Vec::new(), String::new());
                loop {
                    // Round robin over the replicas that say SERVING.
                    let mut client = {
                        let replicas = replicas.lock().unwrap();
                        let ready: Vec<&Replica> = replicas
                            .iter()
                            .filter(|r| r.serving.load(Ordering::SeqCst))
                            .collect();
                        if ready.is_empty() {
                            None
                        } else {
                            let i = turn.fetch_add(1, Ordering::Relaxed) % ready.len();
                            Some(ready[i].client.clone())
                        }
                    };
                    let Some(client) = client.as_mut() else {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    };
                    requests.fetch_add(1, Ordering::Relaxed);
                    match client
                        .list_available_package_summaries(list_request(2, &token, None))
                        .await
                    {
                        Ok(page) => {
                            let page = page.into_inner();
                            seen.extend(keys(&page.available_package_summaries));
                            if page.next_page_token.is_empty() {
                                break;
                            }
                            token = page.next_page_token;
                        }
                        Err(e) => {
                            failures.lock().unwrap().push(e.to_string());
                            break;
                        }
                    }
                }
                if seen != ALL {
                    failures
                        .lock()
                        .unwrap()
                        .push(format!("inexact listing: {seen:?}"));
                }
                listings.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    // Restart each replica in turn: start the new one, then stop the old one.
    for old in 0..2 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let (child, replica) = start(&config).await;
        children.push(child);
        replicas.lock().unwrap().push(replica);
        let before = requests.load(Ordering::Relaxed);
        let stopped = std::mem::replace(
            &mut children[old],
            std::process::Command::new("true").spawn().unwrap(),
        );
        let status = tokio::task::spawn_blocking(move || terminate(stopped))
            .await
            .unwrap();
        assert!(status.success(), "replica {old} exited with {status}");
        assert!(
            requests.load(Ordering::Relaxed) > before,
            "no load while replica {old} stopped"
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.unwrap();
    }
    let failures = failures.lock().unwrap();
    println!(
        "rolling restart: {} requests, {} complete listings, {} failures",
        requests.load(Ordering::Relaxed),
        listings.load(Ordering::Relaxed),
        failures.len()
    );
    assert!(failures.is_empty(), "{failures:?}");
    assert!(listings.load(Ordering::Relaxed) > 0);
    for child in children.drain(2..) {
        assert!(terminate(child).success());
    }
}
