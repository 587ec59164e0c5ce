//! The block generator and the block manager.
//!
//! Receivers append records to their partition's buffer. Every block interval the block
//! generator cuts what each partition received since its last cut into a [`Block`]: numbered,
//! immutable, owning its records. A partition that receives a block's worth of bytes
//! (`max_block_bytes`) before the interval is up has its block cut at once, so a fast source
//! makes more blocks, never bigger ones. Every batch interval the tracker cuts a last block per
//! partition and sends a [`Cut::Close`]: the blocks sent before it, and after the previous
//! close, are the batch's.
//!
//! Blocks go out on one channel as they are cut, so the scheduler can run the pipeline's
//! per-record steps and sink writes on them while the batch is still open. A departure from
//! DESIGN.md's "a batch is handed to the job at the batch interval", on purpose: holding a
//! whole one-second batch at hundreds of megabytes a second does not fit a small memory budget,
//! and running it only when it closes leaves the cores idle for most of the interval.
//!
//! The manager holds records within a byte budget, from their arrival until the scheduler
//! releases their block. When the budget is used up, [`BlockManager::append`] waits: that wait
//! is the backpressure (a TCP receiver stops reading its socket, an AMQP receiver stops
//! granting credit, the generator stops generating).
//!
//! Every record gets an offset in its partition, counted from 0. Each partition also has a
//! *durable* watermark: every record below it may be acknowledged to its source. Without a
//! write-ahead log a record is durable once appended.
//!
//! A receiver of a replayable source appends each chunk with its source [`Position`] (the file
//! and byte range it came from, the Event Hubs offset after it); a block carries the positions
//! of its chunks, so the driver can record where each batch's records came from.
//!
//! A record its receiver set aside (longer than the source's `max-record-bytes`) takes no
//! offset: its note ([`SetAside`]) and its source position go into the partition's buffer in
//! order with the records, and travel with the next block cut (a block may hold notes and no
//! records), so the batch that holds its position dead-letters it.
//!
//! **Replay fences.** After a crash, the driver recomputes the unfinished batch from exactly
//! the records it held: [`BlockManager::fence`] sets, per partition, the offset at which that
//! batch ended. A chunk that crosses its fence is split there; a partition at its fence takes
//! no more records until the batch is closed ([`BlockManager::fence_reached`] tells the clock
//! when every partition is there), so the recomputed batch has the same records as the first
//! time, whatever the chunking of the source this time.

pub mod intake;
pub mod pace;

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc, watch};

use crate::batch::RecordBatch;
use crate::batch::aside::SetAside;
use crate::batch::position::Position;
pub use intake::Intake;
pub use pace::Pace;

/// A block's identity: its partition and its number there, counted from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockId {
    /// The partition.
    pub partition: u32,
    /// The block's number in its partition.
    pub seq: u64,
}

/// A cut block: some consecutive records of one partition.
#[derive(Debug)]
pub struct Block {
    /// Its identity.
    pub id: BlockId,
    /// The partition offset of its first record.
    pub first_offset: u64,
    /// Its records.
    pub records: RecordBatch,
    /// The bytes the budget counts for them, given back by [`BlockManager::release`].
    pub bytes: u64,
    /// When it was cut, ms since the epoch.
    pub cut_ms: i64,
    /// The source positions of its chunks, in order (empty for a source without positions).
    pub positions: Vec<Position>,
    /// The records set aside among its records (too long for a block), for the dead letters.
    pub aside: Vec<SetAside>,
    /// Its share of its partition's queue for the pace, given back when the block is dropped
    /// (`None`: a copy, counted nowhere).
    pub queued: Option<pace::Queued>,
}

/// What the block manager sends the scheduler, in order.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // A few per block interval, each moved once.
pub enum Cut {
    /// A block of the open batch.
    Block(Block),
    /// The open batch is closed: every block of it was sent before this.
    Close {
        /// The batch id.
        id: u64,
        /// When it closed.
        closed_at: Instant,
    },
}

#[derive(Debug, Default)]
struct PartitionBuffer {
    records: RecordBatch,
    first_offset: u64,
    next_block: u64,
    bytes: u64,
    /// The last block's records and value bytes, to size the next buffer.
    last_block: (usize, usize),
    /// The source positions of the chunks in `records`.
    positions: Vec<Position>,
    /// The records set aside since the last cut.
    aside: Vec<SetAside>,
    /// Replay: the offset the batch being recomputed ends at in this partition.
    fence: Option<u64>,
}

