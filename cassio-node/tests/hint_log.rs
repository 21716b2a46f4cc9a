//! The node's hint logs pass the hint log conformance suite: the disk log
//! (general and durability cases, with the default 8 MiB segments and with
//! small ones so every case crosses segment boundaries) and the in-memory
//! log of nodes built without a data directory (general cases).

use cassio_core::{NodeId, StoreError};
use cassio_node::hint_log::{DiskHintLog, MemoryHintLog};
use conformance::hint_log::{DurableHintLogHarness, HintLogHarness};
use std::path::{Path, PathBuf};

/// The disk log as `cassio start` opens it.
struct Disk;

impl HintLogHarness for Disk {
    type Log = DiskHintLog;
    fn open(dir: &Path) -> Result<DiskHintLog, StoreError> {
        DiskHintLog::open(dir)
    }
}

impl DurableHintLogHarness for Disk {
    fn segment_files(dir: &Path, target: NodeId) -> Vec<PathBuf> {
        DiskHintLog::segment_files(dir, target)
    }
    fn crash(log: DiskHintLog) {
        // A killed process runs no destructor.
        std::mem::forget(log);
    }
}

mod default_segments {
    use super::Disk;
    conformance::hint_log_tests!(Disk);
    conformance::durable_hint_log_tests!(Disk);
}

/// The disk log rolling every 64 KiB.
struct SmallSegments;

impl HintLogHarness for SmallSegments {
    type Log = DiskHintLog;
    fn open(dir: &Path) -> Result<DiskHintLog, StoreError> {
        DiskHintLog::open_with(dir, 64 * 1024)
    }
}

impl DurableHintLogHarness for SmallSegments {
    fn segment_files(dir: &Path, target: NodeId) -> Vec<PathBuf> {
        DiskHintLog::segment_files(dir, target)
    }
    fn crash(log: DiskHintLog) {
        std::mem::forget(log);
    }
}

mod small_segments {
    use super::SmallSegments;
    conformance::hint_log_tests!(SmallSegments);
    conformance::durable_hint_log_tests!(SmallSegments);
}

/// The in-memory log.
struct Memory;

impl HintLogHarness for Memory {
    type Log = MemoryHintLog;
    fn open(_dir: &Path) -> Result<MemoryHintLog, StoreError> {
        Ok(MemoryHintLog::new())
    }
}

mod memory {
    use super::Memory;
    conformance::hint_log_tests!(Memory);
}

/// `cassio start` opens the hint log in `<data_dir>/hints`, and a hint
/// directory it cannot open stops the start with an error that says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launch_opens_the_hint_log_in_the_data_dir() {
    use cassio_node::config::{RawSettings, Settings};
    use cassio_node::launch::{launch, LaunchError};
    let settings = |data: &Path| {
        let mut raw = RawSettings::default();
        raw.set("cluster", "hints");
        raw.set("listen", "127.0.0.1:0");
        raw.set("client_addr", "off");
        raw.set("resp_addr", "off");
        raw.set("http_addr", "off");
        raw.set("data_dir", data.display().to_string());
        Settings::from_raw(&raw).expect("settings")
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let launched = launch(&settings(&data)).await.expect("launch");
    assert!(
        data.join(cassio_node::hint_log::DIR_NAME).is_dir(),
        "the hint directory is created at start"
    );
    launched.shutdown(false).await.expect("shutdown");

    let blocked = dir.path().join("blocked");
    std::fs::create_dir_all(&blocked).expect("mkdir");
    std::fs::write(
        blocked.join(cassio_node::hint_log::DIR_NAME),
        "not a directory",
    )
    .expect("write");
    let e = launch(&settings(&blocked))
        .await
        .expect_err("launch must fail");
    assert!(matches!(e, LaunchError::Hints { .. }), "{e}");
}
