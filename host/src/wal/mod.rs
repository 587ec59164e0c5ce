//! The write-ahead log: blocks made durable on `object_store` before their source is
//! acknowledged (reliable mode), read back after a crash, deleted once checkpointed.
//!
//! # Layout
//!
//! One log per pipeline, under one prefix:
//!
//! ```text
//! <prefix>/epoch/<epoch>          one per open: the writer's claim, and what its recovery read
//! <prefix>/<epoch>-<seq>.seg      the segments (both numbers zero-padded to 20 digits)
//! <prefix>/<seq>.seg              segments of the format before epochs, read as epoch 0
//! ```
//!
//! Each [`Wal::open`] claims a new epoch ([`epoch`]); its segments carry it in their names,
//! and `seq` continues after the highest sequence it recovered, so a listing gives write order.
//! Object stores cannot append, so a **segment is one object, written once** by one PUT, holding one commit group: the blocks that concurrent
//! [`Wal::append`] calls, from any partitions, handed in within a short window
//! ([`WalOptions::group_window`]). The format is in [`format`]: a versioned, checksummed
//! header saying how many frames and bytes follow; then one frame per block (length, CRC-32,
//! the block's columns as they are in memory).
//!
//! Why one log shared by the partitions rather than one per partition (DESIGN.md sketched
//! `wal/<stream>/<partition>/<segment>`): the blocks of every partition are cut at the same
//! instant, every block interval, so one shared log turns a tick's N partition writes into one
//! PUT. Per-partition logs would cost N requests per tick (on Azure, N transactions and N
//! round trips of latency). The price is that a segment can be deleted only when every
//! partition in it is checkpointed; checkpoints cover all partitions at once, batch by batch,
//! so in practice segments go as soon as their batch is done.
//!
//! # Guarantees
//!
//! - [`Wal::append`] returns once the segment holding the block is written; on a local
//!   directory ([`WalOptions::local_root`]) with [`WalOptions::fsync`] (the default) the
//!   file's data and its directory are also synced first (`wal/local.rs`). The blocks of every
//!   append handed in while the previous group was being written and synced go into the next
//!   group: one segment, one data sync and one directory sync for all of them, whatever their
//!   partitions and block intervals (group commit, as Kafka and Postgres do it).
//! - A writer superseded by a newer [`Wal::open`] fails its next append ([`WalError::Fenced`]),
//!   and every one after: before each segment it checks that no newer epoch is claimed. A
//!   segment it wrote anyway (it checked, then stalled across the new open) is never replayed:
//!   recovery ignores it, reports it once ([`Recovery::stale`]) and [`Wal::truncate`] deletes
//!   it. See [`epoch`] for the one race left and what it costs. Segments and epochs are
//!   created with create-if-absent ([`PutMode::Create`](object_store::PutMode::Create)), so
//!   nothing is ever overwritten.
//! - A segment of another format version stops [`Wal::open`] with
//!   [`WalError::UnknownVersion`]: a newer log is never half-read by an older host.
//! - Damage (a torn object, a flipped byte) is never replayed and never dropped silently:
//!   [`Recovery::problems`] names the object, the byte position, what is wrong and how many
//!   frames and bytes could not be read. Reading a segment stops at its first damage: the
//!   frames after a corrupt frame in the same object are counted as lost, never returned, so a
//!   partition's recovered blocks never have a hole in the middle of a segment. A damaged
//!   segment is never deleted by [`Wal::truncate`]; it stays for an operator to inspect (and
//!   is reported again at every open until removed).

pub mod bench;
pub mod epoch;
mod error;
pub mod format;
mod frames;
mod local;
#[cfg(test)]
mod tests;
mod writer;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::ObjectStore;
use object_store::path::Path;
use tokio::sync::{mpsc, oneshot};

