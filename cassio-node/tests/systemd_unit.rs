//! The plain-Linux deployment as shipped: `deploy/systemd/cassio.service`
//! and the example `deploy/systemd/cassio.toml`, run for real.
//!
//! Three "machines" (10.0.0.1 to 10.0.0.3 in the example) each get their own
//! root directory in a temp dir (their `/etc/cassio` and `/var/lib/cassio`)
//! and run the real binary with exactly the unit's `ExecStart` command line,
//! its absolute paths moved under that root. Each machine's config is the
//! example as `docs/operations.md` says to adapt it (its own address in
//! place of 10.0.0.1), with every `10.0.0.N:PORT` and the loopback HTTP
//! port mapped to a free port on 127.0.0.1, and the certificates issued by
//! `cassio gen-certs`. The cluster must form over mutual TLS (the members
//! run as the ids their certificates name), every node must answer
//! `/health` and `/ready`, serve a write and a read, and stop cleanly on
//! SIGTERM as `systemctl stop` sends it.

// Test helpers outside #[test] functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used)]

mod process_common;

use process_common::{
    all_normal_and_up, cli, cli_as, http, reserved_ports, start_node, wait_status_as, Proc, Ready,
};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The user the test's users file holds.
const USER: &str = "app";
const PASSWORD: &str = "app-password";

const UNIT: &str = include_str!("../../deploy/systemd/cassio.service");
const EXAMPLE: &str = include_str!("../../deploy/systemd/cassio.toml");

/// The `[Service]` settings of a unit file, every value of repeated keys.
fn unit_settings(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut section = String::new();
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') {
            section = line.to_owned();
            continue;
        }
        assert!(
            !line.ends_with('\\'),
            "continuation lines are not parsed here: {line}"
        );
        let (k, v) = line.split_once('=').unwrap();
        if section == "[Service]" {
            out.entry(k.trim().to_owned())
                .or_default()
                .push(v.trim().to_owned());
        }
    }
    out
}

fn one<'a>(unit: &'a BTreeMap<String, Vec<String>>, key: &str) -> &'a str {
    let v = unit
        .get(key)
        .unwrap_or_else(|| panic!("the unit sets no {key}"));
    assert_eq!(v.len(), 1, "{key} is set more than once");
    &v[0]
}

/// `path` (absolute) moved under `root`.
fn rooted(root: &Path, path: &str) -> PathBuf {
    assert!(path.starts_with('/'), "{path} is not absolute");
    root.join(path.trim_start_matches('/'))
}

#[test]
fn the_unit_is_hardened_and_its_data_dir_writable() {
    let unit = unit_settings(UNIT);
    assert_eq!(one(&unit, "User"), "cassio");
    assert_eq!(one(&unit, "ProtectSystem"), "strict");
    assert_eq!(one(&unit, "NoNewPrivileges"), "yes");
    assert_eq!(one(&unit, "PrivateTmp"), "yes");
    assert_eq!(one(&unit, "Restart"), "on-failure");
    assert_eq!(one(&unit, "RestartPreventExitStatus"), "2");
    let nofile: u64 = one(&unit, "LimitNOFILE").parse().unwrap();
    assert!(nofile >= 65536, "LimitNOFILE={nofile}");
    assert_eq!(one(&unit, "CapabilityBoundingSet"), "");
    // Under ProtectSystem=strict the node may write only where the unit
    // says: the config's data_dir must be one of those places.
    let config: toml::Table = EXAMPLE.parse().unwrap();
    let data_dir = config["data_dir"].as_str().unwrap();
    let writable: Vec<&str> = unit["ReadWritePaths"]
        .iter()
        .flat_map(|v| v.split_whitespace())
        .collect();
    assert!(
        writable
            .iter()
            .any(|w| Path::new(data_dir).starts_with(w.trim_start_matches('-'))),
        "data_dir {data_dir} is not under ReadWritePaths {writable:?}"
    );
    let state = format!("/var/lib/{}", one(&unit, "StateDirectory"));
    assert_eq!(
        data_dir, state,
        "StateDirectory creates data_dir owned by cassio"
    );
}

/// One machine of the example cluster: its root and its config.
struct Machine {
    root: PathBuf,
    /// `cassio start`'s arguments, as the unit gives them.
    args: Vec<String>,
}

