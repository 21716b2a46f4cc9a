//! The web console (`GET /` on the HTTP port) in headless Chromium against
//! three real `cassio` processes: the page shows every member Up, then,
//! once a SIGKILLed node is convicted, that node Down and the others Up;
//! a screenshot is kept in `target/test-artifacts/console.png`.
//!
//! Needs Debian's `chromium` (`apt-get install chromium`; `.ci/run`
//! installs it): without it the test fails and says so, rather than
//! passing without having looked at the page.

// Test helpers outside #[test] functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used)]

mod process_common;

use cassio_node::ClusterStatus;
use process_common::{http, start_three, wait_status, Scenario};
use std::collections::BTreeMap;
use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long one Chromium run may take before it is killed (it normally
/// takes a few seconds: start, load, 4 s of virtual time).
const BROWSER_TIMEOUT: Duration = Duration::from_secs(90);

/// How long a SIGKILLed node may take to be convicted (with the tests'
/// 250 ms gossip interval it takes a few seconds).
const CONVICTION_BOUND: Duration = Duration::from_secs(30);

/// The Chromium binary on `PATH`; fails the test if there is none.
fn chromium() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser"] {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "chromium is not installed, and the console test needs a headless browser: \
         install it with `apt-get install chromium` (.ci/run does)"
    );
}

/// SIGKILLs process group `pgid` (once the group is gone, a no-op).
///
/// The `--` is essential: without it procps-ng 4's `kill` misreads the
/// negative operand of `kill -KILL -19876` (it calls `kill(-1, SIGKILL)`,
/// i.e. kills every process the user may signal; seen under strace).
fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-s", "KILL", "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status();
}

/// Runs headless Chromium on `url` with `args` (its own profile in
/// `profile`), bounded by [`BROWSER_TIMEOUT`]; returns its stdout. Chromium
/// starts helper processes, so it runs in its own process group and the
/// whole group is killed if it hangs.
fn run_chromium(profile: &Path, url: &str, args: &[&str]) -> String {
    let log = profile.with_extension("log");
    let stderr = std::fs::File::create(&log).unwrap();
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=4000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr))
        .process_group(0)
        .spawn()
        .unwrap();
    let pgid = child.id();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + BROWSER_TIMEOUT;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() >= deadline {
            // The group: the browser and every helper it started.
            kill_group(pgid);
            let _ = child.wait();
            panic!(
                "chromium did not finish within {BROWSER_TIMEOUT:?} on {url}; its log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // Helpers that outlived the browser (none normally) go with it.
    kill_group(pgid);
    let out = reader.join().unwrap();
    assert!(
        status.success(),
        "chromium exited with {status} on {url}; its log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    out
}

/// The page's DOM after its scripts ran for 4 s of virtual time.
fn dump_dom(profile: &Path, url: &str) -> String {
    run_chromium(profile, url, &["--dump-dom"])
}

/// The value of `name="..."` inside one start tag.
fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let at = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    let rest = &tag[at..];
    Some(&rest[..rest.find('"')?])
}

/// Every start tag `<NAME ...>` of the dump.
fn tags<'a>(dom: &'a str, name: &str) -> Vec<&'a str> {
    let open = format!("<{name} ");
    dom.match_indices(&open)
        .filter_map(|(i, _)| dom[i..].find('>').map(|end| &dom[i..i + end]))
        .collect()
}

/// The members table as the page drew it: node id -> (up, state).
fn members(dom: &str) -> BTreeMap<u64, (bool, String)> {
    tags(dom, "tr")
        .into_iter()
        .filter_map(|t| {
            let id = attr(t, "data-node")?.parse().ok()?;
            let up = attr(t, "data-up")? == "true";
            Some((id, (up, attr(t, "data-state")?.to_owned())))
        })
        .collect()
}

/// Where test artifacts go: `$CARGO_TARGET_DIR/test-artifacts`, or the
/// workspace's `target/test-artifacts`.
fn artifacts_dir() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) if Path::new(&t).is_absolute() => PathBuf::from(t),
        // Cargo reads a relative target dir from where it was started,
        // normally the workspace.
        Some(t) => workspace.join(t),
        None => workspace.join("target"),
    };
    target.join("test-artifacts")
}

/// The `/status` of the node serving `http`, over HTTP.
fn http_status(addr: SocketAddr) -> Option<ClusterStatus> {
    let (code, body) = http(addr, "GET", "/status", "");
    if code != 200 {
        return None;
    }
    serde_json::from_str(&body).ok()
}

