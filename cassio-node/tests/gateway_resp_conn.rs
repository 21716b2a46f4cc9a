//! The RESP commands clients and GUIs send on connect (issue 14), against a
//! fake node over loopback with the `redis` crate: `CLIENT`, `CONFIG GET`,
//! `COMMAND DOCS`, `SELECT`, `TYPE`, `RESET`, `INFO` sections; each
//! unsupported form answered with an error naming it on a connection that
//! stays usable. (Real clients connecting: `real_clients.rs`.)

// Helpers outside #[test] fns unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod gateway_common;

use gateway_common::{serve_resp, spawn_fake};
use redis::Value;
use std::net::SocketAddr;
use std::time::Duration;

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

fn connect(addr: SocketAddr) -> redis::Connection {
    let c = redis::Client::open(format!("redis://{addr}/")).unwrap();
    let conn = c
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn
}

fn q<T: redis::FromRedisValue>(c: &mut redis::Connection, args: &[&str]) -> redis::RedisResult<T> {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(c)
}

fn err_text(e: redis::RedisError) -> String {
    e.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_time_commands_are_answered() {
    let fake = spawn_fake();
    let srv = serve_resp(fake.handle.clone()).await;
    let addr = srv.addr;
    blocking(move || {
        let mut c = connect(addr);
        // CLIENT: name, id, what the library announced, this connection.
        assert_eq!(
            q::<String>(&mut c, &["CLIENT", "SETNAME", "gui"]).unwrap(),
            "OK"
        );
        assert_eq!(
            q::<String>(&mut c, &["CLIENT", "SETINFO", "LIB-NAME", "redis-rs"]).unwrap(),
            "OK"
        );
        assert_eq!(
            q::<String>(&mut c, &["CLIENT", "SETINFO", "LIB-VER", "0.32"]).unwrap(),
            "OK"
        );
        let e = q::<String>(&mut c, &["CLIENT", "SETINFO", "LIB-NAME", "a b"]).unwrap_err();
        assert!(err_text(e).contains("cannot contain spaces"));
        let id: i64 = q(&mut c, &["CLIENT", "ID"]).unwrap();
        let info: String = q(&mut c, &["CLIENT", "INFO"]).unwrap();
        assert!(
            info.starts_with(&format!("id={id} addr=127.0.0.1:")),
            "{info}"
        );
        for field in [
            "name=gui",
            "db=0",
            "resp=2",
            "lib-name=redis-rs",
            "lib-ver=0.32",
            "cassio-keyspace=default",
        ] {
            assert!(info.contains(field), "{field} missing in {info}");
        }
        let list: String = q(&mut c, &["CLIENT", "LIST"]).unwrap();
        assert_eq!(list, info);
        for sub in ["NO-EVICT", "NO-TOUCH"] {
            assert_eq!(q::<String>(&mut c, &["CLIENT", sub, "on"]).unwrap(), "OK");
            assert_eq!(q::<String>(&mut c, &["CLIENT", sub, "OFF"]).unwrap(), "OK");
            let e = q::<String>(&mut c, &["CLIENT", sub, "maybe"]).unwrap_err();
            assert!(err_text(e).contains("syntax error"));
        }
        let e = q::<String>(&mut c, &["CLIENT", "KILL", "ID", "1"]).unwrap_err();
        assert!(err_text(e).contains("CLIENT KILL is not supported"));

        // CONFIG GET with patterns, as GUIs send it.
        let cfg: Vec<String> = q(&mut c, &["CONFIG", "GET", "save", "databases"]).unwrap();
        assert_eq!(cfg, ["save", "", "databases", "1"]);
        let all: Vec<String> = q(&mut c, &["CONFIG", "GET", "*"]).unwrap();
        assert_eq!(all.len(), 14, "{all:?}");
        let mm: Vec<String> = q(&mut c, &["CONFIG", "GET", "maxmemory*"]).unwrap();
        assert_eq!(mm, ["maxmemory", "0", "maxmemory-policy", "noeviction"]);
        let none: Vec<String> = q(&mut c, &["CONFIG", "GET", "nosuch"]).unwrap();
        assert!(none.is_empty());

        // COMMAND DOCS: every command, or the named ones.
        let docs: Vec<Value> = q(&mut c, &["COMMAND", "DOCS"]).unwrap();
        let count: i64 = q(&mut c, &["COMMAND", "COUNT"]).unwrap();
        assert_eq!(docs.len() as i64, count * 2);
        let docs: Vec<Value> = q(&mut c, &["COMMAND", "DOCS", "set", "nosuch"]).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0], Value::BulkString(b"set".to_vec()));
        let names: Vec<String> = q(&mut c, &["COMMAND", "LIST"]).unwrap();
        for name in ["type", "reset", "client", "config"] {
            assert!(names.iter().any(|n| n == name), "{name} not in {names:?}");
        }

        // SELECT: 0 only, the error pointing at CASSIO.KEYSPACE.
        assert_eq!(q::<String>(&mut c, &["SELECT", "0"]).unwrap(), "OK");
        let e = q::<String>(&mut c, &["SELECT", "3"]).unwrap_err();
        assert!(err_text(e).contains("CASSIO.KEYSPACE"));
        let e = q::<String>(&mut c, &["SELECT", "x"]).unwrap_err();
        assert!(err_text(e).contains("not an integer"));

        // TYPE reads the key.
        assert_eq!(q::<String>(&mut c, &["SET", "t", "v"]).unwrap(), "OK");
        assert_eq!(q::<String>(&mut c, &["TYPE", "t"]).unwrap(), "string");
        assert_eq!(q::<String>(&mut c, &["TYPE", "absent"]).unwrap(), "none");

        // INFO sections clients parse.
        let info: String = q(&mut c, &["INFO"]).unwrap();
        for section in [
            "# Server",
            "# Clients",
            "# Memory",
            "# Persistence\r\nloading:0",
            "# Replication",
            "# Keyspace",
        ] {
            assert!(info.contains(section), "{section} missing in {info}");
        }
        let persistence: String = q(&mut c, &["INFO", "persistence"]).unwrap();
        assert!(persistence.starts_with("# Persistence") && !persistence.contains("# Server"));

        // RESET: the connection as new.
        assert_eq!(
            q::<String>(&mut c, &["CASSIO.KEYSPACE", "other"]).unwrap(),
            "OK"
        );
        assert_eq!(
            q::<String>(&mut c, &["CASSIO.CONSISTENCY", "all"]).unwrap(),
            "OK"
        );
        assert_eq!(q::<String>(&mut c, &["RESET"]).unwrap(), "RESET");
        assert_eq!(
            q::<Option<String>>(&mut c, &["CLIENT", "GETNAME"]).unwrap(),
            None
        );
        assert_eq!(
            q::<String>(&mut c, &["CASSIO.KEYSPACE"]).unwrap(),
            "default"
        );
        assert_eq!(
            q::<String>(&mut c, &["CASSIO.CONSISTENCY"]).unwrap(),
            "DEFAULT"
        );
        let info: String = q(&mut c, &["CLIENT", "INFO"]).unwrap();
        assert!(
            info.contains("name= ") && info.contains("lib-name= "),
            "{info}"
        );

        // And the connection lives through every refusal above.
        assert_eq!(q::<String>(&mut c, &["PING"]).unwrap(), "PONG");
    })
    .await;
    srv.shutdown().await;
}
