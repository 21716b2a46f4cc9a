//! Replaying the commit log when the store opens, and deciding what damage
//! in it means.
//!
//! A crash can only tear the end of the log: records are appended in order,
//! so the damage a crash leaves has nothing valid after it. Damage followed
//! by a valid record (in the same segment or a later one) is something else
//! (media corruption, a bug, a file edited by hand) and cutting there would
//! throw away records that may have been synced and acknowledged. So:
//!
//! - damage with nothing valid after it, anywhere in the log, is a torn tail:
//!   the segment is cut there and later segments (empty, or holding no whole
//!   record) are removed or set aside, as before;
//! - damage with a valid record after it refuses to open, with an error
//!   naming the file and offset, unless the operator set
//!   [`crate::NativeOptions::truncate_corrupt_log`], which cuts there, sets
//!   the rest aside as `*.discarded` files and logs what was dropped.
//!
//! "Last segment" therefore means the last one holding a record: a segment
//! followed only by empty ones (a rotation just before the crash) is still
//! the log's tail.
//!
//! Known limit: records carry no position or per-segment salt, so a value
//! that itself contains a whole encoded record, torn by a crash inside the
//! record carrying it, looks like damage followed by a valid record and the
//! store refuses to open. That fails safe (nothing is dropped silently) and
//! the operator option recovers it; salting records would fix it at the cost
//! of a log format change.

use crate::format::{self, corruption};
use crate::log;
use crate::LogDamage;
use bytes::Bytes;
use cassio_core::{StoreError, Versioned};
use std::path::{Path, PathBuf};

/// What replaying the log found.
#[derive(Debug, Default)]
pub(crate) struct LogRecovery {
    /// Segments read.
    pub segments_replayed: usize,
    /// Records applied.
    pub records_replayed: u64,
    /// The damage found and cut, if any.
    pub damage: Option<LogDamage>,
    /// Segments kept, by id, with their (now synced) lengths.
    pub durable: Vec<(u64, u64)>,
}

/// `path` with `suffix` appended to its file name.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// The first valid record after the damage at `offset` in `path`, looking
/// through the rest of that segment and then the `later` ones.
fn valid_record_after(
    path: &Path,
    offset: u64,
    later: &[(u64, PathBuf)],
) -> Result<Option<(PathBuf, u64)>, StoreError> {
    let data = std::fs::read(path)?;
    let from = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .saturating_add(1);
    if let Some(at) = log::find_record(&data, from) {
        return Ok(Some((path.to_path_buf(), at as u64)));
    }
    for (_, p) in later {
        let data = std::fs::read(p)?;
        if let Some(at) = log::find_record(&data, 0) {
            return Ok(Some((p.clone(), at as u64)));
        }
    }
    Ok(None)
}

/// Replays `segments` (ascending ids) into `apply`, cutting a torn tail and
/// refusing (or, with `truncate_corrupt`, cutting) damage that valid records
/// follow. Every segment kept is fsynced before the store serves from it, so
/// what was replayed survives a later power cut.
pub(crate) fn recover_log(
    dir: &Path,
    segments: &[(u64, PathBuf)],
    truncate_corrupt: bool,
    mut apply: impl FnMut(Bytes, Versioned) -> Result<(), StoreError>,
) -> Result<LogRecovery, StoreError> {
    let mut out = LogRecovery::default();
    for (i, (id, path)) in segments.iter().enumerate() {
        let r = log::replay_segment(path, &mut apply)?;
        out.segments_replayed += 1;
        out.records_replayed += r.records;
        let Some((offset, detail)) = r.damage else {
            // The previous process may have died with these bytes only in
            // the page cache; make them as durable as what we now serve.
            std::fs::File::open(path)?.sync_all()?;
            out.durable.push((*id, r.len));
            continue;
        };
        let later = &segments[i + 1..];
        let valid_after = valid_record_after(path, offset, later)?;
        if let Some((vpath, voff)) = &valid_after {
            if !truncate_corrupt {
                return Err(corruption(
                    path,
                    offset,
                    format!(
                        "{detail}, but a valid record follows at {} @ {voff}: this is damage \
                         inside the commit log, not a torn tail. Refusing to open rather than \
                         drop records that may have been acknowledged; to cut the log here and \
                         lose everything after it, set truncate_corrupt_log \
                         (`cassio start --truncate-corrupt-log`)",
                        vpath.display()
                    ),
                ));
            }
        }
        let mut bytes_dropped = r.len - offset;
        if valid_after.is_some() && bytes_dropped > 0 {
            // Keep the cut bytes for forensics: they hold valid records.
            let data = std::fs::read(path)?;
            let from = usize::try_from(offset)
                .unwrap_or(data.len())
                .min(data.len());
            let aside = with_suffix(path, &format!(".from-{offset}.discarded"));
            std::fs::write(&aside, &data[from..])?;
            std::fs::File::open(&aside)?.sync_all()?;
        }
        let f = std::fs::OpenOptions::new().write(true).open(path)?;
        f.set_len(offset)?;
        f.sync_all()?;
        let mut discarded = Vec::new();
        for (_, later_path) in later {
            let n = std::fs::metadata(later_path)?.len();
            bytes_dropped += n;
            if n == 0 {
                std::fs::remove_file(later_path)?;
            } else {
                let to = with_suffix(later_path, ".discarded");
                std::fs::rename(later_path, &to)?;
                discarded.push(to);
            }
        }
        format::sync_dir(dir)?;
        if let Some((vpath, voff)) = &valid_after {
            tracing::warn!(
                file = %path.display(), offset, bytes_dropped,
                valid_record_at = %format!("{} @ {voff}", vpath.display()),
                later_segments_set_aside = ?discarded, %detail,
                "commit log damaged before valid records; truncate_corrupt_log is set, so it was \
                 cut at the damage and everything after it dropped (kept as *.discarded files)"
            );
        } else {
            tracing::warn!(
                file = %path.display(), offset, bytes_dropped, %detail,
                later_segments_set_aside = discarded.len(),
                "commit log had a torn tail; recovered the records before it"
            );
        }
        out.durable.push((*id, offset));
        out.damage = Some(LogDamage {
            segment: path.clone(),
            offset,
            detail,
            discarded,
            bytes_dropped,
            valid_records_dropped: valid_after.is_some(),
        });
        break;
    }
    Ok(out)
}