#[test]
fn the_console_shows_every_node_and_a_killed_one_down() {
    let browser = chromium();
    let sc = Scenario {
        name: "console",
        transport: "tcp",
        store: "native",
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut nodes = start_three(&sc, dir, |_, _| {});
    let ids: Vec<u64> = nodes.iter().map(|(_, r)| r.id).collect();
    let h1 = nodes[0].1.http.unwrap();
    let url = format!("http://{h1}/");

    // Some writes through node 1, so its request figures move.
    for i in 0..20 {
        let (code, body) = http(h1, "PUT", &format!("/kv/console-{i}?consistency=one"), "v");
        assert_eq!(code, 200, "{body}");
    }
    // The rates count complete seconds only.
    std::thread::sleep(Duration::from_millis(1200));
    let st = http_status(h1).unwrap();
    let set = st.requests.iter().find(|o| o.op == "set").unwrap();
    assert!(set.rate > 0.0 && set.p99_micros.is_some(), "{set:?}");
    assert_eq!(st.keyspaces.len(), 1, "{:?}", st.keyspaces);
    assert_eq!(st.keyspaces[0].name, "default");
    assert_eq!(st.keyspaces[0].replication_factor, 3);

    // All three Up and Normal, by their exact 64-bit ids.
    let dom = dump_dom(&dir.join("profile-1"), &url);
    assert!(
        dom.contains("data-loaded=\"true\""),
        "the page never drew a status:\n{dom}"
    );
    let seen = members(&dom);
    let want: BTreeMap<u64, (bool, String)> = ids
        .iter()
        .map(|&id| (id, (true, "Normal".to_string())))
        .collect();
    assert_eq!(seen, want, "members as drawn:\n{dom}");
    let arcs = tags(&dom, "path")
        .into_iter()
        .filter(|t| attr(t, "data-ring-node").is_some())
        .count();
    assert_eq!(arcs, 3, "one ring arc per node:\n{dom}");
    assert!(dom.contains("data-keyspace=\"default\""), "{dom}");
    let set_row = tags(&dom, "tr")
        .into_iter()
        .find(|t| attr(t, "data-op") == Some("set"))
        .unwrap_or_default();
    let rate: f64 = attr(set_row, "data-rate")
        .and_then(|r| r.parse().ok())
        .unwrap_or(0.0);
    assert!(rate > 0.0, "the set rate drawn: {set_row:?}");

    // SIGKILL node 3; node 1 convicts it within the bound.
    let killed = ids[2];
    let (mut p3, _) = nodes.pop().unwrap();
    let t_kill = Instant::now();
    p3.kill();
    let r1 = &nodes[0].1;
    wait_status("node 3 seen down", r1.client, CONVICTION_BOUND, |s| {
        s.members.iter().any(|m| m.id == killed && !m.up)
    });
    let dom = dump_dom(&dir.join("profile-2"), &url);
    let seen = members(&dom);
    let mut want = want;
    if let Some(m) = want.get_mut(&killed) {
        m.0 = false;
    }
    assert_eq!(seen.len(), 3, "members as drawn:\n{dom}");
    for (id, (up, _)) in &want {
        assert_eq!(
            seen.get(id).map(|m| m.0),
            Some(*up),
            "node {id} should be drawn {} :\n{dom}",
            if *up { "Up" } else { "Down" }
        );
    }
    assert!(
        t_kill.elapsed() < CONVICTION_BOUND + BROWSER_TIMEOUT,
        "the page took {:?} to show the kill",
        t_kill.elapsed()
    );

    // A screenshot of that state, kept as an artifact.
    let out_dir = artifacts_dir();
    std::fs::create_dir_all(&out_dir).unwrap();
    let png = out_dir.join("console.png");
    let _ = std::fs::remove_file(&png);
    run_chromium(
        &dir.join("profile-3"),
        &url,
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1280,900",
            "--hide-scrollbars",
        ],
    );
    let bytes = std::fs::read(&png).unwrap_or_default();
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG ({} bytes)",
        png.display(),
        bytes.len()
    );
    assert!(
        bytes.len() > 10_000,
        "a nearly empty screenshot: {} bytes",
        bytes.len()
    );
    // The IHDR chunk: width and height, big-endian, at bytes 16..24.
    let dim =
        |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    assert_eq!((dim(16), dim(20)), (1280, 900));
    eprintln!(
        "console screenshot: {} ({} bytes); browser {}",
        png.display(),
        bytes.len(),
        browser.display()
    );
    drop(nodes);
}
