//! Rows of columns between real `Node`s (the in-test host of
//! `support/mem_cluster.rs`): last write wins per cell, row reads merged
//! cell by cell and repaired, and cells carried by hints and anti-entropy
//! like any other item.

#[path = "support/mem_cluster.rs"]
mod mem_cluster;

use bytes::Bytes;
use cassio_core::node::cell_storage_key;
use cassio_core::{
    ClientRequest, ClientResponse, Consistency, NodeId, RequestId, RowSlice, Timestamp, Versioned,
};
use mem_cluster::{Cluster, WALL0};
use std::time::Duration;

fn ts(micros: u64) -> Timestamp {
    Timestamp::new(WALL0 - 1_000_000 + micros, 0, NodeId(9))
}

fn cell(row: &str, col: &str) -> Bytes {
    cell_storage_key("default", row.as_bytes(), col.as_bytes()).expect("storable")
}

fn send(c: &mut Cluster, node: usize, id: u64, req: ClientRequest) {
    let at = c.at();
    c.nodes[node].handle_client(at, RequestId(id), req);
}

/// The answer to row read `id`: (columns and values, more, last).
fn cells_of(c: &Cluster, id: u64) -> (Vec<(String, String)>, bool, Option<Bytes>) {
    match c.answers.get(&RequestId(id)) {
        Some(Ok(ClientResponse::Cells { cells, more, last })) => (
            cells
                .iter()
                .map(|(k, v)| {
                    (
                        String::from_utf8_lossy(k).into_owned(),
                        String::from_utf8_lossy(v).into_owned(),
                    )
                })
                .collect(),
            *more,
            last.clone(),
        ),
        other => panic!("row read {id} answered {other:?}"),
    }
}

fn settled(tweak: impl Fn(&mut cassio_core::Config)) -> Cluster {
    let mut c = Cluster::new(3, tweak, |_, _| {});
    c.run_for(Duration::from_secs(10));
    c
}

#[test]
fn concurrent_writes_to_different_columns_of_one_row_both_survive() {
    let mut c = settled(|c| c.repair.interval = Duration::from_secs(3600));
    // Two coordinators write two columns of one row before either write
    // reaches any replica: a per-row last write wins would lose one.
    send(&mut c, 0, 1, ClientRequest::hset("user:1", "email", "a@x"));
    send(&mut c, 1, 2, ClientRequest::hset("user:1", "name", "Ann"));
    c.pump();
    assert_eq!(c.replies.get(&RequestId(1)), Some(&true));
    assert_eq!(c.replies.get(&RequestId(2)), Some(&true));
    send(
        &mut c,
        2,
        3,
        ClientRequest::read_row("user:1", RowSlice::All, 100).with_consistency(Consistency::All),
    );
    c.pump();
    let (cells, more, _) = cells_of(&c, 3);
    assert_eq!(
        cells,
        vec![
            ("email".to_string(), "a@x".to_string()),
            ("name".to_string(), "Ann".to_string())
        ]
    );
    assert!(!more);
    // One column read alone, and a plain key of the row's name is another
    // item altogether.
    send(&mut c, 0, 4, ClientRequest::hget("user:1", "name"));
    send(&mut c, 0, 5, ClientRequest::get("user:1"));
    c.pump();
    assert_eq!(
        c.answers.get(&RequestId(4)),
        Some(&Ok(ClientResponse::Value(Some(Bytes::from_static(b"Ann")))))
    );
    assert_eq!(
        c.answers.get(&RequestId(5)),
        Some(&Ok(ClientResponse::Value(None)))
    );
    // Deleting one column leaves the other; the deleted one is hidden.
    send(&mut c, 1, 6, ClientRequest::hdel("user:1", "email"));
    c.pump();
    send(
        &mut c,
        2,
        7,
        ClientRequest::read_row("user:1", RowSlice::All, 100),
    );
    c.pump();
    assert_eq!(
        cells_of(&c, 7).0,
        vec![("name".to_string(), "Ann".to_string())]
    );
}

