//! Node identity under mutual TLS: certificates name node ids, a node runs
//! as the id its certificate names, and a peer speaks only for itself.

// Helpers outside #[test] fns unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use cassio_core::NodeId;
use cassio_node::builder::{NodeBuilder, RunningNode};
use cassio_node::config::{RawSettings, Settings};
use cassio_node::launch::{effective_node_id, launch};
use cassio_store_native::NativeStore;
use cassio_transport_tcp::tls::{self, DevCa, TlsConfig};
use cassio_transport_tcp::{TcpConfig, TcpTransport};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

const CLUSTER: &str = "identity";

fn cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_cassio"))
        .args(args)
        .output()
        .unwrap()
}

/// A node with id `id` whose transport presents `cert`.
async fn node(id: u64, cert: &TlsConfig, dir: &Path, seed: Option<&RunningNode>) -> RunningNode {
    let mut config = TcpConfig::mutual_tls(CLUSTER, cert.clone());
    config.peer.connect_timeout = Duration::from_secs(1);
    config.peer.backoff_max = Duration::from_millis(300);
    let transport = TcpTransport::bind("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap();
    let store = NativeStore::open(dir.join(format!("store-{id}")), Default::default()).unwrap();
    NodeBuilder::new(id, CLUSTER)
        .transport(Arc::new(transport))
        .store(Arc::new(store))
        .replication_factor(1)
        .gossip_interval(Duration::from_millis(100))
        .seeds(seed.map(|s| s.local_addr()))
        .bootstrap(seed.is_some())
        .start()
        .await
        .unwrap()
}

async fn members(n: &RunningNode) -> Vec<u64> {
    let mut ids: Vec<u64> = n
        .handle()
        .status()
        .await
        .unwrap()
        .members
        .iter()
        .map(|m| m.id)
        .collect();
    ids.sort_unstable();
    ids
}

/// Node 3 holding node 2's certificate gossips as node 3 to node 1: every
/// frame is refused (the certificate names 2), so node 1 never learns of
/// node 3, while the real node 2 joins normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_nodes_certificate_cannot_speak_as_itself() {
    let dir = tempfile::tempdir().unwrap();
    let ca = tls::generate_dev_ca(&dir.path().join("certs"), CLUSTER).unwrap();
    let cert = |id| tls::generate_node_cert(&ca, &dir.path().join("certs"), NodeId(id), &[]);
    let (c1, c2) = (cert(1).unwrap(), cert(2).unwrap());

    let n1 = node(1, &c1, dir.path(), None).await;
    let n2 = node(2, &c2, dir.path(), Some(&n1)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while members(&n1).await != vec![1, 2] {
        assert!(Instant::now() < deadline, "node 2 never joined node 1");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let impostor = node(3, &c2, dir.path(), Some(&n1)).await;
    // Twenty gossip rounds: an accepted frame from node 3 would have made
    // it a member of node 1's view after the first.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(members(&n1).await, vec![1, 2], "node 1 listened to node 3");
    assert_eq!(members(&n2).await, vec![1, 2], "node 2 listened to node 3");
    assert_eq!(members(&impostor).await, vec![3], "node 3 heard back");

    for n in [impostor, n2, n1] {
        n.shutdown(false).await.unwrap();
    }
}

fn settings(dir: &Path, cert: &TlsConfig, node_id: Option<u64>) -> Settings {
    let mut raw = RawSettings::default();
    raw.set("cluster", CLUSTER);
    raw.set("listen", "127.0.0.1:0");
    raw.set("client_addr", "127.0.0.1:0");
    raw.set("resp_addr", "off");
    raw.set("http_addr", "off");
    raw.set("data_dir", dir.join("data").display().to_string());
    raw.set("tls_ca", cert.ca_cert.display().to_string());
    raw.set("tls_cert", cert.cert.display().to_string());
    raw.set("tls_key", cert.key.display().to_string());
    if let Some(id) = node_id {
        raw.set("node_id", id.to_string());
    }
    Settings::from_raw(&raw).unwrap()
}

/// `cassio gen-certs --node-ids` issues certificates naming those ids and
/// reuses the CA it finds; `--nodes N` means ids 1..=N.
#[test]
fn gen_certs_issues_certificates_naming_node_ids() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let certs_arg = certs.display().to_string();
    let out = cli(&["gen-certs", "--dir", &certs_arg, "--node-ids", "4,7"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("node 7: --tls-ca"), "{stdout}");
    for id in [4, 7] {
        let cfg = TlsConfig::from_dev_dir(&certs, NodeId(id));
        assert_eq!(cfg.node_id().unwrap(), NodeId(id));
    }
    let ca_before = std::fs::read(certs.join(tls::CA_KEY_FILE)).unwrap();
    let out = cli(&["gen-certs", "--dir", &certs_arg, "--nodes", "2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("existing, reused"));
    assert_eq!(
        std::fs::read(certs.join(tls::CA_KEY_FILE)).unwrap(),
        ca_before
    );
    for id in [1, 2] {
        let cfg = TlsConfig::from_dev_dir(&certs, NodeId(id));
        assert_eq!(cfg.node_id().unwrap(), NodeId(id));
    }
    // An existing certificate is not overwritten; bad ids are refused.
    for bad in [
        &["--node-ids", "7"][..],
        &["--node-ids", "0"],
        &["--node-ids", "x"],
    ] {
        let mut args = vec!["gen-certs", "--dir", &certs_arg];
        args.extend_from_slice(bad);
        let out = cli(&args);
        assert!(!out.status.success(), "{bad:?} was accepted");
    }
}

/// Under TLS a node runs as the id its certificate names: taken from the
/// certificate when none is configured, refused when another is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_runs_as_the_id_its_certificate_names() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    tls::generate_dev_ca(&certs, CLUSTER).unwrap();
    let ca = DevCa::existing(&certs).unwrap();
    let c4 = tls::generate_node_cert(&ca, &certs, NodeId(4), &[]).unwrap();

    assert_eq!(
        effective_node_id(&settings(dir.path(), &c4, None)).unwrap(),
        Some(4)
    );
    assert_eq!(
        effective_node_id(&settings(dir.path(), &c4, Some(4))).unwrap(),
        Some(4)
    );
    let e = effective_node_id(&settings(dir.path(), &c4, Some(5))).unwrap_err();
    assert_eq!(e.field, "node_id");
    assert!(e.reason.contains("names node 4"), "{}", e.reason);
    let anon = tls::generate_cert_without_node_id(&ca, &certs, "anon", &[]).unwrap();
    let e = effective_node_id(&settings(dir.path(), &anon, None)).unwrap_err();
    assert_eq!(e.field, "tls_cert");

    let launched = launch(&settings(dir.path(), &c4, None)).await.unwrap();
    assert_eq!(launched.node_id, 4);
    launched.shutdown(false).await.unwrap();
    // The data dir now belongs to node 4: another node's certificate is refused.
    let c5 = tls::generate_node_cert(&ca, &certs, NodeId(5), &[]).unwrap();
    let e = launch(&settings(dir.path(), &c5, None)).await.unwrap_err();
    assert!(e.is_config(), "{e}");
}
