//! The RESP commands about the connection and the server rather than the
//! data, answered well enough that client libraries and GUIs connect:
//! `CLIENT SETNAME|GETNAME|ID|INFO|LIST|SETINFO|NO-EVICT|NO-TOUCH`,
//! `CONFIG GET pattern...`, `COMMAND DOCS [name...]`, `SELECT`, `RESET`
//! and the static `INFO` sections. A child of `resp`, so it works on the
//! connection's state directly.
//!
//! What Cassio cannot mean is said, not faked: `CLIENT LIST` lists only the
//! calling connection (the gateway keeps no registry of its connections),
//! `CONFIG SET` is refused (the node is configured by its file), `SELECT n`
//! past 0 points at `CASSIO.KEYSPACE`.

use super::{all_commands, err, name_of, wrong_arity, Conn, Plan, Proto, Reply};
use bytes::Bytes;
use std::sync::Arc;

/// `CLIENT` and its subcommands.
pub(super) fn client(args: &[Bytes], conn: &mut Conn) -> Plan {
    let Some(sub) = args.get(1) else {
        return wrong_arity("client");
    };
    let sub = name_of(sub);
    let argc = args.len();
    match (sub.as_str(), argc) {
        ("SETNAME", 3) => {
            let name = &args[2];
            if let Some(e) = super::client_name_error(name) {
                return err(e);
            }
            conn.name = (!name.is_empty()).then(|| name.clone());
            Plan::Ready(Reply::Simple("OK"))
        }
        ("GETNAME", 2) => Plan::Ready(Reply::Bulk(conn.name.clone())),
        ("ID", 2) => Plan::Ready(Reply::Int(i64::try_from(conn.id).unwrap_or(i64::MAX))),
        ("INFO", 2) => Plan::Ready(Reply::Text(Bytes::from(format!(
            "{}\n",
            info_line(conn)
        )))),
        // Only this connection: the gateway keeps no list of the others.
        ("LIST", _) => Plan::Ready(Reply::Text(Bytes::from(format!(
            "{}\n",
            info_line(conn)
        )))),
        // Client libraries announce themselves (LIB-NAME, LIB-VER); kept
        // for CLIENT INFO.
        ("SETINFO", 4) => {
            let value = String::from_utf8_lossy(&args[3]);
            if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return err("ERR CLIENT SETINFO values cannot contain spaces, newlines or special characters.");
            }
            let value: Arc<str> = Arc::from(value.chars().take(128).collect::<String>());
            match name_of(&args[2]).as_str() {
                "LIB-NAME" => conn.lib_name = Some(value),
                "LIB-VER" => conn.lib_ver = Some(value),
                other => {
                    return err(format!(
                        "ERR Unrecognized option '{}'",
                        other.chars().take(64).collect::<String>()
                    ))
                }
            }
            Plan::Ready(Reply::Simple("OK"))
        }
        // Cassio evicts nothing and keeps no access times: both switches
        // are accepted and change nothing.
        ("NO-EVICT" | "NO-TOUCH", 3) => match name_of(&args[2]).as_str() {
            "ON" | "OFF" => Plan::Ready(Reply::Simple("OK")),
            _ => err("ERR syntax error"),
        },
        ("SETNAME" | "GETNAME" | "ID" | "INFO" | "SETINFO" | "NO-EVICT" | "NO-TOUCH", _) => {
            wrong_arity(&format!("client|{sub}"))
        }
        (other, _) => err(format!(
            "ERR CLIENT {} is not supported by Cassio (try SETNAME, GETNAME, ID, INFO, LIST, SETINFO, NO-EVICT, NO-TOUCH)",
            other.chars().take(64).collect::<String>()
        )),
    }
}