impl PartitionBuffer {
    /// The offset the next record appended gets.
    fn next_offset(&self) -> u64 {
        self.first_offset + self.records.len() as u64
    }

    /// Replay: whether the partition has received every record of the batch being recomputed
    /// (true when it has no fence).
    fn at_fence(&self) -> bool {
        self.fence.is_none_or(|f| self.next_offset() >= f)
    }
}

/// Holds received records within a memory budget and cuts them into blocks.
#[derive(Debug)]
pub struct BlockManager {
    budget: u64,
    max_block_bytes: u64,
    used: AtomicU64,
    peak: AtomicU64,
    waits: AtomicU64,
    partitions: Vec<Mutex<PartitionBuffer>>,
    durable: Vec<watch::Sender<u64>>,
    ended: Vec<AtomicBool>,
    room: Arc<Notify>,
    pace: Pace,
    out: mpsc::UnboundedSender<Cut>,
    spare: Mutex<Vec<RecordBatch>>,
    reliable: AtomicBool,
    fenced: AtomicBool,
    intake: Vec<Intake>,
    first_record: std::sync::OnceLock<Instant>,
    /// One more than the id of the newest batch whose close has begun (0: none yet).
    closing: AtomicU64,
    /// When the open batch closes, ms since the epoch (0: not known), and the batch interval.
    next_close: AtomicI64,
    close_interval: AtomicI64,
}

impl BlockManager {
    /// A manager for `partitions` partitions holding at most about `budget` bytes, and the
    /// channel its blocks and batch closes come out of. A block is cut early once it holds
    /// `max_block_bytes`.
    pub fn new(
        partitions: u32,
        budget: u64,
        max_block_bytes: u64,
    ) -> (Self, mpsc::UnboundedReceiver<Cut>) {
        let (out, rx) = mpsc::unbounded_channel();
        let room = Arc::new(Notify::new());
        let max_block_bytes = max_block_bytes.max(1);
        let manager = BlockManager {
            budget,
            max_block_bytes,
            used: AtomicU64::new(0),
            peak: AtomicU64::new(0),
            waits: AtomicU64::new(0),
            partitions: (0..partitions).map(|_| Mutex::default()).collect(),
            durable: (0..partitions).map(|_| watch::Sender::new(0)).collect(),
            ended: (0..partitions).map(|_| AtomicBool::new(false)).collect(),
            pace: Pace::for_blocks(partitions, Duration::ZERO, max_block_bytes, room.clone()),
            room,
            out,
            spare: Mutex::default(),
            reliable: AtomicBool::new(false),
            fenced: AtomicBool::new(false),
            intake: (0..partitions).map(|_| Intake::default()).collect(),
            first_record: std::sync::OnceLock::new(),
            closing: AtomicU64::new(0),
            next_close: AtomicI64::new(0),
            close_interval: AtomicI64::new(0),
        };
        (manager, rx)
    }

    /// Holds each partition's queue of unprocessed records to about `target` of its measured
    /// processing time (see [`pace`]; `Duration::ZERO`: the budget alone), from now on.
    pub fn paced(mut self, target: Duration) -> Self {
        let room = self.room.clone();
        self.pace = Pace::for_blocks(self.partitions(), target, self.max_block_bytes, room);
        self
    }

    /// The pace (a processed block's time is noted there).
    pub fn pace(&self) -> &Pace {
        &self.pace
    }

    /// How many partitions.
    pub fn partitions(&self) -> u32 {
        self.partitions.len() as u32
    }

    /// Bytes held now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// The most bytes held at once.
    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    /// How many times a receiver had to wait for room.
    pub fn backpressure_waits(&self) -> u64 {
        self.waits.load(Ordering::Relaxed)
    }

    /// When the first record of the run came in (`None` before one did).
    pub fn first_record(&self) -> Option<Instant> {
        self.first_record.get().copied()
    }

    /// Called by the batch clock before it waits for a close: the open batch closes at
    /// `at_ms` (ms since the epoch), and the ones after it every `interval_ms`. Receivers that
    /// poll (the files source) list just before each close, so what arrived in time makes the
    /// batch.
    pub fn set_next_close(&self, at_ms: i64, interval_ms: i64) {
        self.close_interval.store(interval_ms, Ordering::Relaxed);
        self.next_close.store(at_ms, Ordering::Relaxed);
    }

