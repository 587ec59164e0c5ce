//! Epochs: which writer owns the log, and which segments an old writer wrote too late.
//!
//! Each [`Wal::open`](super::Wal::open) claims the next epoch by creating the object
//! `<prefix>/epoch/<n>` (`n` zero-padded to 20 digits) with create-if-absent, after reading
//! the log. The object is an [`EpochRecord`]: for each older epoch whose segments that
//! recovery read, the highest sequence read. Two things follow:
//!
//! - **A superseded writer stops.** Before each segment, the writer lists `epoch/`; an epoch
//!   newer than its own means another driver took over, and the write fails with
//!   [`WalError::Fenced`](super::WalError::Fenced) (and so does every later one).
//! - **What slips past the check is not replayed.** The check and the write are two requests:
//!   a writer that checked, then stalled while a newer writer opened, can still write a
//!   segment afterwards. The newer writer did not read it, and its record says so: recovery
//!   ignores a segment of an older epoch above the sequence the newest record lists for that
//!   epoch (or of an older epoch it does not list), reports it once and lets
//!   [`Wal::truncate`](super::Wal::truncate) delete it. The stalled writer's append that wrote
//!   it may have returned `Ok`: those blocks are acknowledged but never replayed, the price of
//!   not replaying blocks the new driver never saw.
//!
//! Only the newest record is needed (each carries forward what the one before it admitted),
//! so an open deletes the epoch objects older than its own. The newest is never deleted, so
//! a listing always shows a stalled writer that it is superseded.

use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, PutMode, PutOptions};
use serde::{Deserialize, Serialize};

use super::{Result, WalError};

/// The folder of the epoch objects, under the log's prefix.
pub const EPOCH_DIR: &str = "epoch";
/// The version of [`EpochRecord`] this code writes and reads.
pub const EPOCH_VERSION: u32 = 1;

/// The object name (below [`EPOCH_DIR`]) of epoch `n`.
pub fn epoch_name(n: u64) -> String {
    format!("{n:020}")
}

/// The epoch of an object name below [`EPOCH_DIR`], when `name` is one.
pub fn parse_epoch_name(name: &str) -> Option<u64> {
    if name.len() != 20 || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse().ok()
}

/// The path of epoch `n`'s object in the log under `prefix`.
pub fn epoch_path(prefix: &Path, n: u64) -> Path {
    prefix.child(EPOCH_DIR).child(epoch_name(n))
}

/// What an epoch object holds: written once, when its writer opened the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpochRecord {
    /// The record's format version ([`EPOCH_VERSION`]).
    pub version: u32,
    /// The epoch.
    pub epoch: u64,
    /// When the writer opened the log (milliseconds since the Unix epoch), for operators.
    pub opened_at_ms: u64,
    /// For each older epoch with segments the opening writer's recovery read (and admitted),
    /// the highest sequence read. An older epoch missing here had none.
    pub read: Vec<EpochRead>,
}

/// The highest segment sequence of one older epoch that a newer writer read when opening.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpochRead {
    /// The older epoch (0 for segments of the unfenced format, `<seq>.seg`).
    pub epoch: u64,
    /// The highest sequence of that epoch that was read.
    pub last_seq: u64,
}

impl EpochRecord {
    /// Whether recovery replays segment `seq` of `epoch` under this (the newest) record: a
    /// segment of this epoch or a later one always; of an older epoch only when this record's
    /// writer read it at its open.
    pub fn admits(&self, epoch: u64, seq: u64) -> bool {
        epoch >= self.epoch
            || self
                .read
                .iter()
                .any(|r| r.epoch == epoch && seq <= r.last_seq)
    }
}

