//! Keyspaces through the native protocol and the Rust client, against a
//! real in-process node with users: create, address, list, alter, drop
//! (`Client::create_keyspace` ... and `Client::keyspace`), the per-user
//! per-keyspace rights and the admin right, and malformed keyspace
//! wrappers on a raw connection.

// Test helpers outside #[test] functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use cassio_core::schema::SchemaError;
use cassio_core::schema_agreement::ChangeError;
use cassio_core::{ClientError, Consistency};
use cassio_node::auth::{hash_secret, Access, Authenticator, ClientSecurity, User};
use cassio_node::client::{Client, ClientConfig, Credentials, Error};
use cassio_node::proto::{self, Reply, Request, RequestOp, Response};
use cassio_node::{NodeBuilder, RequestError, RunningNode};
use cassio_transport_tcp::{TcpConfig, TcpTransport};
use conformance::MemStore;
use futures_util::StreamExt;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Every wait here is bounded by this.
const WAIT: Duration = Duration::from_secs(20);

fn user(name: &str, access: Access, admin: bool) -> User {
    User {
        name: name.into(),
        password_hash: Some(hash_secret(&format!("{name}-pw")).unwrap()),
        token_hash: None,
        access,
        keyspaces: BTreeMap::new(),
        admin,
    }
}

/// admin: read-write and admin; reader: read-only everywhere; narrow:
/// read-write, but no access at all to keyspace `orders`.
fn security() -> ClientSecurity {
    let mut narrow = user("narrow", Access::ReadWrite, false);
    narrow.keyspaces.insert("orders".into(), Access::None);
    ClientSecurity {
        auth: Some(Authenticator::new(vec![
            user("admin", Access::ReadWrite, true),
            user("reader", Access::ReadOnly, false),
            narrow,
        ])),
        tls: None,
    }
}

async fn node() -> RunningNode {
    node_on(Arc::new(MemStore::new())).await
}

async fn node_on(store: Arc<MemStore>) -> RunningNode {
    let transport = TcpTransport::bind(
        "127.0.0.1:0".parse().unwrap(),
        TcpConfig::plaintext("ks-client"),
    )
    .await
    .unwrap();
    NodeBuilder::new(1, "ks-client")
        .transport(Arc::new(transport))
        .store(store)
        .replication_factor(1)
        .default_consistency(Consistency::One)
        .gossip_interval(Duration::from_millis(100))
        .client_addr("127.0.0.1:0".parse().unwrap())
        .client_security(security())
        .start()
        .await
        .unwrap()
}

async fn client_as(addr: SocketAddr, name: &str) -> Client {
    let config = ClientConfig {
        credentials: Some(Credentials {
            user: name.into(),
            password: format!("{name}-pw"),
        }),
        ..ClientConfig::default()
    };
    Client::connect_with(&[addr], config).await.unwrap()
}