    /// When the open batch closes (ms since the epoch) and the batch interval (ms), as the
    /// batch clock last said; `None` before it has said (a replay waiting for its fence).
    pub fn next_close(&self) -> Option<(i64, i64)> {
        let at = self.next_close.load(Ordering::Relaxed);
        (at > 0).then(|| (at, self.close_interval.load(Ordering::Relaxed)))
    }

    /// What partition `p`'s receiver has handed in (`None` for a partition out of range).
    pub fn intake(&self, p: u32) -> Option<&Intake> {
        self.intake.get(p as usize)
    }

    /// The budget.
    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// Appends a receiver's records to `partition`, first waiting while the budget is used up,
    /// and returns the offsets they got. A chunk larger than the whole budget is let in when
    /// nothing else is held, so it cannot wait forever.
    pub async fn append(&self, partition: u32, chunk: &RecordBatch) -> Range<u64> {
        if chunk.is_empty() {
            let at = self.next_offset(partition);
            return at..at;
        }
        self.append_with(partition, chunk.byte_size() as u64, None, |buf| {
            buf.append(chunk)
        })
        .await
    }

    /// Like [`BlockManager::append`], but `fill` appends the records straight into the
    /// partition's buffer (no copy in between); `size` is about what they take, for the wait;
    /// `position` is where the source stands after them.
    pub async fn append_with(
        &self,
        partition: u32,
        size: u64,
        position: Option<Position>,
        fill: impl FnOnce(&mut RecordBatch),
    ) -> Range<u64> {
        self.append_filled(partition, size, |buf| {
            fill(buf);
            position
        })
        .await
    }

