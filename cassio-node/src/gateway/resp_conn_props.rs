//! The RESP connection task under arbitrary input (issue 14): any sequence
//! of well-formed command frames and arbitrary bytes, written in arbitrary
//! pieces to `connection` over an in-memory duplex stream with a fake node
//! (with and without users, so `NOAUTH`, `AUTH u p` and `HELLO 3 AUTH` run),
//! never panics it; it ends by itself once the input ends, and what it
//! wrote is a sequence of well-formed replies that answers at least every
//! command before the first garbage (all of them when there is none, up to
//! a `QUIT`); a protocol error is answered as such and is its last reply.

use super::tests::{fake_handle, one_reply};
use super::{connection, ConnCtx, COMMANDS};
use crate::auth::{hash_secret, Access, Authenticator, User};
use crate::gateway::limits::{BufferBudget, GatewayLimits};
use bytes::Bytes;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// A node with one user, `u` with password `p` (hashed once: argon2 is
/// deliberately slow).
fn users() -> Arc<Authenticator> {
    static AUTH: OnceLock<Arc<Authenticator>> = OnceLock::new();
    AUTH.get_or_init(|| {
        Authenticator::new(vec![User {
            name: "u".into(),
            password_hash: Some(hash_secret("p").unwrap_or_default()),
            token_hash: None,
            access: Access::ReadWrite,
            keyspaces: BTreeMap::new(),
            admin: false,
        }])
    })
    .clone()
}
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Arguments the handlers branch on, so frames reach their arms.
const WORDS: &[&str] = &[
    "", "0", "1", "3", "2", "k", "busy", "SETNAME", "GETNAME", "ID", "INFO", "LIST", "SETINFO",
    "LIB-NAME", "NO-EVICT", "ON", "GET", "SET", "DOCS", "COUNT", "save", "*", "EX", "AUTH",
    "default", "quorum", "\r\n", "$-1", "*1", "u", "p",
];

#[derive(Clone, Debug)]
enum Chunk {
    /// A multibulk command frame.
    Frame(Vec<Bytes>),
    /// Anything at all.
    Garbage(Vec<u8>),
}

fn frame() -> impl Strategy<Value = Vec<Bytes>> {
    let mut names: Vec<String> = COMMANDS.iter().map(|c| c.0.to_ascii_uppercase()).collect();
    names.extend(["NOSUCH", "HGET", "SUBSCRIBE", "MULTI"].map(String::from));
    let arg = prop_oneof![
        prop::sample::select(WORDS).prop_map(|w| Bytes::copy_from_slice(w.as_bytes())),
        prop::collection::vec(any::<u8>(), 0..24).prop_map(Bytes::from),
    ];
    (
        prop::sample::select(names),
        prop::collection::vec(arg, 0..4),
    )
        .prop_map(|(name, args)| {
            let mut f = vec![Bytes::from(name)];
            f.extend(args);
            f
        })
}

fn chunk() -> impl Strategy<Value = Chunk> {
    prop_oneof![
        4 => frame().prop_map(Chunk::Frame),
        1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Chunk::Garbage),
        // Garbage that looks like the protocol: headers, lengths, CRLFs.
        1 => prop::collection::vec(
            prop::sample::select(vec![&b"*"[..], b"$", b"-1", b"3", b"\r\n", b"\n", b"99999999999", b"PING", b" "]),
            0..12,
        )
        .prop_map(|parts| Chunk::Garbage(parts.concat())),
    ]
}