#[test]
fn a_row_read_merges_per_cell_and_repairs_a_stale_replica() {
    let mut c = Cluster::new(
        3,
        |c| c.repair.interval = Duration::from_secs(3600),
        |i, h| {
            // Node 1 has the newer `a`, node 2 the newer `b`, node 3 has
            // neither and a `c` the others deleted.
            let (a, b) = if i == 0 { (2, 1) } else { (1, 2) };
            h.store.insert(
                cell("r", "a"),
                Versioned::value(ts(a), Bytes::from(format!("a{a}"))),
            );
            h.store.insert(
                cell("r", "b"),
                Versioned::value(ts(b), Bytes::from(format!("b{b}"))),
            );
            if i == 2 {
                h.store.remove(&cell("r", "a"));
                h.store.remove(&cell("r", "b"));
                h.store
                    .insert(cell("r", "c"), Versioned::value(ts(1), Bytes::from("c")));
            } else {
                h.store.insert(cell("r", "c"), Versioned::tombstone(ts(3)));
            }
        },
    );
    c.run_for(Duration::from_secs(10));
    send(
        &mut c,
        0,
        1,
        ClientRequest::read_row("r", RowSlice::All, 100).with_consistency(Consistency::All),
    );
    c.pump();
    let (cells, _, _) = cells_of(&c, 1);
    // `a` from node 1, `b` from node 2; `c`'s tombstone wins and is hidden.
    assert_eq!(
        cells,
        vec![
            ("a".to_string(), "a2".to_string()),
            ("b".to_string(), "b2".to_string())
        ]
    );
    // Every replica now holds the newest version of every cell.
    for (i, h) in c.hosts.iter().enumerate() {
        assert_eq!(
            h.store.get(&cell("r", "a")).and_then(|v| v.value.clone()),
            Some(Bytes::from("a2")),
            "node {}",
            i + 1
        );
        assert_eq!(
            h.store.get(&cell("r", "b")).and_then(|v| v.value.clone()),
            Some(Bytes::from("b2")),
            "node {}",
            i + 1
        );
        assert!(
            h.store
                .get(&cell("r", "c"))
                .is_some_and(|v| v.is_tombstone()),
            "node {}",
            i + 1
        );
    }
}

#[test]
fn a_long_row_reads_in_pages_with_slices() {
    let n = 2500u32;
    let mut c = Cluster::new(
        3,
        |c| c.repair.interval = Duration::from_secs(3600),
        |_, h| {
            for k in 0..n {
                h.store.insert(
                    cell("big", &format!("col-{k:05}")),
                    Versioned::value(ts(1), Bytes::from(format!("v{k}"))),
                );
            }
        },
    );
    c.run_for(Duration::from_secs(10));
    let mut got = Vec::new();
    let mut slice = RowSlice::All;
    for id in 1..10u64 {
        send(
            &mut c,
            0,
            id,
            ClientRequest::read_row("big", slice.clone(), 1000),
        );
        c.pump();
        let (cells, more, last) = cells_of(&c, id);
        assert!(cells.len() <= 1000);
        got.extend(cells.into_iter().map(|(k, _)| k));
        if !more {
            break;
        }
        slice = RowSlice::After(last.expect("a page with more has a last column"));
    }
    let want: Vec<String> = (0..n).map(|k| format!("col-{k:05}")).collect();
    assert_eq!(got, want, "every column once, in order");
    // A prefix slice and a range slice.
    send(
        &mut c,
        0,
        100,
        ClientRequest::read_row("big", RowSlice::Prefix(Bytes::from("col-0001")), 1000),
    );
    send(
        &mut c,
        0,
        101,
        ClientRequest::read_row(
            "big",
            RowSlice::Range {
                from: Some(Bytes::from("col-00100")),
                to: Some(Bytes::from("col-00105")),
            },
            3,
        ),
    );
    c.pump();
    let (prefix, more, _) = cells_of(&c, 100);
    assert_eq!(prefix.len(), 10, "col-00010 ..= col-00019");
    assert!(!more);
    let (range, more, last) = cells_of(&c, 101);
    let names: Vec<&str> = range.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, vec!["col-00100", "col-00101", "col-00102"]);
    assert!(more);
    assert_eq!(last, Some(Bytes::from("col-00102")));
}

#[test]
fn a_cell_written_while_a_replica_was_down_reaches_it_by_hints() {
    let mut c = settled(|c| c.repair.interval = Duration::from_secs(3600));
    c.down.insert(2);
    c.run_for(Duration::from_secs(20));
    send(&mut c, 0, 1, ClientRequest::hset("row", "col", "v"));
    c.pump();
    c.run_for(Duration::from_secs(5));
    assert_eq!(c.replies.get(&RequestId(1)), Some(&true));
    assert!(!c.hosts[2].store.contains_key(&cell("row", "col")));
    c.down.remove(&2);
    c.run_for(Duration::from_secs(30));
    assert_eq!(
        c.hosts[2]
            .store
            .get(&cell("row", "col"))
            .and_then(|v| v.value.clone()),
        Some(Bytes::from("v")),
        "the hint delivered the cell"
    );
}

#[test]
fn a_cell_written_while_a_replica_was_down_reaches_it_by_anti_entropy() {
    let mut c = settled(|c| {
        c.repair.interval = Duration::from_secs(30);
        // Only anti-entropy may bring the cell.
        c.hints.enabled = false;
    });
    c.down.insert(2);
    c.run_for(Duration::from_secs(20));
    send(
        &mut c,
        0,
        1,
        ClientRequest::hset("row", "col", "v").with_consistency(Consistency::One),
    );
    c.pump();
    c.run_for(Duration::from_secs(1));
    assert_eq!(c.replies.get(&RequestId(1)), Some(&true));
    assert!(!c.hosts[2].store.contains_key(&cell("row", "col")));
    c.down.remove(&2);
    c.run_for(Duration::from_secs(120));
    assert_eq!(
        c.hosts[2]
            .store
            .get(&cell("row", "col"))
            .and_then(|v| v.value.clone()),
        Some(Bytes::from("v")),
        "anti-entropy carried the cell"
    );
}