use crate::batch::RecordBatch;
use crate::store::Location;
use epoch::{EPOCH_DIR, EPOCH_VERSION, EpochRead, EpochRecord};
pub use error::{Result, WalError};
pub use format::Damage;

/// How the log writes.
#[derive(Debug, Clone)]
pub struct WalOptions {
    /// How long the writer waits for more blocks after the first of a group, while other
    /// appends are under way (default 5 ms). It never waits when no other append is: a lone
    /// appender pays no window.
    pub group_window: Duration,
    /// A group is written as soon as it holds this many bytes (default 8 MiB). A single larger
    /// block is written alone.
    pub max_group_bytes: usize,
    /// When the store is a local directory: that directory (the store's root). Segments are
    /// then written there directly (`wal/local.rs`: with `fsync`, by `O_DIRECT` and synced, with
    /// their directory), not through `object_store`. `None` for remote stores.
    pub local_root: Option<PathBuf>,
    /// On a local directory: whether each segment (and the epoch object) is synced to the
    /// disk before its appends are answered (default true). Off, a segment is in the page
    /// cache when its appends are answered: it survives a crash of sluice, not of the
    /// machine (what Spark's receiver log promises on a local checkpoint directory).
    /// Remote stores answer when the store has the object, whatever this says.
    pub fsync: bool,
    /// Appends queued for the writer before `append` waits (default 1024).
    pub queue: usize,
    /// Test only: slept before each data sync, to see that no append is answered before it.
    #[cfg(test)]
    pub(crate) sync_delay: Duration,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            group_window: Duration::from_millis(5),
            max_group_bytes: 8 << 20,
            local_root: None,
            fsync: true,
            queue: 1024,
            #[cfg(test)]
            sync_delay: Duration::ZERO,
        }
    }
}

/// One block found by [`Wal::open`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredBlock {
    /// Its partition.
    pub partition: u32,
    /// The partition offset of its first record.
    pub first_offset: u64,
    /// Its records.
    pub records: RecordBatch,
    /// The sequence number of the segment it was in.
    pub segment: u64,
    /// The epoch of the writer that wrote that segment (0 for the format before epochs).
    pub epoch: u64,
}

/// Damage found in one segment, with where it is and what it cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalProblem {
    /// The segment's object path.
    pub segment: Path,
    /// The byte position in the object where reading stopped.
    pub position: u64,
    /// What is wrong there.
    pub damage: Damage,
    /// Blocks read from the segment before the damage (returned in [`Recovery::blocks`]).
    pub blocks_read: usize,
    /// Frames the segment's header promised that could not be read, when the header could be
    /// read.
    pub frames_lost: Option<u32>,
    /// Bytes from `position` to the end of the object, none of them returned.
    pub bytes_unreadable: u64,
}

impl std::fmt::Display for WalProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "WAL segment {}, byte {}: {}; {} blocks read before it, ",
            self.segment, self.position, self.damage, self.blocks_read
        )?;
        match self.frames_lost {
            Some(n) => write!(f, "{n} frames")?,
            None => f.write_str("an unknown number of frames")?,
        }
        write!(f, " ({} bytes) unreadable", self.bytes_unreadable)
    }
}

/// What [`Wal::open`] found: the blocks to replay and the damage seen.
#[derive(Debug, Clone, Default)]
pub struct Recovery {
    /// Every readable block, ordered by partition, then in write order within a partition
    /// (which is offset order for a partition that waits for each append). Blocks a crashed
    /// run wrote but never saw acknowledged are here too, and a source that redelivered them
    /// may have had them written twice: the caller skips what its checkpoint already covers
    /// and what an earlier block already covered.
    pub blocks: Vec<RecoveredBlock>,
    /// Damage, one entry per damaged segment, in segment order. Empty when the log is clean.
    pub problems: Vec<WalProblem>,
    /// How many segments were read.
    pub segments: usize,
    /// Segments an older writer wrote after a newer one had opened (and had read the log
    /// without them): never read nor replayed, reported here once, deleted by the next
    /// [`Wal::truncate`]. In segment order.
    pub stale: Vec<Path>,
    /// The epoch this open claimed.
    pub epoch: u64,
}

