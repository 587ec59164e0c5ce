//! Pacing: each partition's queue of unprocessed records is held to about `queue-target` of
//! its measured processing time, within the memory budget.
//!
//! The memory budget alone bounds bytes, not time: a source faster than its pipeline fills the
//! whole budget, and every batch then closes with the budget's worth of records still to
//! process (half a second of word count at 64 MiB), so each batch, the first included, ends
//! that much after its close. Like Flink's buffer debloating (a target time for in-flight
//! data) and Spark's backpressure rate estimator, the pace holds a partition's receiver while
//! its queued bytes (appended and not yet processed) exceed what its blocks are processed at
//! over the target time. Before the first block is processed (no rate yet) the queue is held
//! to the floor, two full blocks, so the first batch does not start with a full budget either.
//!
//! Queued bytes are counted by a [`Queued`] token each block carries: it gives its bytes back
//! when the block is dropped, processed or discarded, so no path that forgets a block can
//! hold a receiver for good. A hold also lasts at most [`MAX_HOLD`] per append.
//!
//! However fast a partition's blocks are processed, its queue is held to at most
//! [`CEILING_BLOCKS`] full blocks: past a few blocks a queue only waits, and takes memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// The longest a receiver is held by the pace for one append (the budget may hold it longer).
pub const MAX_HOLD: Duration = Duration::from_secs(1);

/// A queue is held to at most this many full blocks ([`Pace::ceiling`]), however fast its
/// blocks are processed. The rate is a block's own processing time, as if its partition had
/// a worker to itself; a fast pipeline (upper-case on files: about 1 GB/s a block) then had a
/// limit past the whole memory budget at 50 ms, so the budget was always full, and the process
/// held about two more bytes outside it for each byte in it (issue #16: 256 MiB of RSS at a
/// 64 MiB budget, 137 MiB at 32 MiB). A worker takes one block of a partition at a time, so a
/// few blocks queued keep it busy; more only wait.
pub const CEILING_BLOCKS: u64 = 4;

/// One partition's queue and processing rate.
#[derive(Debug, Default)]
struct Lane {
    /// Record bytes appended and not yet processed.
    queued: AtomicU64,
    /// Record bytes of its recent blocks and their processing time, smoothed (0: not
    /// measured yet); the rate is their ratio, so a block weighs by its size (a nearly empty
    /// block processed in no time does not make the partition look fast).
    bytes: AtomicU64,
    nanos: AtomicU64,
}

/// The pace of every partition (see the module's documentation).
#[derive(Debug)]
pub struct Pace {
    target: Duration,
    floor: u64,
    ceiling: u64,
    lanes: Vec<Arc<Lane>>,
    room: Arc<Notify>,
}

/// A block's share of its partition's queue, given back when it is dropped.
#[derive(Debug)]
pub struct Queued {
    lane: Arc<Lane>,
    bytes: u64,
    room: Arc<Notify>,
}

impl Drop for Queued {
    fn drop(&mut self) {
        let _ = self
            .lane
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                Some(q.saturating_sub(self.bytes))
            });
        self.room.notify_waiters();
    }
}

impl Pace {
    /// The pace of `partitions` partitions holding each queue to `target` of processing time
    /// (`Duration::ZERO`: off) and never below `floor` bytes; `room` is notified when a queue
    /// shrinks.
    pub fn new(partitions: u32, target: Duration, floor: u64, room: Arc<Notify>) -> Self {
        Pace {
            target,
            floor: floor.max(1),
            ceiling: u64::MAX,
            lanes: (0..partitions).map(|_| Arc::default()).collect(),
            room,
        }
    }

    /// The pace of a block manager whose blocks hold up to `block_bytes`: each queue held to
    /// at least two full blocks (the floor) and at most [`CEILING_BLOCKS`].
    pub fn for_blocks(
        partitions: u32,
        target: Duration,
        block_bytes: u64,
        room: Arc<Notify>,
    ) -> Self {
        Pace::new(partitions, target, 2 * block_bytes, room).ceiling(CEILING_BLOCKS * block_bytes)
    }

    /// Holds each queue to at most `bytes` (at least the floor), however fast its blocks are
    /// processed (without: no ceiling).
    pub fn ceiling(mut self, bytes: u64) -> Self {
        self.ceiling = bytes;
        self
    }

    /// Whether pacing is on.
    pub fn enabled(&self) -> bool {
        !self.target.is_zero()
    }

    /// Whether `partition` must wait before appending `size` more bytes: its queue holds
    /// something and would pass its limit.
    pub fn holds(&self, partition: u32, size: u64) -> bool {
        if !self.enabled() {
            return false;
        }
        let Some(lane) = self.lanes.get(partition as usize) else {
            return false;
        };
        let queued = lane.queued.load(Ordering::Acquire);
        queued > 0 && queued + size > self.limit(lane)
    }

