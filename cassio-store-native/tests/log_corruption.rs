//! Damage in the commit log found on open: a torn tail is cut, damage that
//! valid records follow (in the same segment or a later one) refuses to open
//! with the file and offset, unless the operator asked to truncate.

use bytes::Bytes;
use cassio_core::{NodeId, Store, StoreError, Timestamp, Versioned};
use cassio_store_native::{NativeOptions, NativeStore, SyncPolicy};
use std::path::{Path, PathBuf};

const RECORDS: u64 = 50;

fn v(i: u64) -> Versioned {
    Versioned::value(
        Timestamp::new(i + 1, 0, NodeId(1)),
        Bytes::from(vec![b'a' + (i % 26) as u8; 100]),
    )
}

fn key(prefix: &str, i: u64) -> Vec<u8> {
    format!("{prefix}{i:04}").into_bytes()
}

fn opts(truncate: bool) -> NativeOptions {
    NativeOptions {
        sync: SyncPolicy::Never,
        truncate_corrupt_log: truncate,
        ..NativeOptions::default()
    }
}

/// Opens a store in `dir`, writes `RECORDS` same-sized records under
/// `prefix`, closes it cleanly; returns the segment written and the size of
/// one record.
fn write_segment(dir: &Path, prefix: &str) -> (PathBuf, u64) {
    let before = NativeStore::log_files(dir);
    let s = NativeStore::open(dir, opts(false)).expect("open");
    for i in 0..RECORDS {
        s.apply(&key(prefix, i), &v(i)).expect("write");
    }
    drop(s);
    let seg = NativeStore::log_files(dir)
        .into_iter()
        .find(|p| !before.contains(p))
        .expect("the store started a new segment");
    let len = std::fs::metadata(&seg).expect("segment").len();
    assert_eq!(len % RECORDS, 0, "records have one size");
    (seg, len / RECORDS)
}

fn flip(path: &Path, at: u64) {
    let mut b = std::fs::read(path).expect("read segment");
    b[at as usize] ^= 0x40;
    std::fs::write(path, &b).expect("write segment");
}

fn present(s: &NativeStore, prefix: &str) -> Vec<bool> {
    (0..RECORDS)
        .map(|i| s.get(&key(prefix, i)).expect("read") == Some(v(i)))
        .collect()
}

#[test]
fn damage_followed_by_valid_records_refuses_to_open_naming_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let (seg, rec) = write_segment(dir.path(), "k");
    let bad = 20;
    flip(&seg, bad * rec + 40);
    let err = NativeStore::open(dir.path(), opts(false)).unwrap_err();
    let msg = err.to_string();
    eprintln!("open refused: {msg}");
    assert!(matches!(err, StoreError::Corruption { .. }), "{err:?}");
    let at = format!("{} @ {}", seg.display(), bad * rec);
    assert!(msg.contains(&at), "error names {at}: {msg}");
    assert!(msg.contains("truncate-corrupt-log"), "{msg}");
    // Refusing changed nothing: the file is intact for the operator.
    assert_eq!(
        std::fs::metadata(&seg).unwrap().len(),
        RECORDS * rec,
        "a refused open does not cut the log"
    );
    assert!(NativeStore::open(dir.path(), opts(false)).is_err());
}

#[test]
fn the_operator_option_truncates_at_the_damage_and_keeps_what_came_before() {
    let dir = tempfile::tempdir().unwrap();
    let (seg, rec) = write_segment(dir.path(), "k");
    let bad = 20;
    flip(&seg, bad * rec + 40);
    let s = NativeStore::open(dir.path(), opts(true)).unwrap();
    let d = s.recovery_report().damage.clone().expect("damage reported");
    assert_eq!(d.segment, seg);
    assert_eq!(d.offset, bad * rec);
    assert!(d.valid_records_dropped);
    assert_eq!(d.bytes_dropped, (RECORDS - bad) * rec);
    let got = present(&s, "k");
    assert!(got[..bad as usize].iter().all(|&p| p), "before the damage");
    assert!(got[bad as usize..].iter().all(|&p| !p), "after the damage");
    // The cut bytes are kept aside for forensics.
    let aside = PathBuf::from(format!("{}.from-{}.discarded", seg.display(), bad * rec));
    assert_eq!(
        std::fs::metadata(&aside).unwrap().len(),
        (RECORDS - bad) * rec
    );
    // The log is clean now: a normal open works and finds no damage.
    drop(s);
    let s = NativeStore::open(dir.path(), opts(false)).unwrap();
    assert_eq!(s.recovery_report().damage, None);
    assert_eq!(present(&s, "k")[..bad as usize], vec![true; bad as usize]);
}

