//! One batch's job: one task per partition through the steps, on the bounded worker pool, then
//! the sinks (`write` per partition, `commit` once).
//!
//! Retry policy: a `retryable` plugin error or a timeout is retried on a fresh instance, up to
//! three times with backoff (100, 200, 400 ms); a `bad-record` error dead-letters that record
//! and calls again without it; anything else (a panic, a fatal error, memory past the cap) stops
//! the pipeline with the plugin, its digest, the partition and the batch in the message.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::batch::RecordBatch;
use crate::config::plan::{Plan, StepPlan};
use crate::plugin::{CallContext, Failure, PluginError, TransformStage};
use crate::sink::SinkError;
use crate::sink::dead_letter::DeadLetter;

/// A job failed and the pipeline must stop.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// A plugin failed in a way retries did not cure.
    #[error("batch {batch}: {source}")]
    Plugin {
        /// The batch.
        batch: u64,
        /// The plugin's error (naming plugin, digest, partition and batch).
        source: PluginError,
    },
    /// A sink failed.
    #[error("batch {batch}: {source}")]
    Sink {
        /// The batch.
        batch: u64,
        /// The sink's error.
        source: SinkError,
    },
}

/// Where each record of a partition's data came from: its source partition and offset.
#[derive(Debug, Clone)]
pub enum Lineage {
    /// Record `i` is offset `start + i` of `partition`.
    Range {
        /// The source partition.
        partition: u32,
        /// The first record's offset.
        start: u64,
    },
    /// Record `i` came from `self.0[i]`.
    Explicit(Vec<(u32, u64)>),
}

impl Lineage {
    /// Where record `i` came from.
    pub fn at(&self, i: usize) -> (u32, u64) {
        match self {
            Lineage::Range { partition, start } => (*partition, start + i as u64),
            Lineage::Explicit(v) => v.get(i).copied().unwrap_or((u32::MAX, u64::MAX)),
        }
    }

    /// The lineage after a step with these origins (empty: a map, unchanged).
    pub fn follow(self, origins: &[u32]) -> Lineage {
        if origins.is_empty() {
            return self;
        }
        Lineage::Explicit(origins.iter().map(|&o| self.at(o as usize)).collect())
    }
}

/// One partition's data between steps.
#[derive(Debug)]
pub struct Part {
    /// The partition (after a repartition, the new one).
    pub partition: u32,
    /// The records.
    pub records: RecordBatch,
    /// Where they came from.
    pub lineage: Lineage,
}

/// What a job did.
#[derive(Debug, Default, Clone, Copy)]
pub struct JobStats {
    /// Records in.
    pub records_in: u64,
    /// Records written to the sinks (by the first sink).
    pub records_out: u64,
    /// Records dead-lettered.
    pub dead_letters: u64,
}

/// Runs `f` over `items` on at most `workers` threads, keeping the order of the results.
pub fn pool_map<T: Send, R: Send>(
    workers: usize,
    items: Vec<T>,
    f: impl Fn(T) -> R + Sync,
) -> Vec<R> {
    if workers <= 1 || items.len() <= 1 {
        return items.into_iter().map(f).collect();
    }
    let n = items.len();
    let slots: Vec<Mutex<Option<T>>> = items.into_iter().map(|t| Mutex::new(Some(t))).collect();
    let results: Vec<Mutex<Option<R>>> = (0..n).map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..workers.min(n) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let item = slots[i].lock().unwrap_or_else(|e| e.into_inner()).take();
                    if let Some(item) = item {
                        let r = f(item);
                        *results[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
                    }
                }
            });
        }
    });
    results
        .into_iter()
        .filter_map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
        .collect()
}