/// Creates `name` once the node coordinates and its schema is founded
/// (until then it answers `Joining` or no quorum).
async fn create_settled(c: &Client, name: &str, rf: usize, level: Option<Consistency>) -> u64 {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match c.create_keyspace(name, rf, level).await {
            Ok(v) => return v,
            Err(e)
                if matches!(e.client_error(), Some(ClientError::Joining))
                    || matches!(e.schema_error(), Some(ChangeError::NoQuorum)) => {}
            Err(e) => panic!("create {name}: {e:?}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the node never took a keyspace change"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn keyspaces_are_created_addressed_listed_altered_and_dropped_by_the_client() {
    let n = node().await;
    let addr = n.client_addr().unwrap();
    let admin = client_as(addr, "admin").await;

    let v1 = create_settled(&admin, "orders", 1, Some(Consistency::One)).await;
    assert!(v1 >= 1, "schema version {v1}");

    // The same key in `orders` and in `default` are two keys.
    let orders = admin.keyspace("orders");
    assert_eq!(orders.name(), "orders");
    orders.set("k", "in-orders", None).await.unwrap();
    admin.set("k", "in-default", None).await.unwrap();
    assert_eq!(
        orders.get("k", None).await.unwrap().as_deref(),
        Some(&b"in-orders"[..])
    );
    assert_eq!(
        admin.get("k", None).await.unwrap().as_deref(),
        Some(&b"in-default"[..])
    );
    // `default` by name is the unwrapped default.
    assert_eq!(
        admin
            .keyspace("default")
            .get("k", None)
            .await
            .unwrap()
            .as_deref(),
        Some(&b"in-default"[..])
    );

    // Rows, deletes, TTLs and scans stay in their keyspace too.
    orders.hset("row", "a", "1", None).await.unwrap();
    orders.hset("row", "b", "2", None).await.unwrap();
    assert_eq!(
        orders.hget("row", "a", None).await.unwrap().as_deref(),
        Some(&b"1"[..])
    );
    assert_eq!(admin.hget("row", "a", None).await.unwrap(), None);
    orders.hdel("row", "a", None).await.unwrap();
    assert_eq!(
        orders.hgetall("row", None).await.unwrap(),
        vec![(Bytes::from_static(b"b"), Bytes::from_static(b"2"))]
    );
    orders
        .set_with_ttl("short", "x", Duration::from_secs(3600), None)
        .await
        .unwrap();
    orders.set("gone", "x", None).await.unwrap();
    orders.del("gone", None).await.unwrap();
    assert_eq!(orders.get("gone", None).await.unwrap(), None);
    let mut keys: Vec<Bytes> = orders
        .scan("", 2, None)
        .map(|e| e.unwrap().0)
        .collect()
        .await;
    keys.sort();
    assert_eq!(
        keys,
        vec![Bytes::from_static(b"k"), Bytes::from_static(b"short")],
        "a scan of orders lists its plain keys only"
    );
    let default_keys: Vec<Bytes> = admin
        .scan("", 10, None)
        .map(|e| e.unwrap().0)
        .collect()
        .await;
    assert_eq!(default_keys, vec![Bytes::from_static(b"k")]);

    // The listing shows it with its settings.
    let list = admin.list_keyspaces().await.unwrap();
    assert!(list.schema_version >= v1);
    let ks = list
        .keyspaces
        .iter()
        .find(|k| k.name == "orders")
        .unwrap_or_else(|| panic!("{list:?}"));
    assert_eq!(
        (ks.replication_factor, ks.default_consistency.as_str()),
        (1, "ONE")
    );
    assert!(list.keyspaces.iter().any(|k| k.name == "default"));

    // Refusals are typed, with the node's message.
    let e = admin.create_keyspace("orders", 1, None).await.unwrap_err();
    assert!(
        matches!(e.schema_error(), Some(ChangeError::Invalid(SchemaError::Exists(n))) if n == "orders"),
        "{e:?}"
    );
    assert!(e.to_string().contains("already exists"), "{e}");
    let e = admin.create_keyspace("#1", 1, None).await.unwrap_err();
    assert!(
        matches!(
            e.schema_error(),
            Some(ChangeError::Invalid(SchemaError::InvalidName(_)))
        ),
        "{e:?}"
    );
    let e = admin
        .alter_keyspace("orders", Some(3), None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e.schema_error(),
            Some(ChangeError::Invalid(SchemaError::ReplicationStep {
                from: 1,
                to: 3
            }))
        ),
        "{e:?}"
    );
    let e = admin
        .alter_keyspace("orders", None, None)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::Request(RequestError::BadRequest(m)) if m.contains("nothing to change")),
        "{e:?}"
    );
    // A new keyspace's first factor step (1 -> 2, on a 1-node cluster)
    // waits for nothing: the node takes it. The next step waits until
    // every replica was repaired under the first, and says so.
    let v2 = admin.alter_keyspace("orders", Some(2), None).await.unwrap();
    assert!(v2 > v1);
    let e = admin
        .alter_keyspace("orders", Some(3), None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e.schema_error(),
            Some(ChangeError::Invalid(SchemaError::RepairPending { .. }))
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("anti-entropy round"), "{e}");
    let v3 = admin
        .alter_keyspace("orders", None, Some(Consistency::All))
        .await
        .unwrap();
    let list = admin.list_keyspaces().await.unwrap();
    let ks = list.keyspaces.iter().find(|k| k.name == "orders").unwrap();
    assert_eq!(
        (ks.replication_factor, ks.default_consistency.as_str()),
        (2, "ALL")
    );
    assert!(list.schema_version >= v3);

    // Dropped: data requests in it are refused as an unknown keyspace,
    // and `default` keeps its key.
    let v4 = admin.drop_keyspace("orders").await.unwrap();
    assert!(v4 > v3);
    let e = orders.get("k", None).await.unwrap_err();
    assert!(
        matches!(e.client_error(), Some(ClientError::UnknownKeyspace(k)) if k == "orders"),
        "{e:?}"
    );
    assert!(e.is_unknown_keyspace());
    let e = admin.drop_keyspace("orders").await.unwrap_err();
    assert!(e.is_unknown_keyspace(), "{e:?}");
    assert!(!admin
        .list_keyspaces()
        .await
        .unwrap()
        .keyspaces
        .iter()
        .any(|k| k.name == "orders"));
    assert_eq!(
        admin.get("k", None).await.unwrap().as_deref(),
        Some(&b"in-default"[..])
    );
    // Created again under the name, it starts empty.
    create_settled(&admin, "orders", 1, Some(Consistency::One)).await;
    assert_eq!(orders.get("k", None).await.unwrap(), None);

    n.shutdown(false).await.unwrap();
}