/// Reads epoch `n`'s record. A record that cannot be parsed stops the open: without it, which
/// segments are stale is unknown.
pub(super) async fn read(
    store: &Arc<dyn ObjectStore>,
    prefix: &Path,
    n: u64,
) -> Result<EpochRecord> {
    let path = epoch_path(prefix, n);
    let read_err = |e: object_store::Error| WalError::Read {
        path: path.to_string(),
        message: e.to_string(),
    };
    let bytes = match store.get(&path).await {
        Ok(got) => got.bytes().await.map_err(read_err)?,
        // Deleted since the listing: a newer writer opened and compacted the epochs.
        Err(object_store::Error::NotFound { .. }) => {
            return Err(WalError::Fenced {
                prefix: prefix.to_string(),
                epoch: n + 1,
                newer: n + 1,
            });
        }
        Err(e) => return Err(read_err(e)),
    };
    let bad = |message: String| WalError::BadEpoch {
        path: path.to_string(),
        message,
    };
    let record: EpochRecord = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    if record.version != EPOCH_VERSION || record.epoch != n {
        return Err(bad(format!(
            "it says version {} and epoch {}, but this sluice reads version {EPOCH_VERSION} and \
             the name says epoch {n}; it was written by a newer sluice, or damaged",
            record.version, record.epoch
        )));
    }
    Ok(record)
}

/// Creates `record`'s epoch object, create-if-absent. Finding it there means another writer
/// opened the log at the same moment and won: [`WalError::Fenced`].
pub(super) async fn claim(
    store: &Arc<dyn ObjectStore>,
    prefix: &Path,
    record: &EpochRecord,
) -> Result<Path> {
    let path = epoch_path(prefix, record.epoch);
    let body = serde_json::to_vec_pretty(record).map_err(|e| WalError::BadEpoch {
        path: path.to_string(),
        message: e.to_string(),
    })?;
    let opts = PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    };
    match store.put_opts(&path, body.into(), opts).await {
        Ok(_) => Ok(path),
        Err(object_store::Error::AlreadyExists { .. }) => Err(WalError::Fenced {
            prefix: prefix.to_string(),
            epoch: record.epoch,
            newer: record.epoch,
        }),
        Err(e) => Err(WalError::Write {
            path: path.to_string(),
            message: e.to_string(),
        }),
    }
}

/// The epochs claimed in the log, by one listing of `epoch/`, in no particular order.
pub(super) async fn list(store: &Arc<dyn ObjectStore>, prefix: &Path) -> Result<Vec<u64>> {
    let dir = prefix.child(EPOCH_DIR);
    let metas: Vec<_> = store
        .list(Some(&dir))
        .try_collect()
        .await
        .map_err(|e| WalError::List {
            prefix: dir.to_string(),
            message: e.to_string(),
        })?;
    Ok(metas
        .iter()
        .filter_map(|m| parse_epoch_name(m.location.filename()?))
        .collect())
}

/// The fence check, before each segment: fails with [`WalError::Fenced`] when an epoch newer
/// than `mine` is claimed.
pub(super) async fn check(store: &Arc<dyn ObjectStore>, prefix: &Path, mine: u64) -> Result<()> {
    match list(store, prefix).await?.into_iter().max() {
        Some(newer) if newer > mine => Err(WalError::Fenced {
            prefix: prefix.to_string(),
            epoch: mine,
            newer,
        }),
        _ => Ok(()),
    }
}

/// Deletes the epoch objects in `listed` below `mine`, once `mine` is claimed: only the
/// newest record is read. A failure is logged and left for the next open.
pub(super) async fn delete_older(
    store: &Arc<dyn ObjectStore>,
    prefix: &Path,
    listed: &[u64],
    mine: u64,
) {
    for &n in listed.iter().filter(|&&n| n < mine) {
        let path = epoch_path(prefix, n);
        match store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => {
                tracing::warn!(object = %path, error = %e, "An old WAL epoch object could not be deleted; the next open tries again.");
            }
        }
    }
}

/// Milliseconds since the Unix epoch, for [`EpochRecord::opened_at_ms`].
pub(super) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