/// Runs batch `batch_id` (batch time `time_ms`) over `parts`.
pub fn run(
    plan: &Plan,
    batch_id: u64,
    time_ms: i64,
    parts: Vec<Part>,
) -> Result<JobStats, JobError> {
    let mut stats = JobStats {
        records_in: parts.iter().map(|p| p.records.len() as u64).sum(),
        ..JobStats::default()
    };
    let dead_before = plan.dead_letters.total();
    let ctx = |partition: u32| CallContext {
        stream: plan.stream.clone(),
        partition,
        batch_id,
        batch_time_ms: time_ms,
        part: 0,
    };
    let mut parts = parts;
    for step in &plan.steps {
        parts = match step {
            StepPlan::Plugin(stage) => pool_map(plan.workers, parts, |part| {
                transform_part(plan, stage, &ctx(part.partition), part)
            })
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?,
            StepPlan::RepartitionByKey(n) => {
                let n = n.unwrap_or(parts.len() as u32).max(1);
                repartition(parts, n)
            }
            StepPlan::CountByKey => pool_map(plan.workers, parts, |p| count_by_key(p, time_ms)),
            StepPlan::Native(step) => pool_map(plan.workers, parts, |p| Part {
                partition: p.partition,
                records: (step.f)(&p.records),
                lineage: p.lineage,
            }),
        };
    }
    plan.dead_letters
        .flush(&plan.stream, batch_id)
        .map_err(|source| JobError::Sink {
            batch: batch_id,
            source,
        })?;
    stats.dead_letters = plan.dead_letters.total() - dead_before;
    stats.records_out = parts.iter().map(|p| p.records.len() as u64).sum();
    for sink in &plan.sinks {
        // Like transform calls, a big partition is written in parts of bounded size.
        let results = pool_map(plan.workers, parts.iter().collect(), |part: &Part| {
            let ranges = call_ranges(&part.records);
            if ranges.len() == 1 {
                return with_retry(|| sink.write(&ctx(part.partition), &part.records));
            }
            for (n, range) in ranges.into_iter().enumerate() {
                let slice = part.records.slice(range);
                let ctx = CallContext {
                    part: n as u32,
                    ..ctx(part.partition)
                };
                with_retry(|| sink.write(&ctx, &slice))?;
            }
            Ok(())
        });
        for r in results {
            r.map_err(|source| JobError::Sink {
                batch: batch_id,
                source,
            })?;
        }
        with_retry(|| sink.commit(&plan.stream, batch_id)).map_err(|source| JobError::Sink {
            batch: batch_id,
            source,
        })?;
    }
    Ok(stats)
}

fn with_retry(mut f: impl FnMut() -> Result<(), SinkError>) -> Result<(), SinkError> {
    let mut attempt = 0;
    loop {
        match f() {
            Err(e) if e.retryable() && attempt < 3 => {
                tracing::warn!(error = %e, attempt, "A sink call failed; retrying.");
                std::thread::sleep(Duration::from_millis(100 << attempt));
                attempt += 1;
            }
            r => return r,
        }
    }
}

/// The most value bytes sent in one call. A partition's batch above it is sent in several
/// calls, in order, with the same batch id: a plugin's memory cap then bounds the call, not
/// the batch (at full speed a one-second batch can hold tens of megabytes per partition).
pub const MAX_CALL_BYTES: usize = 8 << 20;

/// Splits `0..batch.len()` into ranges of at most about `MAX_CALL_BYTES` of values.
fn call_ranges(batch: &RecordBatch) -> Vec<std::ops::Range<usize>> {
    let mut ranges = Vec::new();
    let mut start = 0;
    let mut base = 0usize;
    for (i, &end) in batch.values.ends.iter().enumerate() {
        if end as usize - base > MAX_CALL_BYTES && i > start {
            ranges.push(start..i);
            start = i;
            base = if i == 0 {
                0
            } else {
                batch.values.ends[i - 1] as usize
            };
        }
    }
    ranges.push(start..batch.len());
    ranges
}

