//! The checkpoint log: one object per batch, `<checkpoint.path>/checkpoint/<batch>.json`, the
//! record of what each batch is made of, written when the batch closes and **before** its sinks
//! commit.
//!
//! An [`Entry`] holds the format version, the batch id and time, per partition the offsets of
//! the batch's first and next records and where the source stood ([`Position`]: for files, the
//! byte ranges read; for Event Hubs, the last offset and sequence number), the write-ahead-log
//! positions still needed, the digest of every plugin the batch ran with, and room for state
//! snapshot references. Plain, versioned data, never code: an entry stays valid when plugins
//! change, and a restart recomputes an unfinished batch from exactly the same records with the
//! same plugin digests.
//!
//! Writes are create-if-absent only (`PutMode::Create`: local files, Azure Blob and S3 all have
//! it). Batches commit in order, so entry N+1 exists only once batch N has committed: after a
//! crash only the newest entry's batch can be unfinished. The writer that creates an entry first
//! wins; a driver that finds the next entry already written has been superseded by another one
//! and stops ([`CheckpointError::Fenced`]) without touching anything more.
//!
//! Old entries are deleted as new ones come ([`CheckpointLog::compact`]); an entry whose batch
//! number is a multiple of [`SNAPSHOT_EVERY`] carries the whole set of files the files source
//! has read, so the entries before the previous such one are not needed. A damaged entry is
//! reported with its location, moved aside for inspection, and the one before it is used.

use std::collections::BTreeMap;

use object_store::{PutMode, PutOptions, PutPayload};

pub mod history;
pub mod show;
use serde::{Deserialize, Serialize};

use crate::batch::position::Position;
use crate::dedup::SeenIds;
use crate::store::Location;

/// The entry format this host writes and reads.
pub const VERSION: u32 = 2;

/// Every this many batches an entry carries the whole set of files read (a snapshot), and the
/// entries older than the snapshot before it are deleted.
pub const SNAPSHOT_EVERY: u64 = 64;

/// One batch, as recorded when it closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// The format, [`VERSION`].
    pub version: u32,
    /// The batch id.
    pub batch: u64,
    /// The batch time (the end of its interval), ms since the epoch.
    pub batch_time_ms: i64,
    /// When the entry was written, ms since the epoch.
    pub written_ms: i64,
    /// Per source partition, what the batch holds.
    pub partitions: Vec<PartitionEntry>,
    /// Reliable mode: per partition, the first offset the write-ahead log must still keep (the
    /// batch's start: the batch is replayed from the log if it did not commit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_keep_from: Option<Vec<u64>>,
    /// The sha256 of every plugin the batch ran with, by name.
    pub plugins: BTreeMap<String, String>,
    /// References to keyed-state snapshots (none yet).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub state: Vec<String>,
    /// Every [`SNAPSHOT_EVERY`] batches, for the files source: every file read to its end by
    /// this batch and the ones before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files_seen: Option<Vec<String>>,
    /// Duplicate detection (reliable AMQP with message ids): the message ids this batch added
    /// to the window, and every [`SNAPSHOT_EVERY`] batches the whole window. Absent in entries
    /// written without detection, which read as adding nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen_ids: Option<SeenIds>,
    /// Per step (index of the pipeline's `[[transform]]`, from 0), the parameters its plugin
    /// ran with when they were not those the pipeline file gives it (a swap with new
    /// parameters): a recompute uses them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: StepParams,
    /// What happened to the plugin versions while the batch ran: a new version rolled back,
    /// or passing its trial (absent when nothing did).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<SwapEvent>,
}

/// Parameters by step index.
pub type StepParams = BTreeMap<usize, BTreeMap<String, String>>;

/// A plugin version's verdict, recorded in the entry of the batch it came in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case", deny_unknown_fields)]
pub enum SwapEvent {
    /// A new version failed on trial and was rolled back; the batch ran on `restored`.
    RolledBack {
        /// The plugin.
        plugin: String,
        /// The sha256 of the version that failed (now quarantined).
        digest: String,
        /// The sha256 of the version restored.
        restored: String,
        /// The failure.
        error: String,
    },
    /// A new version ran its trial batches without failing.
    Passed {
        /// The plugin.
        plugin: String,
        /// The sha256 of the version.
        digest: String,
        /// How many batches it was on trial.
        batches: u32,
    },
    /// A candidate ran in the shadow of the live version and its output was compared.
    Shadowed {
        /// The plugin.
        plugin: String,
        /// The sha256 of the candidate.
        digest: String,
        /// The sha256 of the live version it was compared with.
        live: String,
        /// How many batches were compared.
        batches: u32,
        /// How many of them differed (record counts or records).
        differing: u32,
        /// The candidate's failure, which ended the shadow early.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        failed: Option<String>,
    },
}