fn encode(f: &[Bytes], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("*{}\r\n", f.len()).as_bytes());
    for a in f {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// Commands that must be answered: the frames before the first garbage,
/// up to and including the first `QUIT`; and whether garbage came at all.
fn must_answer(chunks: &[Chunk]) -> (usize, bool) {
    let mut n = 0;
    for c in chunks {
        match c {
            Chunk::Garbage(_) => return (n, true),
            Chunk::Frame(f) => {
                n += 1;
                if f[0].eq_ignore_ascii_case(b"QUIT") {
                    return (n, false);
                }
            }
        }
    }
    (n, false)
}

/// Feeds `input` in pieces cut at `cuts` and returns what the connection
/// wrote and how its task ended.
async fn drive(
    input: Vec<u8>,
    cuts: Vec<usize>,
    auth: Option<Arc<Authenticator>>,
) -> (Vec<u8>, Result<(), String>) {
    let (client, server) = tokio::io::duplex(256 * 1024);
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let limits = GatewayLimits::default();
    let budget = BufferBudget::new(limits.max_total_query_buffer_bytes);
    let ctx = ConnCtx {
        port: 6380,
        limits,
        auth,
        peer: std::net::SocketAddr::from(([127, 0, 0, 1], 1)),
    };
    let task = tokio::spawn(connection(
        server,
        fake_handle(),
        stop_rx,
        ctx,
        budget.share(),
    ));
    let (mut rd, mut wr) = tokio::io::split(client);
    let writer = async move {
        let mut at = 0;
        let mut cuts = cuts;
        cuts.sort_unstable();
        for c in cuts.into_iter().chain([input.len()]) {
            let c = c.min(input.len());
            if c > at {
                // The connection may close first (QUIT, a protocol error).
                if wr.write_all(&input[at..c]).await.is_err() {
                    return;
                }
                at = c;
            }
        }
        let _ = wr.shutdown().await;
    };
    let reader = async move {
        let mut out = Vec::new();
        let _ = rd.read_to_end(&mut out).await;
        out
    };
    let both = async { tokio::join!(writer, reader).1 };
    let out = match tokio::time::timeout(Duration::from_secs(20), both).await {
        Ok(out) => out,
        Err(_) => {
            return (
                Vec::new(),
                Err("the connection did not end within 20 s".into()),
            )
        }
    };
    let ended = match tokio::time::timeout(Duration::from_secs(20), task).await {
        Err(_) => Err("the connection task did not finish".into()),
        Ok(Err(e)) if e.is_panic() => Err(format!("the connection task panicked: {e}")),
        Ok(Err(e)) => Err(format!("the connection task failed: {e}")),
        // An I/O error on the duplex (the test closed its side) is an end.
        Ok(Ok(_)) => Ok(()),
    };
    (out, ended)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_frames_and_bytes_never_panic_the_connection(
        chunks in prop::collection::vec(chunk(), 0..24),
        cuts in prop::collection::vec(0usize..4096, 0..8),
        with_users in any::<bool>(),
    ) {
        let mut input = Vec::new();
        for c in &chunks {
            match c {
                Chunk::Frame(f) => encode(f, &mut input),
                Chunk::Garbage(g) => input.extend_from_slice(g),
            }
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"));
        let auth = with_users.then(users);
        let (out, ended) = rt.block_on(drive(input, cuts, auth));
        prop_assert_eq!(ended, Ok(()));
        let mut rest = &out[..];
        let mut replies = 0;
        while !rest.is_empty() {
            let after = one_reply(rest);
            prop_assert!(after.is_ok(), "malformed output at reply {}: {:?} in {:?}", replies, after, String::from_utf8_lossy(&out));
            let after = after.unwrap_or_default();
            rest = after;
            replies += 1;
        }
        let (answered, garbage) = must_answer(&chunks);
        if garbage {
            prop_assert!(replies >= answered, "{} replies for {} commands before garbage: {:?}", replies, answered, String::from_utf8_lossy(&out));
        } else {
            prop_assert_eq!(replies, answered, "{:?}", String::from_utf8_lossy(&out));
        }
        // A protocol error is said, and is the connection's last word.
        let mut rest = &out[..];
        while let Ok(after) = one_reply(rest) {
            let reply = &rest[..rest.len() - after.len()];
            if reply.starts_with(b"-ERR Protocol error") {
                prop_assert!(after.is_empty(), "replies after a protocol error: {:?}", String::from_utf8_lossy(&out));
            }
            if after.is_empty() {
                break;
            }
            rest = after;
        }
    }
}