fn transform_part(
    plan: &Plan,
    stage: &TransformStage,
    ctx: &CallContext,
    part: Part,
) -> Result<Part, JobError> {
    let ranges = call_ranges(&part.records);
    if ranges.len() == 1 {
        return transform_call(plan, stage, ctx, part);
    }
    // Several calls: each gets a slice; outputs are appended, with lineage per slice.
    let mut out = Part {
        partition: part.partition,
        records: RecordBatch::default(),
        lineage: Lineage::Explicit(Vec::new()),
    };
    let mut lineage = Vec::new();
    for (n, range) in ranges.into_iter().enumerate() {
        let ctx = &CallContext {
            part: n as u32,
            ..ctx.clone()
        };
        let slice = Part {
            partition: part.partition,
            records: part.records.slice(range.clone()),
            lineage: Lineage::Explicit(range.clone().map(|i| part.lineage.at(i)).collect()),
        };
        let done = transform_call(plan, stage, ctx, slice)?;
        out.records.append(&done.records);
        lineage.extend((0..done.records.len()).map(|i| done.lineage.at(i)));
    }
    out.lineage = Lineage::Explicit(lineage);
    Ok(out)
}

fn transform_call(
    plan: &Plan,
    stage: &TransformStage,
    ctx: &CallContext,
    part: Part,
) -> Result<Part, JobError> {
    let info = stage.plugin().info();
    let dead_letter = |index: usize, reason: &str, batch: &RecordBatch, lineage: &Lineage| {
        let (partition, offset) = lineage.at(index);
        plan.dead_letters.add(
            &plan.stream,
            ctx.batch_id,
            DeadLetter {
                partition,
                offset,
                plugin: &info.name,
                digest: &info.digest,
                reason,
                batch,
                index,
            },
        );
    };
    let mut input = part.records;
    let mut lineage = part.lineage;
    let mut retries = 0;
    let mut bad_rounds = 0;
    loop {
        match stage.transform(ctx, &input) {
            Ok(out) => {
                for (index, reason) in &out.rejected {
                    dead_letter(*index as usize, reason, &input, &lineage);
                }
                return Ok(Part {
                    partition: part.partition,
                    lineage: lineage.follow(&out.origins),
                    records: out.batch,
                });
            }
            Err(e) => match &e.failure {
                Failure::BadRecord { index, reason }
                    if (*index as usize) < input.len() && bad_rounds < 1000 =>
                {
                    let index = *index as usize;
                    dead_letter(index, reason, &input, &lineage);
                    let keep: Vec<u32> = (0..input.len() as u32)
                        .filter(|&i| i as usize != index)
                        .collect();
                    input = input.gather(&keep);
                    lineage = lineage.follow(&keep);
                    bad_rounds += 1;
                }
                f if f.retryable() && retries < 3 => {
                    tracing::warn!(error = %e, retry = retries + 1, "A plugin call failed; retrying on a fresh instance.");
                    std::thread::sleep(Duration::from_millis(100 << retries));
                    retries += 1;
                }
                _ => {
                    return Err(JobError::Plugin {
                        batch: ctx.batch_id,
                        source: e,
                    });
                }
            },
        }
    }
}

fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Moves records so that equal keys meet in one of `n` partitions. A record without a key is
/// placed by its value.
pub fn repartition(parts: Vec<Part>, n: u32) -> Vec<Part> {
    let mut out: Vec<(RecordBatch, Vec<(u32, u64)>)> = (0..n).map(|_| Default::default()).collect();
    let mut indices: Vec<Vec<u32>> = vec![Vec::new(); n as usize];
    for part in &parts {
        for v in indices.iter_mut() {
            v.clear();
        }
        for i in 0..part.records.len() {
            let k = part.records.key(i).unwrap_or_else(|| part.records.value(i));
            indices[(fnv(k) % n as u64) as usize].push(i as u32);
        }
        for (target, idx) in indices.iter().enumerate() {
            part.records.gather_into(idx, &mut out[target].0);
            out[target]
                .1
                .extend(idx.iter().map(|&i| part.lineage.at(i as usize)));
        }
    }
    out.into_iter()
        .enumerate()
        .map(|(p, (records, lineage))| Part {
            partition: p as u32,
            records,
            lineage: Lineage::Explicit(lineage),
        })
        .collect()
}

