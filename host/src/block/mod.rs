//! The block generator and the block manager.
//!
//! Receivers append records to their partition's buffer. Every block interval the block
//! generator cuts what arrived since the last cut into a block: an immutable, numbered range
//! of that buffer. Every batch interval the tracker takes each partition's buffer whole, with
//! its blocks, as the input of the next batch.
//!
//! Departure from DESIGN.md, on purpose: a block is a range of the partition's append-only
//! buffer rather than a separate object. Cutting one copies nothing, and a batch of five
//! blocks needs no concatenation: a record is copied once from the receiver into the buffer
//! and once into the plugin. (The write-ahead log writes each block's range when it is cut.)
//!
//! The manager holds received records within a byte budget. When the budget is used up,
//! [`BlockManager::append`] waits until a finished batch releases its bytes: that wait is the
//! backpressure (a TCP receiver stops reading its socket, an AMQP receiver stops granting
//! credit, the generator stops generating).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::batch::RecordBatch;

/// A block's identity: its partition and its number there, counted from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockId {
    /// The partition.
    pub partition: u32,
    /// The block's number in its partition.
    pub seq: u64,
}

/// A cut block: which records of its batch's buffer it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// Its identity.
    pub id: BlockId,
    /// Its records: indices into the batch input's records.
    pub records: std::ops::Range<usize>,
    /// When it was cut, ms since the epoch.
    pub cut_ms: i64,
}

/// One partition's records for one batch.
#[derive(Debug, Default)]
pub struct PartitionInput {
    /// The partition.
    pub partition: u32,
    /// Its records.
    pub records: RecordBatch,
    /// The partition offset of the first record (records are numbered from 0 per partition).
    pub first_offset: u64,
    /// The blocks the records were cut into.
    pub blocks: Vec<Block>,
    /// The bytes the budget counts for these records (released when the batch is done).
    pub bytes: u64,
}

#[derive(Debug, Default)]
struct PartitionBuffer {
    records: RecordBatch,
    first_offset: u64,
    block_start: usize,
    next_block: u64,
    blocks: Vec<Block>,
    bytes: u64,
}

/// Holds received records within a memory budget, cuts blocks and hands them to batches.
#[derive(Debug)]
pub struct BlockManager {
    budget: u64,
    used: AtomicU64,
    peak: AtomicU64,
    waits: AtomicU64,
    partitions: Vec<Mutex<PartitionBuffer>>,
    ended: Vec<AtomicBool>,
    room: Notify,
    durable: Vec<watch::Sender<u64>>,
}

impl BlockManager {
    /// A manager for `partitions` partitions holding at most about `budget` bytes.
    pub fn new(partitions: u32, budget: u64) -> Self {
        BlockManager {
            budget,
            used: AtomicU64::new(0),
            peak: AtomicU64::new(0),
            waits: AtomicU64::new(0),
            partitions: (0..partitions).map(|_| Mutex::default()).collect(),
            ended: (0..partitions).map(|_| AtomicBool::new(false)).collect(),
            room: Notify::new(),
            durable: (0..partitions).map(|_| watch::channel(0).0).collect(),
        }
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

    /// The budget.
    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// Appends a receiver's records to `partition`, first waiting while the budget is used up,
    /// and returns the partition offsets they got. A chunk larger than the whole budget is let
    /// in when nothing else is held, so it cannot wait forever.
    pub async fn append(&self, partition: u32, chunk: &RecordBatch) -> std::ops::Range<u64> {
        if chunk.is_empty() {
            let next = self.next_offset(partition);
            return next..next;
        }
        let size = chunk.byte_size() as u64;
        let mut waited = false;
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let used = self.used.load(Ordering::Acquire);
            if used + size <= self.budget || used == 0 {
                break;
            }
            if !waited {
                waited = true;
                self.waits.fetch_add(1, Ordering::Relaxed);
            }
            // Also wake now and then, in case a release raced with this check.
            let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
        }
        let offsets = self.insert(partition, chunk, size);
        // Plain mode: a record is as durable as it will get once it is held here. (Reliable
        // mode moves this mark after the block's write-ahead-log write instead.)
        if let Some(d) = self.durable.get(partition as usize) {
            d.send_if_modified(|v| {
                let moved = *v < offsets.end;
                *v = (*v).max(offsets.end);
                moved
            });
        }
        offsets
    }

    fn insert(&self, partition: u32, chunk: &RecordBatch, size: u64) -> std::ops::Range<u64> {
        let Some(slot) = self.partitions.get(partition as usize) else {
            return 0..0;
        };
        let mut p = slot.lock().unwrap_or_else(|e| e.into_inner());
        let start = p.first_offset + p.records.len() as u64;
        p.records.append(chunk);
        p.bytes += size;
        let now = self.used.fetch_add(size, Ordering::AcqRel) + size;
        self.peak.fetch_max(now, Ordering::Relaxed);
        start..start + chunk.len() as u64
    }

