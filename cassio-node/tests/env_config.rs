//! `cassio start` settings from environment variables (`CASSIO_<KEY>`), as
//! the container image and the Kubernetes pods give them: a variable
//! overrides the file named by `CASSIO_CONFIG`, a flag overrides the
//! variable, and a bad value in a variable is refused like a bad flag.

// Test helpers outside #[test] functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used)]

mod process_common;

use process_common::{parse_ready, reserved_ports, Proc, Ready, BIN};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Three free loopback addresses (see `reserved_ports` for why not port 0).
fn free_addrs() -> (String, String, String) {
    let p = reserved_ports(3);
    let a = |i: usize| format!("127.0.0.1:{}", p[i]);
    (a(0), a(1), a(2))
}

/// `cassio start ARGS` with only `env` among the `CASSIO_*` variables.
fn command(dir: &Path, env: &[(&str, String)], args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("CASSIO_") {
            c.env_remove(k);
        }
    }
    c.arg("start")
        .args(args)
        .env("CASSIO_DATA_DIR", dir.join("data").display().to_string())
        .env("CASSIO_LISTEN", "127.0.0.1:0")
        .env("CASSIO_RESP_ADDR", "off")
        .env("CASSIO_HTTP_ADDR", "off")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null());
    c
}

/// Starts it and waits (bounded) for its ready line.
fn start(dir: &Path, env: &[(&str, String)], args: &[&str]) -> (Proc, Ready) {
    let log = dir.join("node.log");
    let mut child = command(dir, env, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let proc = Proc {
        name: "node".into(),
        child,
        log,
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(r) = parse_ready(&line) {
                let _ = tx.send(r);
                return;
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(r) => (proc, r),
        Err(_) => panic!("never ready; log:\n{}", proc.log_text()),
    }
}

#[test]
fn variables_override_the_file_and_flags_override_variables() {
    let dir = tempfile::tempdir().unwrap();
    let (file_addr, env_addr, flag_addr) = free_addrs();
    let config = dir.path().join("cassio.toml");
    std::fs::write(&config, format!("client_addr = \"{file_addr}\"\n")).unwrap();
    let from_file = [("CASSIO_CONFIG", config.display().to_string())];

    let (mut p, r) = start(dir.path(), &from_file, &[]);
    assert_eq!(r.client.to_string(), file_addr);
    assert!(p.terminate().success());

    let with_var = [
        from_file[0].clone(),
        ("CASSIO_CLIENT_ADDR", env_addr.clone()),
    ];
    let (mut p, r) = start(dir.path(), &with_var, &[]);
    assert_eq!(
        r.client.to_string(),
        env_addr,
        "the variable beats the file"
    );
    assert!(p.terminate().success());

    let (mut p, r) = start(dir.path(), &with_var, &["--client-addr", &flag_addr]);
    assert_eq!(
        r.client.to_string(),
        flag_addr,
        "the flag beats the variable"
    );
    assert!(p.terminate().success());
}

#[test]
fn bad_values_in_variables_are_refused_with_their_setting() {
    let dir = tempfile::tempdir().unwrap();
    for (var, value, shown) in [
        (
            "CASSIO_REPLICATION_FACTOR",
            "0",
            "replication_factor = \"0\"",
        ),
        // clap parses flag variables: true or false only.
        (
            "CASSIO_LEAVE_ON_EXIT",
            "maybe",
            "'maybe' for '--leave-on-exit'",
        ),
        ("CASSIO_CONFIG", "/nonexistent/cassio.toml", "cannot read"),
    ] {
        let out = command(dir.path(), &[(var, value.to_owned())], &[])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{var}={value}: {err}");
        assert!(err.contains(shown), "{var}={value}: {err}");
    }
    // Off loopback without TLS, from variables alone: the same refusal as
    // with flags.
    let out = command(
        dir.path(),
        &[("CASSIO_LISTEN", "0.0.0.0:0".to_owned())],
        &[],
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("needs TLS"), "{err}");
}
