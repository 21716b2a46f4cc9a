//! The file in the data directory that holds what the core persists besides
//! data ([`cassio_core::PersistedState`]: the membership view and the clock's
//! high-water mark). Written atomically (temporary file, fsync, rename,
//! fsync of the directory), so a crash leaves the old state or the new one,
//! never a torn one; the core's checksum refuses a damaged file.

use cassio_core::persist::{PersistError, PersistedState};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The file's name inside the data directory.
pub const FILE_NAME: &str = "node-state";

/// Why the persisted state could not be read.
#[derive(Debug, thiserror::Error)]
pub enum NodeStateError {
    /// The file exists but could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is damaged or of another format. The node refuses to start
    /// rather than guess its view; delete the file to start as if the view
    /// were lost (the node then coordinates without waiting for a majority).
    #[error("{path} is unusable ({source}); move it away to start without the persisted view")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: PersistError,
    },
}

/// The persisted-state file of one data directory.
#[derive(Clone, Debug)]
pub struct NodeStateFile {
    path: PathBuf,
}

impl NodeStateFile {
    /// The state file inside `data_dir`.
    pub fn in_dir(data_dir: &Path) -> Self {
        NodeStateFile {
            path: data_dir.join(FILE_NAME),
        }
    }

    /// Where it lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The persisted state, or `None` if none was ever written.
    pub fn load(&self) -> Result<Option<PersistedState>, NodeStateError> {
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(NodeStateError::Read {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        PersistedState::decode(&bytes)
            .map(Some)
            .map_err(|source| NodeStateError::Corrupt {
                path: self.path.clone(),
                source,
            })
    }

    /// Replaces the persisted state, durably and atomically.
    pub fn save(&self, state: &PersistedState) -> std::io::Result<()> {
        let tmp = self.path.with_extension("tmp");
        {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            f.write_all(&state.encode())?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            // The rename is durable only once the directory is synced.
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_loads_and_refuses_damage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = NodeStateFile::in_dir(dir.path());
        assert!(f.load().expect("no file is fine").is_none());
        let state = PersistedState {
            clock_high_water: 42,
            generation: 7,
            members: Vec::new(),
            alive_micros: 1_700_000_000_000_000,
            ..Default::default()
        };
        f.save(&state).expect("save");
        assert_eq!(f.load().expect("load"), Some(state));
        let mut bytes = fs::read(f.path()).expect("read");
        bytes[1] ^= 1;
        fs::write(f.path(), bytes).expect("write");
        assert!(matches!(f.load(), Err(NodeStateError::Corrupt { .. })));
    }

    #[test]
    fn a_state_of_the_old_format_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = NodeStateFile::in_dir(dir.path());
        let state = PersistedState {
            clock_high_water: 1,
            generation: 1,
            members: Vec::new(),
            alive_micros: 0,
            ..Default::default()
        };
        f.save(&state).expect("save");
        // Format 1 laid keys out in another order; its files start with a
        // 1 (and carry a valid checksum).
        let mut bytes = fs::read(f.path()).expect("read");
        let body_len = bytes.len() - 8;
        bytes[0] = 1;
        let sum = xxhash_rust::xxh3::xxh3_64(&bytes[..body_len]).to_le_bytes();
        bytes[body_len..].copy_from_slice(&sum);
        fs::write(f.path(), bytes).expect("write");
        let e = f.load().expect_err("format 1 is refused");
        assert!(
            matches!(
                e,
                NodeStateError::Corrupt {
                    source: PersistError::Format { got: 1, .. },
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("start this node empty"), "{e}");
    }
}
