//! A micro-benchmark of [`Wal::append`]: `partitions` tasks, each appending its blocks one
//! after another and waiting for each to be durable, as reliable receivers do.

use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::ObjectStore;
use object_store::path::Path;

use super::{Result, Wal, WalOptions};
use crate::batch::RecordBatch;

/// What to write.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Concurrent appenders, one per partition.
    pub partitions: u32,
    /// Blocks each appender writes.
    pub blocks_per_partition: u32,
    /// Records in a block.
    pub records_per_block: u32,
    /// Bytes in a record's value (each record also has an 8-byte key and a timestamp).
    pub record_bytes: usize,
    /// The log's options.
    pub opts: WalOptions,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            partitions: 4,
            blocks_per_partition: 50,
            records_per_block: 1000,
            record_bytes: 100,
            opts: WalOptions::default(),
        }
    }
}

/// What was measured.
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// Blocks written.
    pub blocks: u64,
    /// Records written.
    pub records: u64,
    /// Bytes written to the store, framing included.
    pub bytes: u64,
    /// Segments (PUTs) the blocks took.
    pub segments: u64,
    /// Syncs to the disk the segments took (local directory with fsync; else 0).
    pub syncs: u64,
    /// Wall time of the whole run.
    pub elapsed: Duration,
    /// Median latency of one append.
    pub p50: Duration,
    /// 99th percentile latency of one append.
    pub p99: Duration,
}

impl BenchReport {
    /// Records made durable per second.
    pub fn records_per_s(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64()
    }

    /// Megabytes (10^6) written per second.
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64()
    }
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} blocks ({} records, {:.1} MB) in {:.2} s over {} segments ({:.1} blocks/segment): \
             {} syncs; {:.0} records/s, {:.1} MB/s; append latency p50 {:.2} ms, p99 {:.2} ms",
            self.blocks,
            self.records,
            self.bytes as f64 / 1e6,
            self.elapsed.as_secs_f64(),
            self.segments,
            self.blocks as f64 / self.segments.max(1) as f64,
            self.syncs,
            self.records_per_s(),
            self.mb_per_s(),
            self.p50.as_secs_f64() * 1e3,
            self.p99.as_secs_f64() * 1e3,
        )
    }
}

/// Appends `cfg`'s blocks to a fresh log under `prefix` and measures; deletes the segments
/// afterwards. The prefix should be empty (blocks already there are read, then deleted too).
pub async fn append_throughput(
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    cfg: &BenchConfig,
) -> Result<BenchReport> {
    let (wal, _) = Wal::open(store, prefix, cfg.opts.clone()).await?;
    let value = vec![b'x'; cfg.record_bytes];
    let mut block = RecordBatch::with_capacity(
        cfg.records_per_block as usize,
        cfg.records_per_block as usize * cfg.record_bytes,
    );
    for i in 0..cfg.records_per_block as u64 {
        block.push(
            Some(&i.to_le_bytes()),
            &value,
            Some(1_700_000_000_000 + i as i64),
        );
    }
    let block = Arc::new(block);
    let start = Instant::now();
    let tasks: Vec<_> = (0..cfg.partitions)
        .map(|p| {
            let (wal, block, n) = (wal.clone(), block.clone(), cfg.blocks_per_partition);
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(n as usize);
                for b in 0..n as u64 {
                    let t = Instant::now();
                    wal.append(p, b * block.len() as u64, &block).await?;
                    latencies.push(t.elapsed());
                }
                Ok::<_, super::WalError>(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.map_err(|_| super::WalError::Closed)??);
    }
    let elapsed = start.elapsed();
    let stats = wal.stats();
    wal.truncate(&vec![u64::MAX; cfg.partitions as usize])
        .await?;
    latencies.sort();
    let pct = |q: f64| {
        let i = (latencies.len().saturating_sub(1) as f64 * q) as usize;
        latencies.get(i).copied().unwrap_or_default()
    };
    Ok(BenchReport {
        blocks: stats.blocks_written,
        records: stats.blocks_written * cfg.records_per_block as u64,
        bytes: stats.bytes_written,
        segments: stats.segments_written,
        syncs: stats.syncs,
        elapsed,
        p50: pct(0.5),
        p99: pct(0.99),
    })
}
