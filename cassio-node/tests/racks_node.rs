//! Racks and datacenters against a real in-process node (datacenter
//! `east`, rack `r1`) through the Rust client: keyspaces created with a
//! factor per datacenter, listed with it, altered one datacenter by one,
//! and `LOCAL_QUORUM` / `EACH_QUORUM` requests answered or refused with a
//! typed error.

// Test helpers outside #[test] functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used)]

use cassio_core::schema::SchemaError;
use cassio_core::schema_agreement::ChangeError;
use cassio_core::topology::Replication;
use cassio_core::{ClientError, Consistency};
use cassio_node::client::Client;
use cassio_node::{NodeBuilder, RunningNode};
use cassio_transport_tcp::{TcpConfig, TcpTransport};
use conformance::MemStore;
use std::sync::Arc;
use std::time::Duration;

/// Every wait here is bounded by this.
const WAIT: Duration = Duration::from_secs(20);

async fn node() -> RunningNode {
    let transport = TcpTransport::bind(
        "127.0.0.1:0".parse().unwrap(),
        TcpConfig::plaintext("racks"),
    )
    .await
    .unwrap();
    NodeBuilder::new(1, "racks")
        .transport(Arc::new(transport))
        .store(Arc::new(MemStore::new()))
        .replication_factor(1)
        .default_consistency(Consistency::One)
        .location("east", "r1")
        .gossip_interval(Duration::from_millis(100))
        .client_addr("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap()
}

/// Creates `name` placed by `rf` once the node takes schema changes.
async fn create_settled(c: &Client, name: &str, rf: &str) -> u64 {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match c
            .create_placed_keyspace(name, Replication::parse(rf).unwrap(), None)
            .await
        {
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
async fn keyspaces_per_datacenter_are_created_used_at_local_levels_and_altered_by_one() {
    let n = node().await;
    let c = Client::connect(&[n.client_addr().unwrap()]).await.unwrap();

    create_settled(&c, "local", "east:1").await;
    create_settled(&c, "remote", "west:1").await;

    // Listed with its replication.
    let list = c.list_keyspaces().await.unwrap();
    let local = list.keyspaces.iter().find(|k| k.name == "local").unwrap();
    assert_eq!(
        (local.replication_factor, local.replication.as_str()),
        (1, "east:1")
    );

    // LOCAL_QUORUM and EACH_QUORUM in the node's own datacenter.
    let ks = c.keyspace("local");
    for level in [Consistency::LocalQuorum, Consistency::EachQuorum] {
        ks.set("k", level.to_string(), Some(level)).await.unwrap();
        assert_eq!(
            ks.get("k", Some(level)).await.unwrap().as_deref(),
            Some(level.to_string().as_bytes())
        );
    }

    // A coordinator in a datacenter with no replica: LOCAL_QUORUM is a
    // typed refusal (its factor here is 0); EACH_QUORUM is unavailable
    // (west has no node); ONE is unavailable as well.
    let remote = c.keyspace("remote");
    let e = remote
        .set("k", "v", Some(Consistency::LocalQuorum))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e.client_error(),
            Some(ClientError::InvalidConsistency {
                level: Consistency::LocalQuorum,
                rf: 0
            })
        ),
        "{e:?}"
    );
    let e = remote
        .get("k", Some(Consistency::EachQuorum))
        .await
        .unwrap_err();
    assert!(
        matches!(e.client_error(), Some(ClientError::Unavailable { .. })),
        "{e:?}"
    );

    // A plain keyspace at LOCAL_QUORUM is a quorum of all its replicas.
    c.set("plain", "v", Some(Consistency::LocalQuorum))
        .await
        .unwrap();

    // One datacenter by one per step; two at once, or switching to a
    // single factor, are typed refusals.
    c.alter_keyspace_replication("local", Replication::parse("east:1,west:1").unwrap())
        .await
        .unwrap();
    let e = c
        .alter_keyspace_replication("remote", Replication::parse("west:2,east:1").unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(
            e.schema_error(),
            Some(ChangeError::Invalid(SchemaError::DatacenterStep { .. }))
        ),
        "{e:?}"
    );
    let e = c
        .alter_keyspace_replication("remote", Replication::from(1))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e.schema_error(),
            Some(ChangeError::Invalid(SchemaError::ReplicationMode(n))) if n == "remote"
        ),
        "{e:?}"
    );
    let list = c.list_keyspaces().await.unwrap();
    let local = list.keyspaces.iter().find(|k| k.name == "local").unwrap();
    assert_eq!(local.replication, "east:1,west:1");

    // The node's location is in its status.
    let st = c.status().await.unwrap();
    let me = st.members.iter().find(|m| m.id == 1).unwrap();
    assert_eq!((me.datacenter.as_str(), me.rack.as_str()), ("east", "r1"));

    n.shutdown(false).await.unwrap();
}
