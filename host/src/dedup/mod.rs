//! Duplicate detection by message id, as Azure Service Bus does it: a bounded window of the ids
//! seen recently (at most `duplicate-ids` of them, none older than `duplicate-detection`); a
//! record whose id is in the window is a redelivery and is dropped before it enters a block.
//!
//! Two windows, with different jobs:
//! - the [`Filter`] is the receivers' live window: every id appended to a partition buffer
//!   joins it at once, so a redelivery is dropped however soon it comes (after a reconnect in
//!   the same run, or after a restart);
//! - the [`Recorder`] is the committed window: the ids of the blocks of every batch up to the
//!   one closing, and nothing else. Its change (a delta: the ids the batch added) goes into the
//!   batch's checkpoint entry, and every `SNAPSHOT_EVERY` batches the whole window does
//!   ([`SeenIds`]); [`Window::rebuild`] replays them after a restart.
//!
//! After a restart the live window is the committed one plus the ids of every block replayed
//! from the write-ahead log (those records will be output, and their deliveries may not have
//! been accepted), before any new delivery is let in. Ids are kept as the first 16 bytes of
//! their SHA-256, so the window's memory is bounded whatever the ids' length: about 50 bytes an
//! id, 5 MB per window of 100,000.
//!
//! The id of a record is its `amqp.message-id` header ([`ID_HEADER`]; the AMQP receiver writes
//! it, `receiver/amqp/body.rs`), read from the record itself, so a record replayed from the
//! write-ahead log gives the same id as when it was received. The id's AMQP type is not part of
//! it: the string id `"42"` and the ulong id 42 are the same id here.

mod filter;

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::batch::RecordBatch;

pub use filter::{Counts, Filter, Recorder};

/// The header holding a record's message id.
pub const ID_HEADER: &[u8] = b"amqp.message-id";

/// The default window: ids seen in the last 10 minutes (Azure Service Bus's default).
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(600);

/// The default bound on the ids kept.
pub const DEFAULT_MAX_IDS: usize = 100_000;

/// A message id as kept: the first 16 bytes of its SHA-256.
pub type IdHash = [u8; 16];

/// How long and how many ids are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// An id older than this is forgotten (`duplicate-detection`).
    pub window: Duration,
    /// At most this many ids are kept, the oldest forgotten first (`duplicate-ids`).
    pub max_ids: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            window: DEFAULT_WINDOW,
            max_ids: DEFAULT_MAX_IDS,
        }
    }
}

/// What a source does about redeliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detection {
    /// Redeliveries are only counted (no ids, or detection turned off).
    Count,
    /// Records with an id already in the window are dropped; redeliveries are counted too.
    ById(Settings),
}

/// The checkpointed ids could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DedupError {
    /// A group's ids are not base64 of 16-byte digests.
    #[error("the message ids recorded for batch time {time_ms} are damaged: {message}")]
    Damaged {
        /// The group's batch time.
        time_ms: i64,
        /// What is wrong.
        message: String,
    },
}

/// A `Result` with [`DedupError`].
pub type Result<T> = std::result::Result<T, DedupError>;

/// The id of record `i` of `records`: the digest of its `message-id` header, if it has one.
pub fn id_of(records: &RecordBatch, i: usize) -> Option<IdHash> {
    let (_, id) = records.headers_of(i).find(|(k, _)| *k == ID_HEADER)?;
    let digest = Sha256::digest(id);
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    Some(out)
}

/// The ids of a checkpoint entry: a delta (the ids its batch added) or the whole window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeenIds {
    /// Whether `groups` is the whole window after the batch (else only what it added).
    pub full: bool,
    /// The ids, oldest first, grouped by the batch time they joined at.
    pub groups: Vec<IdGroup>,
}

/// Ids that joined the window at one batch time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdGroup {
    /// The batch time, ms since the epoch.
    pub time_ms: i64,
    /// The 16-byte id digests back to back, in base64.
    pub ids: String,
}