/// This connection in `CLIENT INFO`'s format.
fn info_line(conn: &Conn) -> String {
    let name = conn
        .name
        .as_ref()
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .unwrap_or_default();
    let user = conn.user.as_ref().map_or("default", |u| u.name.as_str());
    let proto = match conn.proto {
        Proto::Resp2 => 2,
        Proto::Resp3 => 3,
    };
    format!(
        "id={} addr={} name={} db=0 user={} resp={} lib-name={} lib-ver={} cassio-keyspace={}",
        conn.id,
        conn.peer,
        name,
        user,
        proto,
        conn.lib_name.as_deref().unwrap_or(""),
        conn.lib_ver.as_deref().unwrap_or(""),
        conn.keyspace,
    )
}

/// Parameters `CONFIG GET` answers: what clients and GUIs ask on connect.
/// Cassio persists through its own commit log, not RDB snapshots or an
/// AOF, and has one database per keyspace.
const CONFIG: &[(&str, &str)] = &[
    ("save", ""),
    ("appendonly", "no"),
    ("databases", "1"),
    ("maxmemory", "0"),
    ("maxmemory-policy", "noeviction"),
    ("cluster-enabled", "no"),
    ("timeout", "0"),
];

/// `CONFIG GET pattern...` (glob patterns, as Redis); `CONFIG SET` and the
/// rest are refused with an error naming them.
pub(super) fn config(args: &[Bytes]) -> Plan {
    let Some(sub) = args.get(1) else {
        return wrong_arity("config");
    };
    let sub = name_of(sub);
    match sub.as_str() {
        "GET" => {}
        "SET" => return err("ERR CONFIG SET is not supported by Cassio: a node is configured by its config file and flags (docs/operations.md)"),
        other => {
            return err(format!(
                "ERR CONFIG {} is not supported by Cassio (try GET)",
                other.chars().take(64).collect::<String>()
            ))
        }
    }
    if args.len() < 3 {
        return wrong_arity("config|get");
    }
    let mut items = Vec::new();
    for (name, value) in CONFIG {
        let wanted = args
            .iter()
            .skip(2)
            .any(|p| glob(&p.to_ascii_lowercase(), name.as_bytes()));
        if wanted {
            items.push((Reply::bulk_str(name), Reply::bulk_str(value)));
        }
    }
    Plan::Ready(Reply::Map(items))
}

/// Redis' glob match (`*`, `?`, `[...]` taken literally), iteratively so a
/// hostile pattern cannot recurse deep.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&c| c == b'*')
}

/// What each supported command does, for `COMMAND DOCS`.
fn summary(name: &str) -> &'static str {
    match name {
        "get" => "Returns the value of a key.",
        "set" => "Sets the value of a key (last write wins across replicas).",
        "del" | "unlink" => "Deletes keys (writes tombstones); returns how many existed.",
        "exists" => "Counts the keys that exist.",
        "mget" => "Returns the values of keys.",
        "mset" => "Sets several keys (not atomic across keys).",
        "ping" => "Returns PONG, or the argument.",
        "echo" => "Returns the argument.",
        "quit" => "Closes the connection.",
        "reset" => "Resets the connection's state (protocol, name, keyspace, level, login).",
        "hello" => "Chooses RESP2 or RESP3, optionally logs in and names the connection.",
        "auth" => "Logs the connection in as a user of the node's users file.",
        "info" => "Returns server facts and the cluster as this node sees it.",
        "command" => "Describes the supported commands.",
        "client" => "Names and describes the connection.",
        "select" => "Selects database 0 (use CASSIO.KEYSPACE for other keyspaces).",
        "config" => "Returns configuration parameters clients ask for.",
        "type" => "Returns the type of a key's value.",
        "cassio.keyspace" => "Returns or sets the keyspace the connection's commands address.",
        "cassio.consistency" => "Returns or sets the connection's consistency level.",
        "setex" | "psetex" => "Sets a key with a time to live (seconds, milliseconds).",
        "setnx" => "Sets a key if it does not exist (a read, then a write: not atomic).",
        "getex" => "Returns a key's value and sets or clears its expiry.",
        "getdel" => "Returns a key's value and deletes it (not atomic).",
        "expire" | "pexpire" => "Sets a key's time to live (rewrites its value).",
        "expireat" | "pexpireat" => "Sets a key's expiry to an absolute Unix time.",
        "ttl" | "pttl" => "Returns a key's remaining time to live (-2 missing, -1 none).",
        "persist" => "Removes a key's expiry.",
        _ => "A Cassio command (see README.md's command table).",
    }
}