    /// The most bytes `lane` may have queued: its rate over the target, at least the floor
    /// and at most the ceiling.
    fn limit(&self, lane: &Lane) -> u64 {
        let (bytes, nanos) = (
            lane.bytes.load(Ordering::Relaxed),
            lane.nanos.load(Ordering::Relaxed),
        );
        if nanos == 0 {
            return self.floor;
        }
        let by_time = bytes as u128 * self.target.as_nanos() / nanos as u128;
        (by_time.min(self.ceiling as u128) as u64).max(self.floor)
    }

    /// The limit of `partition`'s queue now, bytes (for tests and logs).
    pub fn limit_of(&self, partition: u32) -> u64 {
        self.lanes
            .get(partition as usize)
            .map_or(self.floor, |lane| self.limit(lane))
    }

    /// Counts `bytes` appended to `partition` as queued.
    pub fn queue(&self, partition: u32, bytes: u64) {
        if let Some(lane) = self.lanes.get(partition as usize) {
            lane.queued.fetch_add(bytes, Ordering::AcqRel);
        }
    }

    /// The token of a block of `partition` holding `bytes` of its queue.
    pub fn token(&self, partition: u32, bytes: u64) -> Option<Queued> {
        let lane = self.lanes.get(partition as usize)?;
        Some(Queued {
            lane: lane.clone(),
            bytes,
            room: self.room.clone(),
        })
    }

    /// Notes that a block of `partition` with `bytes` of records took `took` to process: the
    /// smoothed bytes and time move a quarter of the way to this block's.
    pub fn processed(&self, partition: u32, bytes: u64, took: Duration) {
        let Some(lane) = self.lanes.get(partition as usize) else {
            return;
        };
        if bytes == 0 {
            return;
        }
        let nanos = (took.as_nanos().min(u64::MAX as u128) as u64).max(1);
        let smooth = |avg: &AtomicU64, this: u64| {
            let _ = avg.fetch_update(Ordering::AcqRel, Ordering::Acquire, |a| {
                Some(if a == 0 { this } else { a - a / 4 + this / 4 })
            });
        };
        smooth(&lane.bytes, bytes);
        smooth(&lane.nanos, nanos);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pace(target_ms: u64) -> Pace {
        Pace::new(
            2,
            Duration::from_millis(target_ms),
            1000,
            Arc::new(Notify::new()),
        )
    }

    #[test]
    fn a_queue_is_held_to_its_rate_over_the_target_and_never_below_the_floor() {
        let p = pace(100);
        // No rate yet: the floor.
        p.queue(0, 900);
        assert!(!p.holds(0, 100));
        assert!(p.holds(0, 101));
        // 1 MB/s over 100 ms: 100 kB.
        p.processed(0, 1_000_000, Duration::from_secs(1));
        assert_eq!(p.limit_of(0), 100_000);
        assert!(!p.holds(0, 99_100));
        assert!(p.holds(0, 99_101));
        // The other partition is paced on its own.
        assert!(
            !p.holds(1, 5_000_000),
            "an empty queue always takes a chunk"
        );
    }

    #[test]
    fn a_fast_queue_is_held_to_a_few_blocks_whatever_its_rate() {
        let p = pace(100).ceiling(4000);
        // 1 GB/s over 100 ms would be 100 MB: held to the ceiling.
        p.processed(0, 1_000_000_000, Duration::from_secs(1));
        assert_eq!(p.limit_of(0), 4000);
        p.queue(0, 3900);
        assert!(!p.holds(0, 100));
        assert!(p.holds(0, 101));
        // A slow one is held to its rate, under the ceiling; never below the floor.
        p.processed(1, 30_000, Duration::from_secs(1));
        assert_eq!(p.limit_of(1), 3000);
        let p = pace(100).ceiling(10);
        p.processed(0, 1_000_000_000, Duration::from_secs(1));
        assert_eq!(p.limit_of(0), 1000, "the floor, over a ceiling below it");
    }

    #[test]
    fn a_dropped_token_gives_its_bytes_back_whatever_happened_to_its_block() {
        let p = pace(100);
        p.queue(0, 5000);
        let token = p.token(0, 5000);
        assert!(p.holds(0, 1));
        drop(token);
        assert!(!p.holds(0, 1000));
    }

    #[test]
    fn the_rate_follows_the_blocks_weighed_by_their_size() {
        let p = pace(1000);
        p.processed(1, 4_000, Duration::from_millis(1));
        assert_eq!(p.limit_of(1), 4_000_000);
        p.processed(1, 0, Duration::from_millis(1));
        assert_eq!(p.limit_of(1), 4_000_000, "an empty block says nothing");
        // A tiny block done in no time barely moves the rate (a ratio of averages, not an
        // average of ratios, which would have jumped to a quarter of 1 GB/s).
        p.processed(1, 1_000, Duration::from_micros(1));
        assert_eq!(p.limit_of(1), 3_250_000 * 1_000_000 / 750_250);
    }

    #[test]
    fn off_holds_nothing() {
        let p = pace(0);
        p.queue(0, u64::MAX / 2);
        assert!(!p.holds(0, 1 << 40));
    }
}