/// Counters since the log was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalStats {
    /// Segments written (commit groups).
    pub segments_written: u64,
    /// Blocks written.
    pub blocks_written: u64,
    /// Bytes written, headers included.
    pub bytes_written: u64,
    /// Segments deleted by [`Wal::truncate`].
    pub segments_deleted: u64,
    /// Segments on the store that this log knows of (written or recovered, not deleted).
    pub segments_live: u64,
    /// Syncs to the disk made for segments (on a local directory with fsync: one for a
    /// segment's data, one for its directory): a commit group of any number of blocks takes
    /// two.
    pub syncs: u64,
}

/// What the log knows of a segment on the store.
#[derive(Debug)]
struct SegmentInfo {
    path: Path,
    /// For each partition in it, the offset after its last record there.
    ends: Vec<(u32, u64)>,
    /// Damaged segments are kept for an operator.
    damaged: bool,
    /// Written by an older writer after a newer one opened: never read, deleted by the next
    /// truncation.
    stale: bool,
}

impl SegmentInfo {
    fn new(path: Path, damaged: bool, stale: bool) -> Self {
        SegmentInfo {
            path,
            ends: Vec::new(),
            damaged,
            stale,
        }
    }

    fn note(&mut self, partition: u32, end: u64) {
        match self.ends.iter_mut().find(|(p, _)| *p == partition) {
            Some((_, e)) => *e = (*e).max(end),
            None => self.ends.push((partition, end)),
        }
    }
}

#[derive(Debug)]
struct Shared {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    /// The epoch this writer claimed.
    epoch: u64,
    opts: WalOptions,
    /// By (epoch, sequence).
    segments: Mutex<BTreeMap<(u64, u64), SegmentInfo>>,
    /// Appends handed in (or about to be) and not yet taken by the writer.
    coming: AtomicUsize,
    fenced: Mutex<Option<WalError>>,
    segments_written: AtomicU64,
    blocks_written: AtomicU64,
    bytes_written: AtomicU64,
    segments_deleted: AtomicU64,
    syncs: AtomicU64,
    /// Written frames' buffers, for the next blocks (`frames.rs`).
    frames: frames::FramePool,
}

/// A block on its way to the writer.
struct Pending {
    frame: Bytes,
    partition: u32,
    end: u64,
    done: oneshot::Sender<Result<()>>,
}

/// A block handed to the log by [`Wal::submit`], on its way to being durable.
#[derive(Debug)]
pub struct Durable {
    wait: oneshot::Receiver<Result<()>>,
    bytes: usize,
}

impl Durable {
    /// The bytes the log holds for the block (its encoded frame) until it is written.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Resolves once the segment holding the block is written (and synced, with fsync): the
    /// block's records may then be acknowledged. An error means they are not durable.
    pub async fn wait(self) -> Result<()> {
        self.wait.await.map_err(|_| WalError::Closed)?
    }
}

/// The write-ahead log of one pipeline: a cheap, cloneable handle.
///
/// One writer task owns the writing; [`Wal::append`] from any number of tasks hands it a block
/// and waits for the segment holding it to be written. The writer stops when the last handle
/// is dropped, after writing what it was handed.
///
/// ```
/// use std::sync::Arc;
/// use object_store::{memory::InMemory, path::Path};
/// use sluice::batch::RecordBatch;
/// use sluice::wal::{Wal, WalOptions};
///
/// # tokio::runtime::Runtime::new()?.block_on(async {
/// let store = Arc::new(InMemory::new());
/// let (wal, _) = Wal::open(store.clone(), Path::from("wal"), WalOptions::default()).await?;
/// wal.append(0, 0, &RecordBatch::from_values([&b"hello"[..]])).await?; // durable now
/// drop(wal);
///
/// let (wal, recovery) = Wal::open(store, Path::from("wal"), WalOptions::default()).await?;
/// assert!(recovery.problems.is_empty());
/// assert_eq!(recovery.blocks[0].records.value(0), b"hello");
/// wal.truncate(&[1]).await?; // offset 0 of partition 0 is checkpointed: the segment goes
/// # Ok::<(), sluice::wal::WalError>(())
/// # }).unwrap();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Wal {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Pending>,
}

