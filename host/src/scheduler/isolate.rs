//! Isolating poison records. When a transform call fails with a trap, a timeout or memory past
//! its cap ([`poison_kind`]) and the step's `on-poison` is `"dead-letter"`, the block is called
//! again in halves until the records that fail alone are found. Each call after a trap runs on
//! an instance that has not trapped (the plugin drops a trapped one). The records that fail
//! alone are dead-lettered with the failure; the good halves' outputs are joined in input
//! order, each output record keeping the source position of the input it came from.
//!
//! Cost: one poison record in a block of `n` records costs about `2·log₂(n)` more calls (at
//! each level the half holding it fails and its sibling runs), over halves that shrink, so
//! about `2n` more records pass through the plugin; a time-out costs the time budget once per
//! level. More than `max-poison-per-batch` such records in one batch stop the pipeline
//! ([`JobError::Poisoned`]): a plugin that fails on everything is broken, not poisoned.

use std::ops::Range;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use super::job::{JobError, Lineage, Part};
use crate::batch::RecordBatch;
use crate::config::poison::{OnPoison, PoisonPolicy};
use crate::plugin::{Failure, PluginError};

/// What a failure is called in a dead letter's `failure` field when one record can cause it
/// (a panic or other trap, a time-out, fuel or memory used up); `None` for the failures that
/// keep their own handling (`retryable`, `bad-record`, `fatal`, a broken contract, an instance
/// that could not be made).
pub fn poison_kind(failure: &Failure) -> Option<&'static str> {
    match failure {
        Failure::Panicked(_) => Some("panicked"),
        Failure::TimedOut { .. } => Some("timed-out"),
        Failure::OutOfFuel(_) => Some("out-of-fuel"),
        Failure::OutOfMemory { .. } => Some("out-of-memory"),
        Failure::Trapped(_) => Some("trapped"),
        _ => None,
    }
}

/// Dead-letters record `index` of the records given, found at source position `at`, because
/// of `error`.
pub(super) type DeadLetterFn<'a> = dyn Fn(&RecordBatch, usize, (u32, u64), &PluginError) + 'a;

/// Calls the step's plugin once on the records given (retrying as the step's policy says).
pub(super) type CallFn<'a> = dyn Fn(&RecordBatch, Lineage) -> Result<Part, JobError> + 'a;

/// One step's calls on one partition's data, as isolation needs them.
pub(super) struct Isolation<'a> {
    /// The step's policy.
    pub policy: PoisonPolicy,
    /// How many poison records this step dead-lettered in this batch so far.
    pub found: &'a AtomicU32,
    /// The batch.
    pub batch: u64,
    /// The partition of the data.
    pub partition: u32,
    /// One call.
    pub call: &'a CallFn<'a>,
    /// One dead letter.
    pub dead_letter: &'a DeadLetterFn<'a>,
}

/// Whether `e` is a poison failure that the policy says to isolate.
fn isolates(policy: &PoisonPolicy, e: &JobError) -> bool {
    policy.on_poison == OnPoison::DeadLetter
        && matches!(e, JobError::Plugin { source, .. } if poison_kind(&source.failure).is_some())
}

/// Calls the plugin on `records`; when the call fails with a poison failure and the policy
/// says `dead-letter`, finds and dead-letters the records that fail alone and returns the
/// output of the rest. Any other failure is returned as it is.
pub(super) fn call(
    iso: &Isolation<'_>,
    records: &RecordBatch,
    lineage: Lineage,
) -> Result<Part, JobError> {
    let error = match (iso.call)(records, lineage.clone()) {
        Err(e) if isolates(&iso.policy, &e) => match e {
            JobError::Plugin { source, .. } => source,
            _ => unreachable!("isolates accepts only plugin errors"),
        },
        other => return other,
    };
    tracing::warn!(batch = iso.batch, partition = iso.partition, records = records.len(), error = %error, "A plugin call failed on a block; calling it again in halves to find the records that fail alone.");
    let started = Instant::now();
    let mut search = Search {
        iso,
        records,
        positions: (0..records.len()).map(|i| lineage.at(i)).collect(),
        out: RecordBatch::default(),
        out_lineage: Vec::new(),
        calls: 0,
        poison: 0,
    };
    search.bisect(0..records.len(), error)?;
    tracing::info!(
        batch = iso.batch,
        partition = iso.partition,
        records = records.len(),
        poison = search.poison,
        calls = search.calls,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "The block's poison records are dead-lettered; the rest goes on."
    );
    Ok(Part {
        partition: iso.partition,
        records: search.out,
        lineage: Lineage::Explicit(search.out_lineage),
    })
}

/// A search for the records of one block that fail alone.
struct Search<'a, 'b> {
    iso: &'a Isolation<'b>,
    records: &'a RecordBatch,
    /// The source position of each input record.
    positions: Vec<(u32, u64)>,
    /// The good records' output so far, in input order.
    out: RecordBatch,
    out_lineage: Vec<(u32, u64)>,
    calls: u32,
    poison: u32,
}

impl Search<'_, '_> {
    /// Isolates the poison records of `range`, whose call failed with `error`.
    fn bisect(&mut self, range: Range<usize>, error: PluginError) -> Result<(), JobError> {
        if range.len() <= 1 {
            return self.dead_letter(range.start, error);
        }
        let mid = range.start + range.len() / 2;
        for half in [range.start..mid, mid..range.end] {
            if let Err(error) = self.try_half(half.clone())? {
                self.bisect(half, error)?;
            }
        }
        Ok(())
    }