#[tokio::test]
async fn keyspace_rights_apply_to_wrapped_requests_and_changes_need_admin() {
    let n = node().await;
    let addr = n.client_addr().unwrap();
    let admin = client_as(addr, "admin").await;
    create_settled(&admin, "orders", 1, Some(Consistency::One)).await;
    admin.keyspace("orders").set("k", "v", None).await.unwrap();

    // A read-only user reads any keyspace, writes none, changes none.
    let reader = client_as(addr, "reader").await;
    assert_eq!(
        reader
            .keyspace("orders")
            .get("k", None)
            .await
            .unwrap()
            .as_deref(),
        Some(&b"v"[..])
    );
    let e = reader
        .keyspace("orders")
        .set("k", "w", None)
        .await
        .unwrap_err();
    assert!(e.is_unauthorized(), "{e:?}");
    assert!(e.to_string().contains("orders"), "{e}");
    let e = reader.create_keyspace("mine", 1, None).await.unwrap_err();
    assert!(e.is_unauthorized(), "{e:?}");
    assert!(e.to_string().contains("reader"), "{e}");
    for e in [
        reader.list_keyspaces().await.unwrap_err(),
        reader
            .alter_keyspace("orders", None, Some(Consistency::All))
            .await
            .unwrap_err(),
        reader.drop_keyspace("orders").await.unwrap_err(),
    ] {
        assert!(e.is_unauthorized(), "{e:?}");
    }

    // A user without rights to `orders` can neither read nor scan nor
    // write it, but uses `default` as before.
    let narrow = client_as(addr, "narrow").await;
    let e = narrow.keyspace("orders").get("k", None).await.unwrap_err();
    assert!(e.is_unauthorized(), "{e:?}");
    assert!(e.to_string().contains("orders"), "{e}");
    let mut scan = Box::pin(narrow.keyspace("orders").scan("", 10, None));
    let first = scan.next().await.unwrap().unwrap_err();
    assert!(first.is_unauthorized(), "{first:?}");
    assert!(narrow
        .keyspace("orders")
        .hset("r", "c", "v", None)
        .await
        .unwrap_err()
        .is_unauthorized());
    narrow.set("k", "narrow", None).await.unwrap();
    assert_eq!(
        narrow.get("k", None).await.unwrap().as_deref(),
        Some(&b"narrow"[..])
    );
    // Nothing was changed by the refusals.
    assert_eq!(
        admin
            .keyspace("orders")
            .get("k", None)
            .await
            .unwrap()
            .as_deref(),
        Some(&b"v"[..])
    );
    assert!(admin
        .list_keyspaces()
        .await
        .unwrap()
        .keyspaces
        .iter()
        .all(|k| k.name != "mine"));

    n.shutdown(false).await.unwrap();
}

/// Sends `op` on a raw connection and reads its answer (bounded).
async fn exchange(s: &mut TcpStream, id: u64, op: RequestOp) -> Option<Response> {
    let frame = proto::encode(&Request { id, op }).unwrap();
    s.write_all(&frame).await.unwrap();
    tokio::time::timeout(WAIT, proto::read_msg::<_, Response>(s))
        .await
        .unwrap()
        .ok()
        .flatten()
}

fn get(key: &'static [u8]) -> RequestOp {
    RequestOp::Get {
        key: Bytes::from_static(key),
        consistency: None,
    }
}

fn wrap(keyspace: &str, op: RequestOp) -> RequestOp {
    RequestOp::InKeyspace {
        keyspace: keyspace.into(),
        op: Box::new(op),
    }
}