/// The object name of segment `seq` of `epoch`.
pub fn segment_name(epoch: u64, seq: u64) -> String {
    format!("{epoch:020}-{seq:020}.seg")
}

/// The epoch and sequence number of a segment's object name, when `name` is one. A name of the
/// format before epochs (`<seq>.seg`) is epoch 0.
fn parse_segment_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".seg")?;
    let number = |digits: &str| {
        (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| digits.parse().ok())
            .flatten()
    };
    match stem.split_once('-') {
        Some((epoch, seq)) => Some((number(epoch)?, number(seq)?)),
        None => Some((0, number(stem)?)),
    }
}

/// What one listing of the log's prefix found.
#[derive(Debug, Default)]
struct Listing {
    /// The epochs claimed, in no particular order.
    epochs: Vec<u64>,
    /// The segments, by (epoch, sequence).
    segments: Vec<((u64, u64), Path)>,
}

/// Lists the log's segments and epoch objects; anything else is left alone, with a warning.
async fn list_log(store: &Arc<dyn ObjectStore>, prefix: &Path) -> Result<Listing> {
    let mut listing = Listing::default();
    let mut objects = store.list(Some(prefix));
    while let Some(meta) = objects.try_next().await.map_err(|e| WalError::List {
        prefix: prefix.to_string(),
        message: e.to_string(),
    })? {
        let rest: Vec<_> = meta
            .location
            .prefix_match(prefix)
            .into_iter()
            .flatten()
            .collect();
        let parts: Vec<&str> = rest.iter().map(|p| p.as_ref()).collect();
        match parts.as_slice() {
            [name] => match parse_segment_name(name) {
                Some(id) => listing.segments.push((id, meta.location)),
                None => {
                    tracing::warn!(object = %meta.location, "An object in the WAL's directory is not a segment; it is left alone.")
                }
            },
            [dir, name] if *dir == EPOCH_DIR => match epoch::parse_epoch_name(name) {
                Some(n) => listing.epochs.push(n),
                None => {
                    tracing::warn!(object = %meta.location, "An object in the WAL's epoch directory is not an epoch; it is left alone.")
                }
            },
            _ => {
                tracing::warn!(object = %meta.location, "An object below the WAL's directory is not a segment; it is left alone.")
            }
        }
    }
    listing.segments.sort_by_key(|(id, _)| *id);
    Ok(listing)
}

/// Reads the listed segments that `newest` admits (all of them when no epoch is claimed yet);
/// the others are stale: noted, not read.
async fn recover(
    store: &Arc<dyn ObjectStore>,
    listed: &[((u64, u64), Path)],
    newest: Option<&EpochRecord>,
) -> Result<(Recovery, BTreeMap<(u64, u64), SegmentInfo>)> {
    let mut recovery = Recovery::default();
    let mut segments = BTreeMap::new();
    for &((epoch, seq), ref path) in listed {
        if newest.is_some_and(|r| !r.admits(epoch, seq)) {
            recovery.stale.push(path.clone());
            let info = SegmentInfo::new(path.clone(), false, true);
            segments.insert((epoch, seq), info);
            continue;
        }
        let decoded = read_segment(store, path).await?;
        let mut info = SegmentInfo::new(path.clone(), decoded.damage.is_some(), false);
        let blocks_read = decoded.blocks.len();
        for b in decoded.blocks {
            info.note(b.partition, b.first_offset + b.records.len() as u64);
            recovery.blocks.push(RecoveredBlock {
                partition: b.partition,
                first_offset: b.first_offset,
                records: b.records,
                segment: seq,
                epoch,
            });
        }
        if let Some(d) = decoded.damage {
            let problem = WalProblem {
                segment: path.clone(),
                position: d.position,
                damage: d.damage,
                blocks_read,
                frames_lost: d.frames_lost,
                bytes_unreadable: d.bytes_unreadable,
            };
            tracing::error!(segment = %path, position = problem.position, "{problem}");
            recovery.problems.push(problem);
        }
        recovery.segments += 1;
        segments.insert((epoch, seq), info);
    }
    // Stable: within a partition, segment order then frame order.
    recovery.blocks.sort_by_key(|b| b.partition);
    Ok((recovery, segments))
}