    /// Calls the plugin on `range`: its output is kept, a poison failure given back, any other
    /// failure returned as an error.
    fn try_half(&mut self, range: Range<usize>) -> Result<Result<(), PluginError>, JobError> {
        self.calls += 1;
        let slice = self.records.slice(range.clone());
        let lineage = Lineage::Explicit(self.positions[range].to_vec());
        match (self.iso.call)(&slice, lineage) {
            Ok(part) => {
                self.out.append(&part.records);
                self.out_lineage
                    .extend((0..part.records.len()).map(|i| part.lineage.at(i)));
                Ok(Ok(()))
            }
            Err(JobError::Plugin { source, .. }) if poison_kind(&source.failure).is_some() => {
                Ok(Err(source))
            }
            Err(e) => Err(e),
        }
    }

    /// Dead-letters record `index`, which failed alone, unless that makes one more than the
    /// step's limit for the batch.
    fn dead_letter(&mut self, index: usize, error: PluginError) -> Result<(), JobError> {
        let limit = self.iso.policy.max_per_batch;
        if self.iso.found.fetch_add(1, Ordering::Relaxed) >= limit {
            return Err(JobError::Poisoned {
                batch: self.iso.batch,
                limit,
                source: error,
            });
        }
        self.poison += 1;
        let at = self.positions[index];
        tracing::warn!(batch = self.iso.batch, partition = at.0, offset = at.1, error = %error, "A record fails alone; it is dead-lettered as poison.");
        (self.iso.dead_letter)(self.records, index, at, &error);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::plugin::CallSite;

    fn failing(failure: Failure) -> JobError {
        JobError::Plugin {
            batch: 0,
            source: PluginError {
                site: CallSite {
                    plugin: "p".into(),
                    digest: "d".into(),
                    call: "transform",
                    partition: Some(0),
                    batch: Some(0),
                },
                failure,
            },
        }
    }

    /// Runs isolation over `n` records `v0…` of which those in `bad` make a call panic; gives
    /// the output values, the dead-lettered positions and the number of calls.
    fn isolate(
        n: usize,
        bad: &[usize],
        policy: PoisonPolicy,
    ) -> (Result<Vec<String>, String>, Vec<(u32, u64)>, u32) {
        let mut records = RecordBatch::default();
        for i in 0..n {
            records.push(None, format!("v{i}").as_bytes(), Some(0));
        }
        let calls = Cell::new(0);
        let dead = std::cell::RefCell::new(Vec::new());
        let call = |r: &RecordBatch, l: Lineage| {
            calls.set(calls.get() + 1);
            let poisoned =
                (0..r.len()).any(|i| bad.iter().any(|b| r.value(i) == format!("v{b}").as_bytes()));
            if poisoned {
                return Err(failing(Failure::Panicked("boom".into())));
            }
            Ok(Part {
                partition: 0,
                records: r.clone(),
                lineage: l,
            })
        };
        let dead_letter =
            |_: &RecordBatch, _: usize, at: (u32, u64), _: &PluginError| dead.borrow_mut().push(at);
        let found = AtomicU32::new(0);
        let iso = Isolation {
            policy,
            found: &found,
            batch: 0,
            partition: 0,
            call: &call,
            dead_letter: &dead_letter,
        };
        let lineage = Lineage::Range {
            partition: 3,
            start: 100,
        };
        let out = call_and_check(&iso, &records, lineage);
        (out, dead.into_inner(), calls.get())
    }

    fn call_and_check(
        iso: &Isolation<'_>,
        records: &RecordBatch,
        lineage: Lineage,
    ) -> Result<Vec<String>, String> {
        let part = call(iso, records, lineage).map_err(|e| e.to_string())?;
        for i in 0..part.records.len() {
            let v: u64 = std::str::from_utf8(&part.records.value(i)[1..])
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(
                part.lineage.at(i),
                (3, 100 + v),
                "output {i} keeps its position"
            );
        }
        Ok((0..part.records.len())
            .map(|i| String::from_utf8_lossy(part.records.value(i)).into_owned())
            .collect())
    }

    #[test]
    fn one_poison_record_in_ten_thousand_is_found_in_about_two_log2_calls_and_the_rest_kept_in_order()
     {
        let (out, dead, calls) = isolate(10_000, &[4321], PoisonPolicy::default());
        let out = out.unwrap();
        assert_eq!(dead, [(3, 100 + 4321)]);
        let expected: Vec<String> = (0..10_000)
            .filter(|&i| i != 4321)
            .map(|i| format!("v{i}"))
            .collect();
        assert_eq!(out, expected);
        // 1 whole call, then 2 per level over 14 levels.
        assert!(calls <= 1 + 2 * 14, "{calls} calls");
    }

    #[test]
    fn several_poison_records_are_each_dead_lettered() {
        let (out, dead, _) = isolate(1000, &[0, 500, 999], PoisonPolicy::default());
        assert_eq!(out.unwrap().len(), 997);
        assert_eq!(dead, [(3, 100), (3, 600), (3, 1099)]);
    }

    #[test]
    fn more_poison_than_the_limit_stops_with_the_limits_message() {
        let policy = PoisonPolicy {
            max_per_batch: 5,
            ..PoisonPolicy::default()
        };
        let bad: Vec<usize> = (0..100).collect();
        let (out, dead, _) = isolate(100, &bad, policy);
        let e = out.unwrap_err();
        assert!(e.contains("max-poison-per-batch"), "{e}");
        assert_eq!(dead.len(), 5);
    }

    #[test]
    fn the_stop_policy_returns_the_first_failure() {
        let policy = PoisonPolicy {
            on_poison: OnPoison::Stop,
            ..PoisonPolicy::default()
        };
        let (out, dead, calls) = isolate(100, &[7], policy);
        assert!(out.unwrap_err().contains("panicked"));
        assert_eq!((dead.len(), calls), (0, 1));
    }
}

#[cfg(test)]
mod bench;
