//! `cassio scan` against a real node process: keys written with `cassio
//! set`, listed by prefix (every one once, with its value), `--limit` and
//! `--keys-only`.

// Test helpers outside #[test] functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used)]

mod process_common;

use process_common::{cli, start_node};
use std::collections::BTreeMap;

#[test]
fn cassio_scan_lists_keys_by_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<String> = [
        "--cluster",
        "scan-cli",
        "--data-dir",
        &dir.path().join("node1").display().to_string(),
        "--replication-factor",
        "1",
        "--listen",
        "127.0.0.1:0",
        "--client-addr",
        "127.0.0.1:0",
        "--resp-addr",
        "off",
        "--http-addr",
        "off",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (_node, ready) = start_node("node1", dir.path(), &args);
    let target = ready.client.to_string();
    for i in 0..1200 {
        let key = if i % 4 == 0 {
            format!("user:{i}")
        } else {
            format!("item:{i}")
        };
        let out = cli(&["set", &key, &format!("v{i}"), "--node", &target]);
        assert!(out.status.success(), "{out:?}");
    }
    // 300 keys under "user:", over the CLI's pages of 500 entries: the
    // scan walks every key and filters.
    let out = cli(&["scan", "user:", "--node", &target]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for line in text.lines() {
        let (k, v) = line.split_once('\t').unwrap();
        assert!(k.starts_with("user:"), "{line}");
        assert_eq!(v, format!("v{}", &k[5..]));
        assert!(seen.insert(k.into(), v.into()).is_none(), "{k} twice");
    }
    assert_eq!(seen.len(), 300);
    // Every key, in pages of 500.
    let out = cli(&["scan", "--keys-only", "--node", &target]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 1200);
    assert!(text.lines().all(|l| !l.contains('\t')));
    // --limit stops early.
    let out = cli(&["scan", "item:", "--limit", "7", "--node", &target]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 7);
}