/// Reads and decodes one segment.
async fn read_segment(store: &Arc<dyn ObjectStore>, path: &Path) -> Result<format::DecodedSegment> {
    let read_err = |e: object_store::Error| WalError::Read {
        path: path.to_string(),
        message: e.to_string(),
    };
    let bytes = store
        .get(path)
        .await
        .map_err(read_err)?
        .bytes()
        .await
        .map_err(read_err)?;
    format::decode_segment(&bytes).map_err(|v| WalError::UnknownVersion {
        path: path.to_string(),
        found: v.0,
        supported: format::VERSION,
    })
}

/// The record a writer claims as epoch `mine` after reading `segments`: for each epoch, the
/// highest sequence read.
fn record_of(mine: u64, segments: &BTreeMap<(u64, u64), SegmentInfo>) -> EpochRecord {
    let mut read: Vec<EpochRead> = Vec::new();
    for (&(epoch, seq), _) in segments.iter().filter(|(_, s)| !s.stale) {
        match read.last_mut() {
            Some(r) if r.epoch == epoch => r.last_seq = r.last_seq.max(seq),
            _ => read.push(EpochRead {
                epoch,
                last_seq: seq,
            }),
        }
    }
    EpochRecord {
        version: EPOCH_VERSION,
        epoch: mine,
        opened_at_ms: epoch::now_ms(),
        read,
    }
}

impl Wal {
    /// Opens the log under `prefix` in `store`: reads every segment there, claims a new epoch
    /// (which fences the log's previous writer, see [`epoch`]) and starts the writer, which
    /// continues after the highest segment read. Called once per pipeline run, before its
    /// receivers start; the [`Recovery`] holds what the last run left.
    ///
    /// Must be called inside a tokio runtime (the writer is a task of it). Reads every segment
    /// into memory: after a checkpoint truncates, that is the unfinished batches' blocks.
    ///
    /// Fails when the store cannot be listed or read, when a segment has a format version
    /// this host does not read, or with [`WalError::Fenced`] when another writer opened the
    /// log at the same moment and claimed the epoch first. Damage is no failure: it is in
    /// [`Recovery::problems`].
    pub async fn open(
        store: Arc<dyn ObjectStore>,
        prefix: Path,
        opts: WalOptions,
    ) -> Result<(Wal, Recovery)> {
        let listing = list_log(&store, &prefix).await?;
        let newest = match listing.epochs.iter().max() {
            Some(&n) => Some(epoch::read(&store, &prefix, n).await?),
            None => None,
        };
        let (mut recovery, segments) = recover(&store, &listing.segments, newest.as_ref()).await?;
        let mine = newest.as_ref().map_or(1, |r| r.epoch + 1);
        let path = epoch::claim(&store, &prefix, &record_of(mine, &segments)).await?;
        if let Some(root) = opts.local_root.as_ref().filter(|_| opts.fsync) {
            writer::fsync(root, &path, 3)
                .await
                .map_err(|e| WalError::Write {
                    path: path.to_string(),
                    message: format!("written but not fsynced: {e}"),
                })?;
        }
        // A slow open can claim a number a newer open freed: it must not go on.
        epoch::check(&store, &prefix, mine).await?;
        epoch::delete_older(&store, &prefix, &listing.epochs, mine).await;
        recovery.epoch = mine;
        let next_seq = segments
            .iter()
            .filter(|(_, s)| !s.stale)
            .map(|(&(_, seq), _)| seq + 1)
            .max()
            .unwrap_or(0);
        if !recovery.stale.is_empty() {
            tracing::info!(prefix = %prefix, stale = recovery.stale.len(), first = %recovery.stale[0], "WAL segments an older writer wrote after a newer one opened are ignored, and deleted at the next truncation.");
        }
        tracing::info!(prefix = %prefix, epoch = mine, segments = recovery.segments, blocks = recovery.blocks.len(), problems = recovery.problems.len(), "The WAL is open.");

        let (tx, rx) = mpsc::channel(opts.queue.max(1));
        let shared = Arc::new(Shared {
            store,
            prefix,
            epoch: mine,
            frames: frames::FramePool::new(opts.max_group_bytes.saturating_mul(3)),
            opts,
            segments: Mutex::new(segments),
            coming: AtomicUsize::new(0),
            fenced: Mutex::new(None),
            segments_written: AtomicU64::new(0),
            blocks_written: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            segments_deleted: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
        });
        tokio::spawn(writer::writer(shared.clone(), rx, next_seq));
        Ok((Wal { shared, tx }, recovery))
    }