fn docs_of(name: &str) -> Reply {
    let s = Reply::bulk_str;
    Reply::Map(vec![
        (s("summary"), s(summary(name))),
        (s("since"), s("1.0.0")),
        (
            s("group"),
            s(if name.starts_with("cassio.") {
                "cassio"
            } else {
                "generic"
            }),
        ),
    ])
}

/// `COMMAND DOCS [name...]`: every supported command, or the named ones
/// (unknown names are left out, as in Redis).
pub(super) fn command_docs(args: &[Bytes]) -> Reply {
    let names: Vec<&'static str> = if args.len() <= 2 {
        all_commands().map(|c| c.0).collect()
    } else {
        args.iter()
            .skip(2)
            .filter_map(|a| {
                all_commands()
                    .find(|c| c.0.as_bytes().eq_ignore_ascii_case(a))
                    .map(|c| c.0)
            })
            .collect()
    };
    Reply::Map(
        names
            .into_iter()
            .map(|n| (Reply::bulk_str(n), docs_of(n)))
            .collect(),
    )
}

/// `SELECT index`: database 0 is the connection's keyspace; other indexes
/// are refused, pointing at the command that does address another
/// keyspace.
pub(super) fn select(args: &[Bytes]) -> Plan {
    if args.len() != 2 {
        return wrong_arity("select");
    }
    match std::str::from_utf8(&args[1]).ok().and_then(|s| s.parse::<i64>().ok()) {
        Some(0) => Plan::Ready(Reply::Simple("OK")),
        Some(_) => err("ERR DB index is out of range: Cassio has only database 0; address another keyspace with CASSIO.KEYSPACE <name>"),
        None => err("ERR value is not an integer or out of range"),
    }
}

/// `RESET`: the connection as it was when it connected — RESP2, no name,
/// the default keyspace and level, and logged out where the node has
/// users (as Redis does for a default user with a password).
pub(super) fn reset(args: &[Bytes], conn: &mut Conn) -> Plan {
    if args.len() != 1 {
        return wrong_arity("reset");
    }
    conn.proto = Proto::Resp2;
    conn.name = None;
    conn.lib_name = None;
    conn.lib_ver = None;
    conn.consistency = None;
    conn.keyspace = Arc::from(cassio_core::DEFAULT_KEYSPACE);
    conn.user = None;
    Plan::Ready(Reply::Simple("RESET"))
}

/// The `INFO` sections that need no node request, in Redis' field names
/// (clients parse them: ioredis waits for `loading:0`).
pub(super) fn static_info(want: &dyn Fn(&str) -> bool) -> String {
    let mut text = String::new();
    if want("clients") {
        text.push_str("# Clients\r\nmaxclients:0\r\nblocked_clients:0\r\n\r\n");
    }
    if want("memory") {
        text.push_str("# Memory\r\nmaxmemory:0\r\nmaxmemory_policy:noeviction\r\n\r\n");
    }
    if want("persistence") {
        text.push_str(
            "# Persistence\r\nloading:0\r\naof_enabled:0\r\nrdb_bgsave_in_progress:0\r\n\r\n",
        );
    }
    if want("keyspace") {
        // Key counts would need a cluster-wide scan; the section is there
        // (GUIs look for it) and empty.
        text.push_str("# Keyspace\r\n\r\n");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn glob_matches_as_redis() {
        assert!(glob(b"*", b"save"));
        assert!(glob(b"max*", b"maxmemory-policy"));
        assert!(glob(b"s?ve", b"save"));
        assert!(glob(b"*memory*", b"maxmemory"));
        assert!(!glob(b"max", b"maxmemory"));
        assert!(!glob(b"x*", b"save"));
        assert!(glob(b"save", b"save"));
        assert!(glob(b"**", b""));
    }
}
