//! The manifest: which tables are live and which log segments still need
//! replaying. It is replaced atomically (write a temporary file, fsync it,
//! rename it over the old one, fsync the directory), so after a crash it is
//! either the old or the new version, never a mix.

use crate::format::{self, corruption, get_u32, get_u64};
use cassio_core::StoreError;
use std::io::Write;
use std::path::Path;

/// Identifies a manifest ("CASSIOMF").
const MAGIC: u64 = u64::from_le_bytes(*b"CASSIOMF");
/// The manifest format version.
const VERSION: u32 = 1;
/// File name of the live manifest.
pub(crate) const NAME: &str = "MANIFEST";
/// File name the next manifest is written under before the rename.
const TMP_NAME: &str = "MANIFEST.tmp";

/// The durable description of the store's files.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Manifest {
    /// Ids below this are never handed out again.
    pub next_id: u64,
    /// Log segments with ids below this are already in tables.
    pub log_start: u64,
    /// Live table ids, oldest data first.
    pub tables: Vec<u64>,
}

impl Manifest {
    fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(32 + 8 * self.tables.len());
        b.extend_from_slice(&MAGIC.to_le_bytes());
        b.extend_from_slice(&VERSION.to_le_bytes());
        b.extend_from_slice(&self.next_id.to_le_bytes());
        b.extend_from_slice(&self.log_start.to_le_bytes());
        b.extend_from_slice(&(self.tables.len() as u32).to_le_bytes());
        for t in &self.tables {
            b.extend_from_slice(&t.to_le_bytes());
        }
        let c = format::crc(&b);
        b.extend_from_slice(&c.to_le_bytes());
        b
    }

    fn decode(b: &[u8], path: &Path) -> Result<Self, StoreError> {
        let bad = |d: &str| corruption(path, 0, d.to_string());
        if b.len() < 36 {
            return Err(bad("manifest is truncated"));
        }
        let body = b.len() - 4;
        if get_u32(b, body) != Some(format::crc(&b[..body])) {
            return Err(bad("manifest checksum mismatch"));
        }
        if get_u64(b, 0) != Some(MAGIC) {
            return Err(bad("bad manifest magic number"));
        }
        let version = get_u32(b, 8).unwrap_or(0);
        if version != VERSION {
            return Err(bad(&format!("unsupported manifest version {version}")));
        }
        let next_id = get_u64(b, 12).ok_or_else(|| bad("truncated"))?;
        let log_start = get_u64(b, 20).ok_or_else(|| bad("truncated"))?;
        let n = get_u32(b, 28).ok_or_else(|| bad("truncated"))? as usize;
        if body != 32 + 8 * n {
            return Err(bad("table count does not match the manifest length"));
        }
        let tables = (0..n)
            .map(|i| get_u64(b, 32 + 8 * i).ok_or_else(|| bad("truncated")))
            .collect::<Result<_, _>>()?;
        Ok(Manifest {
            next_id,
            log_start,
            tables,
        })
    }

    /// Reads the manifest in `dir`; `None` for a new store.
    pub(crate) fn load(dir: &Path) -> Result<Option<Self>, StoreError> {
        let path = dir.join(NAME);
        match std::fs::read(&path) {
            Ok(b) => Self::decode(&b, &path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Atomically replaces the manifest in `dir` with `self`.
    pub(crate) fn store(&self, dir: &Path) -> Result<(), StoreError> {
        let tmp = dir.join(TMP_NAME);
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&self.encode())?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, dir.join(NAME))?;
        format::sync_dir(dir)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_detects_damage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Manifest::load(dir.path()).unwrap(), None);
        let m = Manifest {
            next_id: 9,
            log_start: 7,
            tables: vec![3, 5, 6],
        };
        m.store(dir.path()).unwrap();
        assert_eq!(Manifest::load(dir.path()).unwrap(), Some(m.clone()));
        let path = dir.path().join(NAME);
        let mut b = std::fs::read(&path).unwrap();
        b[20] ^= 1;
        std::fs::write(&path, &b).unwrap();
        assert!(matches!(
            Manifest::load(dir.path()),
            Err(StoreError::Corruption { .. })
        ));
        std::fs::write(&path, &b[..10]).unwrap();
        assert!(matches!(
            Manifest::load(dir.path()),
            Err(StoreError::Corruption { .. })
        ));
    }
}