    /// Reads the log `name` under `location` without opening it for writing: no epoch is
    /// claimed, so the running writer is not fenced, and nothing is written or deleted.
    /// `sluice replay` reads the blocks of recorded batches this way while the pipeline may
    /// run. What it returns is what the segments held when listed (a truncation running at
    /// the same time may delete some before they are read: a read error then).
    pub async fn read_only(location: &Location, name: &str) -> Result<Recovery> {
        let (store, prefix) = (&location.store, location.child(name));
        let listing = list_log(store, &prefix).await?;
        let newest = match listing.epochs.iter().max() {
            Some(&n) => Some(epoch::read(store, &prefix, n).await?),
            None => None,
        };
        let (mut recovery, _) = recover(store, &listing.segments, newest.as_ref()).await?;
        recovery.epoch = newest.map_or(0, |r| r.epoch);
        Ok(recovery)
    }

    /// Opens the log `name` (e.g. `wal`) under a resolved location, writing segments directly
    /// (and syncing them, with [`WalOptions::fsync`]) when the location is a local directory.
    pub async fn open_at(
        location: &Location,
        name: &str,
        mut opts: WalOptions,
    ) -> Result<(Wal, Recovery)> {
        if opts.local_root.is_none() {
            opts.local_root.clone_from(&location.local);
        }
        Wal::open(location.store.clone(), location.child(name), opts).await
    }

    /// Writes one block durably: `records` of `partition`, the first at `first_offset`.
    /// Returns when the segment holding it is written (and fsynced, on a local directory);
    /// only then may the source be acknowledged. Calls from many tasks at once are written
    /// together, one object per group.
    ///
    /// On an error the block is not durable (the caller must not acknowledge it); see
    /// [`WalError::is_retryable`].
    pub async fn append(
        &self,
        partition: u32,
        first_offset: u64,
        records: &RecordBatch,
    ) -> Result<()> {
        self.submit(partition, first_offset, records)
            .await?
            .wait()
            .await
    }