/// One partition of a batch: records `start..end`, and where the source stood.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionEntry {
    /// The offset of the batch's first record in this partition.
    pub start: u64,
    /// The offset after its last record.
    pub end: u64,
    /// The files source: the byte ranges the records came from, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ranges: Vec<Position>,
    /// Where the source stood after the batch's last record (carried over from the batch
    /// before when this one took nothing from the partition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<Position>,
}

impl Entry {
    /// The files this batch read to their end.
    pub fn files_done(&self) -> impl Iterator<Item = &str> {
        self.partitions
            .iter()
            .flat_map(|p| &p.ranges)
            .filter_map(|r| match r {
                Position::File {
                    file, done: true, ..
                } => Some(file.as_str()),
                _ => None,
            })
    }
}

/// The checkpoint log could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The store failed.
    #[error("checkpoint {location}: {message}")]
    Store {
        /// The object or prefix.
        location: String,
        /// What failed.
        message: String,
    },
    /// An entry is not one this host can use.
    #[error("checkpoint entry {location} is damaged or of another format: {message}")]
    Damaged {
        /// The object.
        location: String,
        /// Why.
        message: String,
    },
    /// Another driver wrote this entry first: this one has been superseded.
    #[error(
        "fenced: another driver committed {location} first; this driver stops and touches nothing more"
    )]
    Fenced {
        /// The entry that already existed.
        location: String,
    },
}

/// A `Result` with [`CheckpointError`].
pub type Result<T> = std::result::Result<T, CheckpointError>;

/// What [`CheckpointLog::recover`] found.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The newest readable entry: its batch is the only one that may not have committed.
    pub last: Option<Entry>,
    /// The entry before it (where a recomputed batch starts).
    pub before: Option<Entry>,
    /// The files read to their end by every batch up to `before` (inclusive).
    pub seen_before: std::collections::HashSet<String>,
    /// Damaged entries, with their location and what is wrong (moved aside).
    pub problems: Vec<String>,
    /// The batches whose entries were damaged.
    pub damaged: Vec<u64>,
    /// Duplicate detection: from the newest entry holding the whole window of message ids up
    /// to `last`, oldest first, each entry's batch time and ids.
    pub ids: Vec<(i64, Option<SeenIds>)>,
}

/// The checkpoint log under one location.
#[derive(Debug, Clone)]
pub struct CheckpointLog {
    at: Location,
}

impl CheckpointLog {
    /// The log under `at` (`[checkpoint] path`).
    pub fn new(at: Location) -> Self {
        CheckpointLog { at }
    }

    /// Where it is.
    pub fn location(&self) -> &Location {
        &self.at
    }

    fn path(&self, batch: u64) -> object_store::path::Path {
        self.at.child(&format!("checkpoint/{batch:020}.json"))
    }

    /// The entry's location, for messages.
    pub fn describe(&self, batch: u64) -> String {
        format!("{}/checkpoint/{batch:020}.json", self.at)
    }

    fn store_err(&self, what: String) -> impl FnOnce(object_store::Error) -> CheckpointError {
        move |e| CheckpointError::Store {
            location: what,
            message: e.to_string(),
        }
    }

    /// The batch numbers of every entry, oldest first.
    pub async fn list(&self) -> Result<Vec<u64>> {
        self.at
            .numbered("checkpoint")
            .await
            .map_err(self.store_err(format!("{}/checkpoint", self.at)))
    }

    /// Reads the entry of `batch`.
    pub async fn read(&self, batch: u64) -> Result<Entry> {
        let location = self.describe(batch);
        let bytes = self
            .at
            .store
            .get(&self.path(batch))
            .await
            .map_err(self.store_err(location.clone()))?
            .bytes()
            .await
            .map_err(self.store_err(location.clone()))?;
        let entry: Entry =
            serde_json::from_slice(&bytes).map_err(|e| CheckpointError::Damaged {
                location: location.clone(),
                message: format!("{e} ({} bytes)", bytes.len()),
            })?;
        if entry.version != VERSION || entry.batch != batch {
            return Err(CheckpointError::Damaged {
                location,
                message: format!(
                    "version {} of batch {}; this host reads version {VERSION} and expected batch {batch}",
                    entry.version, entry.batch
                ),
            });
        }
        Ok(entry)
    }