#[tokio::test]
async fn malformed_wrappers_get_typed_errors_and_the_connection_stays_usable() {
    let n = node().await;
    let addr = n.client_addr().unwrap();
    let admin = client_as(addr, "admin").await;
    create_settled(&admin, "orders", 1, Some(Consistency::One)).await;
    admin.keyspace("orders").set("k", "v", None).await.unwrap();

    let mut s = TcpStream::connect(addr).await.unwrap();
    // Rights are checked before anything else: not logged in yet.
    let r = exchange(&mut s, 1, wrap("orders", get(b"k")))
        .await
        .unwrap();
    assert!(
        matches!(&r.result, Err(RequestError::Unauthorized(m)) if m.contains("authentication required")),
        "{r:?}"
    );
    let r = exchange(
        &mut s,
        2,
        RequestOp::Auth {
            user: "admin".into(),
            password: "admin-pw".into(),
        },
    )
    .await
    .unwrap();
    assert_eq!(r.result, Ok(Reply::Authenticated));

    // A nested wrapper, and wrappers around non-data operations: typed
    // refusals, each answered under its own id.
    let refused = [
        (10, wrap("orders", wrap("orders", get(b"k"))), "nested"),
        (11, wrap("orders", RequestOp::Status), "status"),
        (12, wrap("orders", RequestOp::Ping), "ping"),
        (
            13,
            wrap("orders", RequestOp::ListKeyspaces),
            "list keyspaces",
        ),
        (
            14,
            wrap(
                "orders",
                RequestOp::DropKeyspace {
                    name: "orders".into(),
                },
            ),
            "drop keyspace",
        ),
        (
            15,
            wrap(
                "orders",
                RequestOp::Auth {
                    user: "admin".into(),
                    password: "admin-pw".into(),
                },
            ),
            "auth",
        ),
    ];
    for (id, op, what) in refused {
        let r = exchange(&mut s, id, op).await.unwrap();
        assert_eq!(r.id, id);
        assert!(
            matches!(&r.result, Err(RequestError::BadRequest(m)) if m.contains("InKeyspace") && m.contains(what)),
            "{what}: {r:?}"
        );
    }
    // The connection still serves, wrapped and not.
    let r = exchange(&mut s, 20, wrap("orders", get(b"k")))
        .await
        .unwrap();
    assert_eq!(r.result, Ok(Reply::Value(Some(Bytes::from_static(b"v")))));
    let r = exchange(&mut s, 21, wrap("nosuch", get(b"k")))
        .await
        .unwrap();
    assert!(
        matches!(
            &r.result,
            Err(RequestError::Client(ClientError::UnknownKeyspace(k))) if k == "nosuch"
        ),
        "{r:?}"
    );
    let r = exchange(&mut s, 22, RequestOp::Ping).await.unwrap();
    assert_eq!(r.result, Ok(Reply::Pong));
    // `orders` is still there: the wrapped drop above did nothing.
    assert!(admin
        .list_keyspaces()
        .await
        .unwrap()
        .keyspaces
        .iter()
        .any(|k| k.name == "orders"));

    // Wrappers nested past proto::MAX_NESTING do not decode: a protocol
    // error that closes this connection only (the decoder does not
    // recurse into them).
    let mut deep = get(b"k");
    for _ in 0..=proto::MAX_NESTING {
        deep = wrap("orders", deep);
    }
    assert!(exchange(&mut s, 30, deep).await.is_none());
    assert_eq!(
        admin
            .keyspace("orders")
            .get("k", None)
            .await
            .unwrap()
            .as_deref(),
        Some(&b"v"[..])
    );

    n.shutdown(false).await.unwrap();
}

/// Live items the store holds under storage name `storage`.
fn live_items(store: &MemStore, storage: &str) -> usize {
    use cassio_core::Store;
    let mut prefix = vec![u8::try_from(storage.len()).unwrap()];
    prefix.extend_from_slice(storage.as_bytes());
    let mut end = prefix.clone();
    *end.last_mut().unwrap() += 1;
    store
        .range(
            std::ops::Bound::Included(&prefix[..]),
            std::ops::Bound::Excluded(&end[..]),
            usize::MAX,
        )
        .unwrap()
        .iter()
        .filter(|(_, v)| !v.is_tombstone())
        .count()
}

#[tokio::test]
async fn a_dropped_keyspace_s_data_is_reclaimed() {
    let store = Arc::new(MemStore::new());
    let n = node_on(store.clone()).await;
    let admin = client_as(n.client_addr().unwrap(), "admin").await;
    create_settled(&admin, "scratch", 1, None).await;
    create_settled(&admin, "kept", 1, None).await;
    for i in 0..600 {
        let k = format!("k{i}");
        admin
            .keyspace("scratch")
            .set(k.clone(), "x", None)
            .await
            .unwrap();
        admin.keyspace("kept").set(k, "y", None).await.unwrap();
    }
    let list = admin.list_keyspaces().await.unwrap();
    let storage = |name: &str| {
        let id = list.keyspaces.iter().find(|k| k.name == name).unwrap().id;
        format!("#{id}")
    };
    let (scratch, kept) = (storage("scratch"), storage("kept"));
    assert_eq!(live_items(&store, &scratch), 600);
    admin.drop_keyspace("scratch").await.unwrap();
    // The node's reclaim walk turns the dropped keyspace's items into
    // tombstones (purged later by compaction) and leaves the rest.
    let deadline = tokio::time::Instant::now() + WAIT;
    while live_items(&store, &scratch) > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} items of the dropped keyspace still live",
            live_items(&store, &scratch)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(live_items(&store, &kept), 600);
    assert_eq!(
        admin
            .keyspace("kept")
            .get("k7", None)
            .await
            .unwrap()
            .as_deref(),
        Some(&b"y"[..])
    );
    n.shutdown(false).await.unwrap();
}