    fn next_offset(&self, partition: u32) -> u64 {
        self.partitions.get(partition as usize).map_or(0, |slot| {
            let p = slot.lock().unwrap_or_else(|e| e.into_inner());
            p.first_offset + p.records.len() as u64
        })
    }

    /// Watches `partition`'s durable mark: every record with an offset below it is durable
    /// (plain mode: as soon as it is appended). A partition out of range never moves.
    pub fn durable(&self, partition: u32) -> watch::Receiver<u64> {
        self.durable
            .get(partition as usize)
            .map_or_else(|| watch::channel(0).1, watch::Sender::subscribe)
    }

    /// The block generator: cuts what each partition received since its last cut into a block.
    pub fn cut_blocks(&self, now_ms: i64) {
        for (i, slot) in self.partitions.iter().enumerate() {
            let mut p = slot.lock().unwrap_or_else(|e| e.into_inner());
            cut(&mut p, i as u32, now_ms);
        }
    }

    /// The tracker: cuts a last block and takes every partition's records for a batch.
    pub fn take_batch(&self, now_ms: i64) -> Vec<PartitionInput> {
        self.partitions
            .iter()
            .enumerate()
            .map(|(i, slot)| {
                let mut p = slot.lock().unwrap_or_else(|e| e.into_inner());
                cut(&mut p, i as u32, now_ms);
                let records = std::mem::take(&mut p.records);
                let first_offset = p.first_offset;
                p.first_offset += records.len() as u64;
                p.block_start = 0;
                PartitionInput {
                    partition: i as u32,
                    records,
                    first_offset,
                    blocks: std::mem::take(&mut p.blocks),
                    bytes: std::mem::take(&mut p.bytes),
                }
            })
            .collect()
    }

    /// Gives back the bytes of a finished batch and wakes waiting receivers.
    pub fn release(&self, bytes: u64) {
        self.used
            .fetch_sub(bytes.min(self.used()), Ordering::AcqRel);
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

    /// Whether any records are waiting for a batch.
    pub fn has_pending(&self) -> bool {
        self.partitions.iter().any(|slot| {
            !slot
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .records
                .is_empty()
        })
    }
}

fn cut(p: &mut PartitionBuffer, partition: u32, now_ms: i64) {
    let end = p.records.len();
    if end > p.block_start {
        p.blocks.push(Block {
            id: BlockId {
                partition,
                seq: p.next_block,
            },
            records: p.block_start..end,
            cut_ms: now_ms,
        });
        p.next_block += 1;
        p.block_start = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(values: &[&str]) -> RecordBatch {
        RecordBatch::from_values(values.iter().map(|v| v.as_bytes()))
    }

    #[tokio::test]
    async fn blocks_are_cut_per_interval_and_a_batch_takes_them_all_in_order() {
        let m = BlockManager::new(2, 1 << 20);
        m.append(0, &chunk(&["a", "b"])).await;
        m.cut_blocks(1);
        m.append(0, &chunk(&["c"])).await;
        m.append(1, &chunk(&["x"])).await;
        let batch = m.take_batch(2);
        assert_eq!(batch[0].records.len(), 3);
        assert_eq!(
            batch[0]
                .blocks
                .iter()
                .map(|b| b.records.clone())
                .collect::<Vec<_>>(),
            [0..2, 2..3]
        );
        assert_eq!(batch[0].blocks[1].id.seq, 1);
        assert_eq!(batch[1].blocks.len(), 1);
        // Offsets continue across batches.
        m.append(0, &chunk(&["d"])).await;
        let next = m.take_batch(3);
        assert_eq!(next[0].first_offset, 3);
        assert_eq!(next[0].blocks[0].id.seq, 2);
    }

    #[tokio::test]
    async fn appends_get_consecutive_offsets_and_plain_mode_is_durable_at_once() {
        let m = BlockManager::new(1, 1 << 20);
        let durable = m.durable(0);
        assert_eq!(m.append(0, &chunk(&["a", "b"])).await, 0..2);
        assert_eq!(*durable.borrow(), 2);
        m.take_batch(0);
        assert_eq!(m.append(0, &chunk(&[])).await, 2..2);
        assert_eq!(m.append(0, &chunk(&["c"])).await, 2..3);
        assert_eq!(*durable.borrow(), 3);
    }

    #[tokio::test]
    async fn a_full_budget_makes_appends_wait_until_a_batch_is_released() {
        let m = std::sync::Arc::new(BlockManager::new(1, 100));
        let big = RecordBatch::from_values([&[0u8; 80][..]]);
        m.append(0, &big).await;
        let m2 = m.clone();
        let waiter = tokio::spawn(async move {
            m2.append(0, &RecordBatch::from_values([&[0u8; 80][..]]))
                .await;
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiter.is_finished(), "the second append waits for room");
        assert_eq!(m.backpressure_waits(), 1);
        let batch = m.take_batch(0);
        m.release(batch[0].bytes);
        tokio::time::timeout(Duration::from_secs(2), waiter)
            .await
            .expect("released room lets it in")
            .unwrap();
        assert!(m.used() <= 100);
    }
}