impl IdGroup {
    fn new(time_ms: i64, ids: &[IdHash]) -> IdGroup {
        IdGroup {
            time_ms,
            ids: base64::engine::general_purpose::STANDARD.encode(ids.concat()),
        }
    }

    fn decode(&self) -> Result<Vec<IdHash>> {
        let damaged = |message: String| DedupError::Damaged {
            time_ms: self.time_ms,
            message,
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&self.ids)
            .map_err(|e| damaged(e.to_string()))?;
        if !bytes.len().is_multiple_of(16) {
            return Err(damaged(format!(
                "{} bytes, not a multiple of 16",
                bytes.len()
            )));
        }
        Ok(bytes
            .chunks_exact(16)
            .map(|c| c.try_into().expect("16 bytes"))
            .collect())
    }
}

/// A bounded window of ids: oldest first, none older than the window, at most `max_ids`.
#[derive(Debug, Clone)]
pub struct Window {
    settings: Settings,
    order: VecDeque<(i64, IdHash)>,
    ids: HashSet<IdHash>,
}

impl Window {
    /// An empty window.
    pub fn new(settings: Settings) -> Self {
        Window {
            settings,
            order: VecDeque::new(),
            ids: HashSet::new(),
        }
    }

    /// Its settings.
    pub fn settings(&self) -> Settings {
        self.settings
    }

    /// How many ids it holds.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Whether `id` is in it.
    pub fn contains(&self, id: &IdHash) -> bool {
        self.ids.contains(id)
    }

    /// Adds `id`, seen at `at_ms`; false (and nothing changes) when it is already there.
    pub fn insert(&mut self, id: IdHash, at_ms: i64) -> bool {
        if !self.ids.insert(id) {
            return false;
        }
        self.order.push_back((at_ms, id));
        true
    }

    /// Forgets the ids seen before `now_ms` minus the window, then the oldest beyond
    /// `max_ids`.
    pub fn evict(&mut self, now_ms: i64) {
        let horizon = now_ms.saturating_sub(self.settings.window.as_millis() as i64);
        while let Some(&(t, id)) = self.order.front() {
            if t >= horizon && self.order.len() <= self.settings.max_ids {
                break;
            }
            self.order.pop_front();
            self.ids.remove(&id);
        }
    }

    /// The whole window as a checkpoint entry holds it.
    pub fn snapshot(&self) -> SeenIds {
        let mut groups = Vec::new();
        let mut run: Vec<IdHash> = Vec::new();
        let mut at = None;
        for &(t, id) in &self.order {
            if at.is_some_and(|a| a != t) {
                groups.push(IdGroup::new(at.unwrap_or(t), &run));
                run.clear();
            }
            at = Some(t);
            run.push(id);
        }
        if let Some(t) = at {
            groups.push(IdGroup::new(t, &run));
        }
        SeenIds { full: true, groups }
    }

    /// Applies one checkpoint entry's ids (a whole window replaces this one), then evicts as
    /// of its batch time `time_ms`: exactly what the [`Recorder`] did when it wrote them.
    pub fn apply(&mut self, seen: Option<&SeenIds>, time_ms: i64) -> Result<()> {
        if let Some(seen) = seen {
            if seen.full {
                *self = Window::new(self.settings);
            }
            for g in &seen.groups {
                for id in g.decode()? {
                    self.insert(id, g.time_ms);
                }
            }
        }
        self.evict(time_ms);
        Ok(())
    }

    /// The window the checkpoint entries `chain` (oldest first: batch time and ids) leave.
    pub fn rebuild<'a>(
        settings: Settings,
        chain: impl IntoIterator<Item = (i64, Option<&'a SeenIds>)>,
    ) -> Result<Window> {
        let mut w = Window::new(settings);
        for (time_ms, seen) in chain {
            w.apply(seen, time_ms)?;
        }
        Ok(w)
    }
}

#[cfg(test)]
mod tests;