#[test]
fn a_torn_last_record_is_cut_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let (seg, rec) = write_segment(dir.path(), "k");
    let last = RECORDS - 1;
    flip(&seg, last * rec + 50);
    let s = NativeStore::open(dir.path(), opts(false)).unwrap();
    let d = s
        .recovery_report()
        .damage
        .clone()
        .expect("torn tail reported");
    assert_eq!((d.segment.clone(), d.offset), (seg.clone(), last * rec));
    assert!(!d.valid_records_dropped);
    assert!(d.detail.contains("checksum"), "{}", d.detail);
    let got = present(&s, "k");
    assert!(got[..last as usize].iter().all(|&p| p));
    assert!(!got[last as usize]);
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), last * rec);
    // A record cut short (a crash mid-write) is a torn tail too.
    drop(s);
    let (seg2, rec2) = write_segment(dir.path(), "m");
    let f = std::fs::OpenOptions::new().write(true).open(&seg2).unwrap();
    f.set_len(RECORDS * rec2 - 7).unwrap();
    drop(f);
    let s = NativeStore::open(dir.path(), opts(false)).unwrap();
    assert_eq!(
        s.recovery_report().damage.as_ref().map(|d| d.offset),
        Some((RECORDS - 1) * rec2)
    );
    assert_eq!(present(&s, "m").iter().filter(|&&p| p).count(), 49);
}

#[test]
fn damage_in_a_segment_that_is_not_the_last_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let (first, rec) = write_segment(dir.path(), "a");
    let (second, _) = write_segment(dir.path(), "b");
    // Even the first segment's last record: the second holds valid records
    // (synced at close) that cutting there would silently discard.
    flip(&first, (RECORDS - 1) * rec + 30);
    let err = NativeStore::open(dir.path(), opts(false)).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("{} @ {}", first.display(), (RECORDS - 1) * rec)),
        "{msg}"
    );
    assert!(msg.contains(&second.display().to_string()), "{msg}");
    assert!(second.exists(), "the later segment was not touched");

    // With the option: cut, and the later segment set aside, not replayed.
    let s = NativeStore::open(dir.path(), opts(true)).unwrap();
    let d = s.recovery_report().damage.clone().unwrap();
    assert!(d.valid_records_dropped);
    assert_eq!(d.discarded.len(), 1);
    assert!(!second.exists() && d.discarded[0].exists());
    assert_eq!(
        present(&s, "a").iter().filter(|&&p| p).count() as u64,
        RECORDS - 1
    );
    assert!(present(&s, "b").iter().all(|&p| !p));
}

#[test]
fn a_segment_followed_only_by_empty_segments_is_still_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let (first, rec) = write_segment(dir.path(), "a");
    // An open and close with no writes leaves an empty later segment (as a
    // rotation just before a crash would).
    drop(NativeStore::open(dir.path(), opts(false)).unwrap());
    let files = NativeStore::log_files(dir.path());
    assert_eq!(files.len(), 2);
    assert_eq!(std::fs::metadata(&files[1]).unwrap().len(), 0);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&first)
        .unwrap();
    f.set_len(RECORDS * rec - 3).unwrap();
    drop(f);
    let s = NativeStore::open(dir.path(), opts(false)).unwrap();
    let d = s.recovery_report().damage.clone().unwrap();
    assert_eq!((d.segment, d.offset), (first, (RECORDS - 1) * rec));
    assert!(!d.valid_records_dropped);
    assert!(!files[1].exists(), "the empty later segment is removed");
    assert_eq!(
        present(&s, "a").iter().filter(|&&p| p).count() as u64,
        RECORDS - 1
    );
}