/// One record per key: the key and its count in decimal, sorted by key, timestamped with the
/// batch time.
pub fn count_by_key(part: Part, time_ms: i64) -> Part {
    let mut counts: HashMap<Option<&[u8]>, u64> = HashMap::new();
    for i in 0..part.records.len() {
        *counts.entry(part.records.key(i)).or_default() += 1;
    }
    let mut keys: Vec<_> = counts.into_iter().collect();
    keys.sort_unstable();
    let mut out = RecordBatch::with_capacity(keys.len(), keys.len() * 4);
    let mut num = itoa_buf();
    for (key, count) in keys {
        out.push(
            Some(key.unwrap_or_default()),
            fmt_u64(count, &mut num),
            Some(time_ms),
        );
    }
    Part {
        partition: part.partition,
        lineage: Lineage::Range {
            partition: part.partition,
            start: 0,
        },
        records: out,
    }
}

fn itoa_buf() -> [u8; 20] {
    [0; 20]
}

fn fmt_u64(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyed(pairs: &[(&str, &str)]) -> RecordBatch {
        let mut b = RecordBatch::default();
        for (k, v) in pairs {
            b.push(Some(k.as_bytes()), v.as_bytes(), Some(0));
        }
        b
    }

    #[test]
    fn repartition_sends_equal_keys_to_one_partition_and_keeps_lineage() {
        let parts = vec![
            Part {
                partition: 0,
                records: keyed(&[("a", "1"), ("b", "2")]),
                lineage: Lineage::Range {
                    partition: 0,
                    start: 10,
                },
            },
            Part {
                partition: 1,
                records: keyed(&[("a", "3")]),
                lineage: Lineage::Range {
                    partition: 1,
                    start: 0,
                },
            },
        ];
        let out = repartition(parts, 3);
        let with_a: Vec<_> = out
            .iter()
            .filter(|p| (0..p.records.len()).any(|i| p.records.key(i) == Some(b"a")))
            .collect();
        assert_eq!(with_a.len(), 1);
        let p = with_a[0];
        let origins: Vec<_> = (0..p.records.len())
            .filter(|&i| p.records.key(i) == Some(b"a"))
            .map(|i| p.lineage.at(i))
            .collect();
        assert_eq!(origins, [(0, 10), (1, 0)]);
        assert_eq!(out.iter().map(|p| p.records.len()).sum::<usize>(), 3);
    }

    #[test]
    fn count_by_key_counts_each_key_once() {
        let part = Part {
            partition: 0,
            records: keyed(&[("x", ""), ("y", ""), ("x", "")]),
            lineage: Lineage::Range {
                partition: 0,
                start: 0,
            },
        };
        let out = count_by_key(part, 5);
        assert_eq!(out.records.len(), 2);
        assert_eq!(out.records.key(0), Some(&b"x"[..]));
        assert_eq!(out.records.value(0), b"2");
        assert_eq!(out.records.value(1), b"1");
    }

    #[test]
    fn a_big_batch_is_split_into_calls_of_bounded_size() {
        let value = vec![b'x'; 1 << 20];
        let mut b = RecordBatch::default();
        for _ in 0..20 {
            b.push(None, &value, Some(0));
        }
        let ranges = call_ranges(&b);
        assert!(ranges.len() >= 2, "{ranges:?}");
        assert_eq!(ranges.first().unwrap().start, 0);
        assert_eq!(ranges.last().unwrap().end, 20);
        for r in &ranges {
            let bytes: usize = r.clone().map(|i| b.value(i).len()).sum();
            assert!(bytes <= MAX_CALL_BYTES + (1 << 20), "{bytes}");
        }
        let slice = b.slice(ranges[1].clone());
        assert_eq!(slice.len(), ranges[1].len());
        slice.validate().unwrap();
    }

    #[test]
    fn the_pool_keeps_the_order_of_results() {
        let out = pool_map(2, (0..100).collect(), |i: i32| i * 2);
        assert_eq!(out, (0..100).map(|i| i * 2).collect::<Vec<_>>());
    }
}