    /// Hands one block to the writer without waiting for it to be written: encodes it (the
    /// log's own copy of the records, so the caller may go on using or dropping them) and
    /// queues it, waiting only while the writer's queue is full. The [`Durable`] returned
    /// resolves when the segment holding the block is written (and synced), exactly when
    /// [`Wal::append`] would have returned; blocks submitted in order are written in order.
    ///
    /// Fails at once when the log is fenced, the block cannot be encoded, or the writer is
    /// gone; otherwise the write's own error comes from [`Durable::wait`].
    pub async fn submit(
        &self,
        partition: u32,
        first_offset: u64,
        records: &RecordBatch,
    ) -> Result<Durable> {
        if let Some(e) = self.fenced() {
            return Err(e);
        }
        // About the frame's size, without a pass over the records (`frame_len` counts the
        // timestamp runs); the encoder replaces a buffer too small.
        let mut frame = self.shared.frames.take(records.byte_size() + 64);
        if let Err(e) = format::encode_block_into(&mut frame, partition, first_offset, records) {
            self.shared.frames.give(frame);
            return Err(WalError::Block {
                partition,
                first_offset,
                message: e.0,
            });
        }
        let bytes = frame.len();
        let (done, wait) = oneshot::channel();
        let pending = Pending {
            frame: Bytes::from(frame),
            partition,
            end: first_offset + records.len() as u64,
            done,
        };
        // Counted before it is sent, so the writer knows to wait for it; the guard takes the
        // count back if the send never happens (the writer is gone, or this call was dropped).
        let guard = writer::Coming::new(&self.shared.coming);
        self.tx.send(pending).await.map_err(|_| WalError::Closed)?;
        guard.sent();
        Ok(Durable { wait, bytes })
    }

    /// Deletes the segments whose every block is checkpointed: everything below
    /// `offsets[p]` in each partition `p` is processed and committed. A segment holding a
    /// partition missing from `offsets` stays, and so does a damaged one; stale segments
    /// ([`Recovery::stale`]) go whatever the offsets. Returns how many
    /// segments were deleted. Called after each checkpoint; a failed delete is retried by the
    /// next call.
    pub async fn truncate(&self, offsets: &[u64]) -> Result<usize> {
        let doomed: Vec<((u64, u64), Path)> = {
            let segments = self
                .shared
                .segments
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            segments
                .iter()
                .filter(|(_, s)| {
                    s.stale
                        || !s.damaged
                            && s.ends.iter().all(|&(p, end)| {
                                offsets.get(p as usize).is_some_and(|&done| end <= done)
                            })
                })
                .map(|(seq, s)| (*seq, s.path.clone()))
                .collect()
        };
        let mut deleted = 0;
        for (seq, path) in doomed {
            match self.shared.store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => {
                    return Err(WalError::Delete {
                        path: path.to_string(),
                        message: e.to_string(),
                    });
                }
            }
            let mut segments = self
                .shared
                .segments
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if segments.remove(&seq).is_some() {
                deleted += 1;
            }
        }
        self.shared
            .segments_deleted
            .fetch_add(deleted as u64, Ordering::Relaxed);
        if deleted > 0 {
            tracing::debug!(prefix = %self.shared.prefix, deleted, "Checkpointed WAL segments are deleted.");
        }
        Ok(deleted)
    }

    /// Counters since the log was opened.
    pub fn stats(&self) -> WalStats {
        let s = &self.shared;
        WalStats {
            segments_written: s.segments_written.load(Ordering::Relaxed),
            blocks_written: s.blocks_written.load(Ordering::Relaxed),
            bytes_written: s.bytes_written.load(Ordering::Relaxed),
            segments_deleted: s.segments_deleted.load(Ordering::Relaxed),
            segments_live: s.segments.lock().unwrap_or_else(|e| e.into_inner()).len() as u64,
            syncs: s.syncs.load(Ordering::Relaxed),
        }
    }

    /// The log's prefix in its store.
    pub fn prefix(&self) -> &Path {
        &self.shared.prefix
    }

    /// The epoch this writer claimed when it opened the log (its segments carry it).
    pub fn epoch(&self) -> u64 {
        self.shared.epoch
    }

    fn fenced(&self) -> Option<WalError> {
        self.shared
            .fenced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