#[test]
fn three_machines_run_the_units_command_line_with_mutual_tls() {
    let unit = unit_settings(UNIT);
    let exec = one(&unit, "ExecStart");
    assert!(
        !exec.contains(['"', '\'', '$', '%']),
        "ExecStart is split on whitespace here: {exec}"
    );
    let argv: Vec<&str> = exec.split_whitespace().collect();
    assert_eq!(argv[0], "/usr/local/bin/cassio");
    assert_eq!(argv[1], "start");
    let config_at = argv
        .windows(2)
        .find(|w| w[0] == "--config")
        .map(|w| w[1])
        .expect("ExecStart names the config file");

    let tmp = tempfile::tempdir().unwrap();
    let certs = tmp.path().join("certs");
    let out = cli(&[
        "gen-certs",
        "--dir",
        certs.to_str().unwrap(),
        "--nodes",
        "3",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Every address of the example, on every machine, gets its own free
    // loopback port (the same mapping everywhere, so seeds point at the
    // right nodes).
    let mut spare = reserved_ports(64);
    let mut ports: BTreeMap<String, SocketAddr> = BTreeMap::new();
    let mut map = |a: &str| -> String {
        ports
            .entry(a.to_owned())
            .or_insert_with(|| {
                let port = spare.pop().expect("the example names under 64 addresses");
                SocketAddr::from(([127, 0, 0, 1], port))
            })
            .to_string()
    };
    let example: toml::Table = EXAMPLE.parse().unwrap();
    let creds = Some((USER, PASSWORD));
    let mut machines = Vec::new();
    for n in 1..=3u8 {
        let root = tmp.path().join(format!("machine{n}"));
        let mut config = example.clone();
        // docs/operations.md: machine N puts its own address in place of
        // 10.0.0.1 in listen, client_addr and resp_addr.
        for key in ["listen", "client_addr", "resp_addr"] {
            let v = config[key].as_str().unwrap();
            assert!(v.starts_with("10.0.0.1:"), "{key} = {v}");
            let own = v.replacen("10.0.0.1", &format!("10.0.0.{n}"), 1);
            config.insert(key.into(), own.into());
        }
        for (key, value) in config.iter_mut() {
            match value {
                toml::Value::String(s) if s.starts_with('/') => {
                    *s = rooted(&root, s).display().to_string();
                }
                toml::Value::String(s) if s.starts_with("10.0.0.") => *s = map(s),
                toml::Value::String(s) if key == "http_addr" => {
                    assert!(s.starts_with("127.0.0.1:"), "http_addr = {s}");
                    *s = map(&format!("{s}@{n}"));
                }
                toml::Value::Array(items) => {
                    for item in items {
                        let s = item.as_str().unwrap();
                        assert!(s.starts_with("10.0.0."), "{key}: {s}");
                        *item = map(s).into();
                    }
                }
                _ => {}
            }
        }
        let tls = rooted(&root, "/etc/cassio/tls");
        std::fs::create_dir_all(&tls).unwrap();
        for (from, to) in [
            ("ca.pem".to_string(), "tls_ca"),
            (format!("node{n}.pem"), "tls_cert"),
            (format!("node{n}.key"), "tls_key"),
        ] {
            let dest = PathBuf::from(config[to].as_str().unwrap());
            assert!(dest.starts_with(&tls), "{to} is not in /etc/cassio/tls");
            std::fs::copy(certs.join(from), dest).unwrap();
        }
        // The users file the example names: one read-write user.
        let users = PathBuf::from(config["users_file"].as_str().unwrap());
        assert!(users.starts_with(rooted(&root, "/etc/cassio")), "{users:?}");
        let hash = cassio_node::auth::hash_secret(PASSWORD).unwrap();
        std::fs::write(
            &users,
            format!("[[users]]\nname = \"{USER}\"\npassword_hash = \"{hash}\"\naccess = \"read-write\"\n"),
        )
        .unwrap();
        let config_file = rooted(&root, config_at);
        std::fs::create_dir_all(config_file.parent().unwrap()).unwrap();
        std::fs::write(&config_file, toml::to_string(&config).unwrap()).unwrap();
        let args = argv[2..]
            .iter()
            .map(|a| {
                if a.starts_with('/') {
                    rooted(&root, a).display().to_string()
                } else {
                    (*a).to_owned()
                }
            })
            .collect();
        machines.push(Machine { root, args });
    }

    // Machine 1 bootstraps (its own address is among the seeds); the
    // others join it.
    let mut nodes: Vec<(Proc, Ready)> = Vec::new();
    for (i, m) in machines.iter().enumerate() {
        nodes.push(start_node(
            &format!("machine{}", i + 1),
            tmp.path(),
            &m.args,
        ));
    }
    let ids: Vec<u64> = nodes.iter().map(|(_, r)| r.id).collect();
    assert_eq!(ids, [1, 2, 3], "each node runs as its certificate's id");
    for (p, r) in &nodes {
        assert!(r.http.is_some(), "{}: no HTTP port", p.name);
        wait_status_as(
            creds,
            "three Normal members",
            r.client,
            Duration::from_secs(60),
            |s| all_normal_and_up(s, 3),
        );
    }
    for (p, r) in &nodes {
        let http_addr = r.http.unwrap();
        let (code, body) = http(http_addr, "GET", "/health", "");
        assert_eq!(code, 200, "{}: /health {body}", p.name);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (code, body) = http(http_addr, "GET", "/ready", "");
            if code == 200 {
                assert!(body.contains("\"Normal\""), "{body}");
                break;
            }
            assert_eq!(code, 503, "{}: /ready {body}", p.name);
            assert!(Instant::now() < deadline, "{} never ready: {body}", p.name);
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    // The data landed where the unit lets the node write.
    for m in &machines {
        let data = rooted(&m.root, example["data_dir"].as_str().unwrap());
        assert!(data.join("node-id").is_file(), "{}", data.display());
    }

    // A write at ALL through machine 1, read back at ALL through machine 3.
    let c1 = nodes[0].1.client.to_string();
    let c3 = nodes[2].1.client.to_string();
    let out = cli_as(
        creds,
        &[
            "set",
            "deploy-key",
            "deploy-value",
            "--node",
            &c1,
            "--consistency",
            "all",
        ],
    );
    assert!(
        out.status.success(),
        "set: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli_as(
        creds,
        &["get", "deploy-key", "--node", &c3, "--consistency", "all"],
    );
    // Without the user's password the client port refuses.
    let anonymous = cli_as(None, &["get", "deploy-key", "--node", &c3]);
    assert!(
        !anonymous.status.success(),
        "a client port with users served an anonymous get"
    );
    assert!(
        out.status.success(),
        "get: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "deploy-value");

    // `systemctl stop` sends SIGTERM; a clean stop exits 0 (not a failure
    // Restart=on-failure would restart).
    for (mut p, _) in nodes.into_iter().rev() {
        let status = p.terminate_within(Duration::from_secs(30));
        assert!(
            status.success(),
            "{}: {status:?}; log:\n{}",
            p.name,
            p.log_text()
        );
    }
}