    /// Writes `entry`, create-if-absent. An entry already there means another driver wrote it:
    /// [`CheckpointError::Fenced`].
    pub async fn append(&self, entry: &Entry) -> Result<()> {
        let body = serde_json::to_vec_pretty(entry).expect("an entry serializes");
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .at
            .store
            .put_opts(&self.path(entry.batch), PutPayload::from(body), opts)
            .await
        {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => Err(CheckpointError::Fenced {
                location: self.describe(entry.batch),
            }),
            Err(e) => Err(self.store_err(self.describe(entry.batch))(e)),
        }
    }

    /// Finds where to resume: the newest readable entry, the one before it, and the files
    /// read by the batches up to that one. A damaged entry is reported, moved aside
    /// (`<name>.damaged`) and skipped: the one before it is used, never silently.
    pub async fn recover(&self) -> Result<Recovered> {
        let batches = self.list().await?;
        let mut found = Recovered::default();
        let mut readable: Vec<Entry> = Vec::new();
        for &b in batches.iter().rev() {
            match self.read(b).await {
                Ok(e) => {
                    readable.push(e);
                    // Need the newest two, then entries back to a snapshot for the files or
                    // the message ids.
                    if readable.len() >= 2
                        && readable.last().is_some_and(|e| {
                            e.files_seen.is_some() || e.seen_ids.as_ref().is_some_and(|s| s.full)
                        })
                    {
                        break;
                    }
                }
                Err(CheckpointError::Damaged { location, message }) => {
                    self.move_aside(b).await;
                    found.damaged.push(b);
                    found
                        .problems
                        .push(format!("{location}: {message}; moved aside as .damaged"));
                }
                Err(e) => return Err(e),
            }
        }
        let from = readable
            .iter()
            .position(|e| e.seen_ids.as_ref().is_some_and(|s| s.full))
            .unwrap_or(readable.len().saturating_sub(1));
        found.ids = readable
            .iter()
            .take(from + 1)
            .rev()
            .map(|e| (e.batch_time_ms, e.seen_ids.clone()))
            .collect();
        let mut it = readable.into_iter();
        found.last = it.next();
        let older: Vec<Entry> = it.collect();
        // `older` runs newest first: `before`, then back to a snapshot.
        for e in older.iter().rev() {
            if let Some(all) = &e.files_seen {
                found.seen_before = all.iter().cloned().collect();
            }
            found.seen_before.extend(e.files_done().map(str::to_owned));
        }
        found.before = older.into_iter().next();
        Ok(found)
    }

    async fn move_aside(&self, batch: u64) {
        let from = self.path(batch);
        let to = self
            .at
            .child(&format!("checkpoint/{batch:020}.json.damaged"));
        if let Err(e) = self.at.store.rename(&from, &to).await {
            tracing::warn!(entry = %self.describe(batch), error = %e, "A damaged checkpoint entry could not be moved aside.");
        }
    }

    /// Deletes the entries older than `batch`.
    pub async fn compact(&self, batch: u64) -> Result<usize> {
        let mut deleted = 0;
        for b in self.list().await? {
            if b >= batch {
                break;
            }
            match self.at.store.delete(&self.path(b)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => deleted += 1,
                Err(e) => return Err(self.store_err(self.describe(b))(e)),
            }
        }
        Ok(deleted)
    }