    /// Like [`BlockManager::append_with`], but `fill` says where the source stands after the
    /// records it appended (`None`: no position), for a source that learns it only by
    /// splitting them (the files source splits a read's lines straight into the buffer).
    pub async fn append_filled(
        &self,
        partition: u32,
        size: u64,
        fill: impl FnOnce(&mut RecordBatch) -> Option<Position>,
    ) -> Range<u64> {
        let mut waited = None;
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let used = self.used.load(Ordering::Acquire);
            if self.at_fence(partition) {
                // Replay: this partition has given the recomputed batch all its records.
                let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
                continue;
            }
            if (used + size <= self.budget || used == 0)
                && !(self.pace.holds(partition, size)
                    && waited.is_none_or(|t: Instant| t.elapsed() < pace::MAX_HOLD))
            {
                break;
            }
            if waited.is_none() {
                waited = Some(Instant::now());
                self.waits.fetch_add(1, Ordering::Relaxed);
                if let Some(i) = self.intake(partition) {
                    i.held();
                }
            }
            // Also wake now and then, in case a release raced with this check.
            let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
        }
        let intake = self.intake(partition);
        if let (Some(since), Some(i)) = (waited, intake) {
            i.released(since.elapsed());
        }
        let range = self.insert(partition, size, fill);
        if let Some(i) = intake {
            i.appended(range.end - range.start, size);
        }
        if self.first_record.get().is_none() && range.end > range.start {
            let _ = self.first_record.set(Instant::now());
        }
        range
    }

    /// Notes a record `partition`'s receiver set aside, with the source position after it;
    /// it goes with the next block. `replay`: it was read again for the batch being
    /// recomputed (so it belongs to that batch even at its fence; any other waits there).
    pub async fn set_aside(
        &self,
        partition: u32,
        mut note: SetAside,
        position: Option<Position>,
        replay: bool,
    ) {
        while !replay && self.at_fence(partition) {
            let notified = self.room.notified();
            let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
        }
        let Some(slot) = self.partitions.get(partition as usize) else {
            return;
        };
        let mut p = slot.lock().unwrap_or_else(|e| e.into_inner());
        note.offset = p.next_offset();
        p.aside.push(note);
        if let Some(pos) = position {
            p.positions.push(pos);
        }
    }

    fn at_fence(&self, partition: u32) -> bool {
        if !self.fenced.load(Ordering::Acquire) {
            return false;
        }
        self.partitions.get(partition as usize).is_some_and(|slot| {
            let p = slot.lock().unwrap_or_else(|e| e.into_inner());
            p.fence.is_some() && p.at_fence()
        })
    }

    /// Replay: the batch being recomputed ends, in partition `p`, at offset `ends[p]`. Set
    /// before any append, after [`BlockManager::resume`].
    pub fn fence(&self, ends: &[u64]) {
        for (slot, &end) in self.partitions.iter().zip(ends) {
            slot.lock().unwrap_or_else(|e| e.into_inner()).fence = Some(end);
        }
        self.fenced.store(true, Ordering::Release);
    }

    /// Replay: whether every partition has received the records of the batch being
    /// recomputed (or has no fence). `None` when there is no fence.
    pub fn fence_reached(&self) -> Option<bool> {
        if !self.fenced.load(Ordering::Acquire) {
            return None;
        }
        Some(
            self.partitions
                .iter()
                .all(|slot| slot.lock().unwrap_or_else(|e| e.into_inner()).at_fence()),
        )
    }

    /// Per partition, how far it is from its fence: (received up to, fence).
    pub fn fence_progress(&self) -> Vec<(u64, Option<u64>)> {
        self.partitions
            .iter()
            .map(|slot| {
                let p = slot.lock().unwrap_or_else(|e| e.into_inner());
                (p.next_offset(), p.fence)
            })
            .collect()
    }

    /// The offset the next record of `partition` gets: how many it has received.
    pub fn next_offset(&self, partition: u32) -> u64 {
        self.partitions.get(partition as usize).map_or(0, |slot| {
            slot.lock().unwrap_or_else(|e| e.into_inner()).next_offset()
        })
    }

    fn insert(
        &self,
        partition: u32,
        size: u64,
        fill: impl FnOnce(&mut RecordBatch) -> Option<Position>,
    ) -> Range<u64> {
        let Some(slot) = self.partitions.get(partition as usize) else {
            return 0..0;
        };
        let mut p = slot.lock().unwrap_or_else(|e| e.into_inner());
        // A block is cut before it would pass its size, so its buffer never grows by doubling.
        if !p.records.is_empty() && p.records.byte_size() as u64 + size > self.max_block_bytes {
            self.cut(&mut p, partition, crate::clock::now_ms());
        }
        if p.records.values.data.capacity() == 0 {
            // A fresh buffer: room for a full block (sized by the last one) at once.
            let (records, bytes) = p.last_block;
            let share = (self.budget / 2 / self.partitions.len().max(1) as u64) as usize;
            let wanted = (self.max_block_bytes as usize)
                .min(bytes.max(4096) * 2)
                .min(share.max(4096));
            let records = (records * wanted)
                .checked_div(bytes)
                .map_or(0, |n| n + records / 8);
            p.records = RecordBatch::with_capacity(records, wanted);
        }
        // The budget counts what the buffer holds allocated, not just its records' bytes.
        let (count, before, data) = (p.records.len(), p.bytes, p.records.byte_size());
        let position = fill(&mut p.records);
        let start = p.first_offset + count as u64;
        let end = p.next_offset();
        p.bytes = p.records.allocated() as u64;
        let added = p.bytes.saturating_sub(before);
        let now = self.used.fetch_add(added, Ordering::AcqRel) + added;
        self.peak.fetch_max(now, Ordering::Relaxed);
        self.pace
            .queue(partition, p.records.byte_size().saturating_sub(data) as u64);
        if let Some(pos) = position {
            p.positions.push(pos);
        }
        if let Some(fence) = p.fence
            && p.first_offset < fence
            && end > fence
        {
            // Replay: the records up to the fence are the recomputed batch's last block.
            self.cut_at(&mut p, partition, fence);
        } else if p.records.byte_size() as u64 >= self.max_block_bytes {
            self.cut(&mut p, partition, crate::clock::now_ms());
        }
        drop(p);
        if !self.reliable.load(Ordering::Relaxed) {
            self.mark_durable(partition, end);
        }
        start..end
    }

    /// Reliable mode: records are durable only once [`BlockManager::mark_durable`] says so
    /// (after their block's write-ahead-log write), not when appended.
    pub fn set_reliable(&self) {
        self.reliable.store(true, Ordering::Relaxed);
    }

    /// Every record of `partition` below `end` is durable.
    pub fn mark_durable(&self, partition: u32, end: u64) {
        if let Some(d) = self.durable.get(partition as usize) {
            d.send_if_modified(|v| {
                let moved = *v < end;
                *v = (*v).max(end);
                moved
            });
        }
    }

    /// A restart: `partition`'s next record gets offset `next`, and everything below it is
    /// durable (it is in the write-ahead log or committed). Call before any append.
    pub fn resume(&self, partition: u32, next: u64) {
        if let Some(slot) = self.partitions.get(partition as usize) {
            let mut p = slot.lock().unwrap_or_else(|e| e.into_inner());
            p.first_offset = next;
        }
        self.mark_durable(partition, next);
    }

    /// A block replayed from the write-ahead log, numbered in its partition and counted in the
    /// budget like a received one; the caller hands it to the scheduler.
    pub fn replayed(&self, partition: u32, first_offset: u64, records: RecordBatch) -> Block {
        let bytes = records.allocated() as u64;
        let now = self.used.fetch_add(bytes, Ordering::AcqRel) + bytes;
        self.peak.fetch_max(now, Ordering::Relaxed);
        let data = records.byte_size() as u64;
        self.pace.queue(partition, data);
        let seq = self.partitions.get(partition as usize).map_or(0, |slot| {
            let mut p = slot.lock().unwrap_or_else(|e| e.into_inner());
            p.next_block += 1;
            p.next_block - 1
        });
        Block {
            id: BlockId { partition, seq },
            first_offset,
            records,
            bytes,
            cut_ms: crate::clock::now_ms(),
            positions: Vec::new(),
            aside: Vec::new(),
            queued: self.pace.token(partition, data),
        }
    }

    /// The durable watermark of `partition`: every record below it may be acknowledged.
    pub fn durable(&self, partition: u32) -> watch::Receiver<u64> {
        self.durable
            .get(partition as usize)
            .map_or_else(|| watch::Sender::new(0).subscribe(), |s| s.subscribe())
    }

    /// The offset up to which `partition`'s records are durable now (reliable mode: logged in
    /// the write-ahead log; else: received).
    pub fn durable_offset(&self, partition: u32) -> u64 {
        self.durable
            .get(partition as usize)
            .map_or(0, |s| *s.borrow())
    }

    /// The block generator: cuts what each partition received since its last cut into a block.
    ///
    /// During a replay a partition is cut at its fence: the records past it (the end of the
    /// chunk that crossed it) wait for the close, which gives them to the next batch. Cut into
    /// the recomputed batch, they would be output under its id, and lost when that batch's
    /// parts were already committed by the crashed run (which kept them as they were).
    pub fn cut_blocks(&self, now_ms: i64) {
        let fenced = self.fenced.load(Ordering::Acquire);
        for (i, slot) in self.partitions.iter().enumerate() {
            let mut p = slot.lock().unwrap_or_else(|e| e.into_inner());
            match p.fence {
                Some(fence) if fenced => {
                    if p.first_offset < fence {
                        self.cut_at(&mut p, i as u32, fence);
                    }
                }
                _ => self.cut(&mut p, i as u32, now_ms),
            }
        }
    }

    /// Cuts what `partition` received since its last cut into a block now, and returns the id
    /// of a batch that every record it received so far belongs to or precedes: the batch after
    /// the newest one whose close had begun. Called once a receiver has stopped for good (a
    /// partition that changed hands), so that its records are known to be done with once that
    /// batch has committed, however far the batch loop lags behind the clock.
    pub fn cut_partition(&self, partition: u32) -> u64 {
        if let Some(slot) = self.partitions.get(partition as usize) {
            let mut p = slot.lock().unwrap_or_else(|e| e.into_inner());
            match p.fence {
                Some(fence) if self.fenced.load(Ordering::Acquire) => {
                    if p.first_offset < fence {
                        self.cut_at(&mut p, partition, fence);
                    }
                }
                _ => self.cut(&mut p, partition, crate::clock::now_ms()),
            }
        }
        // Read after the block was sent: a close begun before it counts (conservatively, even
        // when its own Close is sent after the block), and any close begun later comes after.
        self.closing.load(Ordering::Acquire)
    }

    /// The tracker: cuts a last block per partition and closes batch `id`. A replay fence is
    /// lifted: the records past it go to the next batch.
    pub fn close_batch(&self, id: u64, now_ms: i64) {
        // Before anything of this close is sent: see [`Self::cut_partition`].
        self.closing.fetch_max(id + 1, Ordering::AcqRel);
        if self.fenced.swap(false, Ordering::AcqRel) {
            for (i, slot) in self.partitions.iter().enumerate() {
                let mut p = slot.lock().unwrap_or_else(|e| e.into_inner());
                match p.fence.take() {
                    Some(fence) if p.first_offset < fence => self.cut_at(&mut p, i as u32, fence),
                    // Records set aside at the fence, read again for this batch.
                    Some(_) if p.records.is_empty() => self.cut(&mut p, i as u32, now_ms),
                    _ => {}
                }
            }
            let _ = self.out.send(Cut::Close {
                id,
                closed_at: Instant::now(),
            });
            self.room.notify_waiters();
            return;
        }
        self.cut_blocks(now_ms);
        let _ = self.out.send(Cut::Close {
            id,
            closed_at: Instant::now(),
        });
    }

    /// Cuts the records of `p` below offset `at` into a block; the rest stay (copied into a
    /// fresh buffer: this happens once per replay, not on the hot path).
    fn cut_at(&self, p: &mut PartitionBuffer, partition: u32, at: u64) {
        let keep = (at.saturating_sub(p.first_offset) as usize).min(p.records.len());
        if keep == p.records.len() {
            self.cut(p, partition, crate::clock::now_ms());
            return;
        }
        let rest = p.records.slice(keep..p.records.len());
        p.records = p.records.slice(0..keep);
        let positions = std::mem::take(&mut p.positions);
        let (aside, later) = std::mem::take(&mut p.aside)
            .into_iter()
            .partition(|a| a.offset <= at);
        p.aside = aside;
        self.cut(p, partition, crate::clock::now_ms());
        // The chunk that crossed the fence ends after it: its position goes with the rest.
        p.positions = positions;
        p.aside = later;
        let before = p.bytes;
        p.records = rest;
        p.bytes = p.records.allocated() as u64;
        let added = p.bytes.saturating_sub(before);
        self.used.fetch_add(added, Ordering::AcqRel);
        // The rest stays queued for the pace since it came in: the cut block's token covers
        // only its own part.
    }

    fn cut(&self, p: &mut PartitionBuffer, partition: u32, now_ms: i64) {
        if p.records.is_empty() && p.aside.is_empty() {
            return;
        }
        let records = if p.records.is_empty() {
            // Only records set aside: the buffer stays.
            RecordBatch::default()
        } else {
            let spare = self.spare.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let records = std::mem::replace(&mut p.records, spare.unwrap_or_default());
            p.last_block = (records.len(), records.values.data.len());
            records
        };
        let bytes = if records.is_empty() {
            0
        } else {
            std::mem::take(&mut p.bytes)
        };
        let data = records.byte_size() as u64;
        let block = Block {
            id: BlockId {
                partition,
                seq: p.next_block,
            },
            first_offset: p.first_offset,
            bytes,
            queued: self.pace.token(partition, data),
            cut_ms: now_ms,
            records,
            positions: std::mem::take(&mut p.positions),
            aside: std::mem::take(&mut p.aside),
        };
        p.first_offset += block.records.len() as u64;
        p.next_block += 1;
        // Sent under the partition's lock, so a partition's blocks arrive in order.
        let _ = self.out.send(Cut::Block(block));
    }

    /// Takes back a processed block's buffer, to be the next block's (a few are kept; the
    /// memory stays warm and no page is faulted in again).
    pub fn recycle(&self, mut records: RecordBatch) {
        let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        if spare.len() < 2 * self.partitions.len() + 2
            && records.values.data.capacity() as u64 <= 2 * self.max_block_bytes
        {
            records.clear();
            spare.push(records);
        }
    }

    /// Gives back the bytes of processed blocks and wakes waiting receivers.
    pub fn release(&self, bytes: u64) {
        if bytes == 0 {
            return;
        }
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                Some(u.saturating_sub(bytes))
            });
        self.room.notify_waiters();
    }

    /// Marks `partition` as finished: its receiver will send nothing more.
    pub fn end_partition(&self, partition: u32) {
        if let Some(e) = self.ended.get(partition as usize) {
            e.store(true, Ordering::Release);
        }
    }

    /// Whether every partition is finished.
    pub fn all_ended(&self) -> bool {
        self.ended.iter().all(|e| e.load(Ordering::Acquire))
    }

    /// Whether any records are waiting to be cut.
    pub fn has_pending(&self) -> bool {
        self.partitions.iter().any(|slot| {
            let p = slot.lock().unwrap_or_else(|e| e.into_inner());
            !p.records.is_empty() || !p.aside.is_empty()
        })
    }
}

#[cfg(test)]
mod tests;
