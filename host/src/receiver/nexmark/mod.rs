//! The `nexmark` source: the Nexmark benchmark's auction events (persons, auctions, bids), made
//! from a seed and the event number ([`model`]), so a restart makes the same events again.
//!
//! Event `n` goes to partition `n % partitions`; a partition's record offset `k` is event
//! `k * partitions + p`, so the offset a restart resumes at names the next event exactly, as
//! for the `generator` source. Each record's value is the event as one JSON object, its key
//! the auction id (bids, auctions) or the person id (persons) in decimal, its timestamp the
//! event time in ms.

pub mod model;

use std::sync::Arc;

use super::{BuildContext, BuildError, Receiver, Resume, Source};
use crate::batch::{Keys, RecordBatch};

/// `kind = "nexmark"`: the keys and defaults are in `config::RawSource`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NexmarkConfig {
    /// The stream's name.
    pub name: String,
    /// Partitions; the events are dealt out by event number.
    pub partitions: u32,
    /// The same seed gives the same events.
    pub seed: u64,
    /// Events per second over all partitions; 0 is as fast as the memory budget lets it. Event
    /// times follow it (0: [`model::DEFAULT_EVENT_RATE`]).
    pub rate: u64,
    /// Events over all partitions, then the stream ends.
    pub events: Option<u64>,
}

impl Default for NexmarkConfig {
    fn default() -> Self {
        NexmarkConfig {
            name: "input".to_owned(),
            partitions: 1,
            seed: 42,
            rate: 0,
            events: None,
        }
    }
}

impl NexmarkConfig {
    /// Needs nothing outside itself: it is its own built source.
    pub fn build(&self, _ctx: &mut BuildContext<'_>) -> Result<Arc<dyn Source>, BuildError> {
        Ok(Arc::new(self.clone()))
    }

    /// How many events partition `p` has (`None`: no end).
    pub fn partition_events(&self, p: u32) -> Option<u64> {
        let parts = u64::from(self.partitions.max(1));
        self.events
            .map(|e| e / parts + u64::from(u64::from(p) < e % parts))
    }
}

impl Source for NexmarkConfig {
    fn kind(&self) -> &'static str {
        "nexmark"
    }

    fn partitions(&self) -> u32 {
        self.partitions
    }

    /// Its events are a function of their number: a restart makes them again exactly.
    fn replayable(&self) -> bool {
        true
    }

    fn receiver(self: Arc<Self>, partition: u32, resume: Resume) -> Receiver {
        Receiver::Nexmark(NexmarkReceiver::new(&self, partition, resume.offset))
    }
}

/// Makes the events of one partition, in order.
#[derive(Debug, Clone)]
pub struct EventGenerator {
    seed: u64,
    rate: u64,
    partition: u64,
    partitions: u64,
    /// The partition's next record offset.
    next: u64,
}

impl EventGenerator {
    /// The generator of `partition`, starting at its record offset `offset`.
    pub fn new(cfg: &NexmarkConfig, partition: u32, offset: u64) -> Self {
        EventGenerator {
            seed: cfg.seed,
            rate: cfg.rate,
            partition: u64::from(partition),
            partitions: u64::from(cfg.partitions.max(1)),
            next: offset,
        }
    }

    /// The partition's offset of the next event (its position: a restart resumes there).
    pub fn position(&self) -> u64 {
        self.next
    }

    /// The event number of the next event.
    pub fn next_event(&self) -> u64 {
        self.next * self.partitions + self.partition
    }

    /// Appends the next `n` events to `out`: value, key and timestamp each. Writes straight
    /// into `out`'s buffers, with no allocation per event.
    pub fn fill(&mut self, out: &mut RecordBatch, n: usize) {
        let before = out.len();
        if out.keys.is_none() {
            let mut keys = Keys::default();
            for _ in 0..before {
                keys.push(None);
            }
            out.keys = Some(keys);
        }
        let mut digits = [0u8; 20];
        for _ in 0..n {
            let event = self.next_event();
            let head = model::write_event(out.values.data.to_mut(), self.seed, self.rate, event);
            out.values.ends.push(out.values.data.len() as u32);
            if let Some(keys) = &mut out.keys {
                keys.push(Some(crate::scheduler::combine::fmt_u64(
                    head.key,
                    &mut digits,
                )));
            }
            if out.timestamps.len() < out.values.len() - 1 {
                out.timestamps.resize(out.values.len() - 1, head.time_ms);
            }
            out.timestamps.push(head.time_ms);
            self.next += 1;
        }
    }
}

/// The bytes `n` events take in a batch, about: the average event (persons ~200 bytes,
/// auctions ~500, bids ~100 plus the JSON names), its key and timestamp.
fn size_of(n: u64) -> usize {
    n as usize * 240
}

/// The `nexmark` receiver of one partition.
#[derive(Debug)]
pub struct NexmarkReceiver {
    events: EventGenerator,
    /// Events per second of this partition (0: no pacing).
    rate: f64,
    /// The partition's event count, then it ends.
    end: Option<u64>,
}

impl NexmarkReceiver {
    /// The receiver of `partition`, starting at record offset `offset` (a restart goes on
    /// where the committed batches end, or where the batch being recomputed starts).
    pub fn new(cfg: &NexmarkConfig, partition: u32, offset: u64) -> Self {
        NexmarkReceiver {
            events: EventGenerator::new(cfg, partition, offset),
            rate: cfg.rate as f64 / f64::from(cfg.partitions.max(1)),
            end: cfg.partition_events(partition),
        }
    }

    /// Generates at the configured rate (or as fast as the budget lets it) until the end.
    pub async fn run(
        &mut self,
        out: &super::PartitionWriter,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Result<super::Finished, super::ReceiverError> {
        const CHUNK: u64 = 2048;
        let started = std::time::Instant::now();
        let start_at = self.events.position();
        loop {
            if *stop.borrow() {
                return Ok(super::Finished::Stopped);
            }
            let remaining = self
                .end
                .map_or(u64::MAX, |e| e.saturating_sub(self.events.position()));
            if remaining == 0 {
                return Ok(super::Finished::End);
            }
            let mut n = CHUNK.min(remaining);
            if self.rate > 0.0 {
                let due = (started.elapsed().as_secs_f64() * self.rate) as u64;
                let done = self.events.position() - start_at;
                if due <= done {
                    tokio::select! {
                        _ = tokio::time::sleep(std::time::Duration::from_millis(5)) => {}
                        _ = stop.changed() => {}
                    }
                    continue;
                }
                n = n.min(due - done);
            }
            let events = &mut self.events;
            out.append_with(size_of(n), |buf| events.fill(buf, n as usize))
                .await;
            tokio::task::yield_now().await;
        }
    }
}

#[cfg(test)]
mod tests;