    /// Deletes every entry (`run --from-scratch`).
    pub async fn clear(&self) -> Result<usize> {
        self.compact(u64::MAX).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn here(dir: &std::path::Path) -> CheckpointLog {
        CheckpointLog::new(
            Location::resolve(dir.to_str().unwrap(), "checkpoint.path", dir, true).unwrap(),
        )
    }

    fn entry(batch: u64, files: &[(&str, bool)]) -> Entry {
        Entry {
            version: VERSION,
            batch,
            batch_time_ms: 1000 * batch as i64,
            written_ms: 0,
            partitions: vec![PartitionEntry {
                start: batch * 10,
                end: batch * 10 + 10,
                ranges: files
                    .iter()
                    .map(|(f, done)| Position::File {
                        file: (*f).to_owned(),
                        from: 0,
                        to: 5,
                        done: *done,
                    })
                    .collect(),
                last: None,
            }],
            wal_keep_from: None,
            plugins: BTreeMap::from([("uppercase".to_owned(), "ab".repeat(32))]),
            state: vec![],
            files_seen: batch.is_multiple_of(SNAPSHOT_EVERY).then(Vec::new),
            seen_ids: None,
            params: BTreeMap::new(),
            events: vec![],
        }
    }

    #[tokio::test]
    async fn entries_append_once_and_a_second_writer_is_fenced() {
        let tmp = tempfile::tempdir().unwrap();
        let log = here(tmp.path());
        log.append(&entry(0, &[])).await.unwrap();
        log.append(&entry(1, &[("a", true)])).await.unwrap();
        let e = log.append(&entry(1, &[])).await.unwrap_err();
        assert!(matches!(e, CheckpointError::Fenced { .. }), "{e}");
        assert!(e.to_string().contains("00000000000000000001.json"), "{e}");
        assert_eq!(log.read(1).await.unwrap(), entry(1, &[("a", true)]));
        assert_eq!(log.list().await.unwrap(), vec![0, 1]);
    }

    #[tokio::test]
    async fn recovery_finds_the_newest_entry_the_one_before_and_the_files_read() {
        let tmp = tempfile::tempdir().unwrap();
        let log = here(tmp.path());
        assert!(log.recover().await.unwrap().last.is_none());
        log.append(&entry(0, &[("a", true)])).await.unwrap();
        log.append(&entry(1, &[("b", true), ("c", false)]))
            .await
            .unwrap();
        log.append(&entry(2, &[("c", true), ("d", true)]))
            .await
            .unwrap();
        let r = log.recover().await.unwrap();
        assert_eq!(r.last.as_ref().map(|e| e.batch), Some(2));
        assert_eq!(r.before.as_ref().map(|e| e.batch), Some(1));
        let mut seen: Vec<_> = r.seen_before.into_iter().collect();
        seen.sort();
        assert_eq!(seen, ["a", "b"], "batch 2's files are not in `seen_before`");
        assert!(r.problems.is_empty());
    }

    #[tokio::test]
    async fn a_damaged_newest_entry_is_reported_moved_aside_and_the_one_before_is_used() {
        let tmp = tempfile::tempdir().unwrap();
        let log = here(tmp.path());
        for b in 0..3 {
            log.append(&entry(b, &[])).await.unwrap();
        }
        let newest = tmp.path().join("checkpoint/00000000000000000002.json");
        let text = std::fs::read(&newest).unwrap();
        std::fs::write(&newest, &text[..text.len() / 2]).unwrap();
        let r = log.recover().await.unwrap();
        assert_eq!(r.last.as_ref().map(|e| e.batch), Some(1));
        assert_eq!(r.problems.len(), 1);
        assert!(
            r.problems[0].contains("00000000000000000002.json") && r.problems[0].contains("EOF"),
            "{:?}",
            r.problems
        );
        assert!(!newest.exists() && newest.with_extension("json.damaged").exists());
        // Batch 2 can be written again.
        log.append(&entry(2, &[])).await.unwrap();
    }

    #[tokio::test]
    async fn recovery_gives_the_message_ids_from_the_newest_whole_window_on() {
        use crate::dedup::{IdGroup, SeenIds};
        let tmp = tempfile::tempdir().unwrap();
        let log = here(tmp.path());
        let ids = |full: bool, b: u64| SeenIds {
            full,
            groups: vec![IdGroup {
                time_ms: b as i64,
                ids: format!("{b}"),
            }],
        };
        for b in 0..6 {
            let mut e = entry(b, &[]);
            // An entry from before duplicate detection (batch 1) has no ids and stays readable.
            e.seen_ids = (b != 1).then(|| ids(b == 0 || b == 3, b));
            log.append(&e).await.unwrap();
        }
        let r = log.recover().await.unwrap();
        let got: Vec<(i64, Option<SeenIds>)> = r.ids;
        assert_eq!(
            got,
            vec![
                (3000, Some(ids(true, 3))),
                (4000, Some(ids(false, 4))),
                (5000, Some(ids(false, 5)))
            ]
        );
        assert!(r.last.unwrap().seen_ids.is_some());
    }

    #[tokio::test]
    async fn compaction_deletes_only_older_entries() {
        let tmp = tempfile::tempdir().unwrap();
        let log = here(tmp.path());
        for b in 0..5 {
            log.append(&entry(b, &[])).await.unwrap();
        }
        assert_eq!(log.compact(3).await.unwrap(), 3);
        assert_eq!(log.list().await.unwrap(), vec![3, 4]);
    }
}
