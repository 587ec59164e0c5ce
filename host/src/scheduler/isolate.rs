//! Isolating poison records. When a transform call fails with a trap, a timeout or memory past
//! its cap ([`poison_kind`]) and the step's `on-poison` is `"dead-letter"`, the block is called
//! again in halves until the records that fail alone are found. Each call after a trap runs on
//! an instance that has not trapped (the plugin drops a trapped one). The records that fail
//! alone are dead-lettered with the failure; the good halves' outputs are joined in input
//! order, each output record keeping the source position of the input it came from.
//!
//! Cost: one poison record in a block of `n` records costs at most `2·log₂(n) + 1` more calls
//! over halves that shrink, so about `2n` more records pass through the plugin. At each level
//! the first half is called; when it passes, the second is known to fail and is halved
//! without being called whole, so about half the levels have a failing call. More than
//! `max-poison-per-batch` such records in one batch stop the pipeline
//! ([`JobError::Poisoned`]): a plugin that fails on everything is broken, not poisoned.
//!
//! Budgets: a looping or hoarding record would make every sub-call that holds it run to the
//! plugin's whole time budget or memory cap, once per level. So the sub-calls run under
//! budgets derived from what the step's healthy calls cost ([`CallCost`]): [`TIME_FACTOR`]
//! times the expected time, at least [`TIME_FLOOR`], and [`MEMORY_FACTOR`] times the healthy
//! memory, at least [`MEMORY_FLOOR`] above it, never more than the plugin's limits. A record
//! that fails alone under such a shorter budget is called once more under the plugin's own
//! limits before it is dead-lettered, so a slow or big but valid record is kept; after such a
//! false alarm the rest of the search uses the plugin's limits.

use std::ops::Range;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::part::{JobError, Lineage, Part};
use crate::batch::RecordBatch;
use crate::config::poison::{OnPoison, PoisonPolicy};
use crate::plugin::limits::{CallCost, Limits};
use crate::plugin::{Failure, PluginError};

/// A sub-call's time budget, as a multiple of the time a healthy call on its records takes.
pub const TIME_FACTOR: u32 = 4;
/// The least time budget of a sub-call (the epoch tick rounds it up: with the default 10 ms
/// tick a sub-call stops after 10 to 20 ms).
pub const TIME_FLOOR: Duration = Duration::from_millis(2);
/// A sub-call's memory cap, as a multiple of the most memory a healthy call left.
pub const MEMORY_FACTOR: u64 = 2;
/// The least a sub-call's memory cap is above the most memory a healthy call left.
pub const MEMORY_FLOOR: u64 = 1 << 20;

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
pub(crate) type DeadLetterFn<'a> = dyn Fn(&RecordBatch, usize, (u32, u64), &PluginError) + 'a;

/// Calls the step's plugin once on the records given, under the limits given (retrying as the
/// step's policy says).
pub(crate) type CallFn<'a> = dyn Fn(&RecordBatch, Lineage, &Limits) -> Result<Part, JobError> + 'a;

/// One step's calls on one partition's data, as isolation needs them.
pub(crate) struct Isolation<'a> {
    /// The step's policy.
    pub policy: PoisonPolicy,
    /// How many poison records this step dead-lettered in this batch so far.
    pub found: &'a AtomicU32,
    /// The batch.
    pub batch: u64,
    /// The partition of the data.
    pub partition: u32,
    /// The plugin's limits: the first call's, and a confirmation's.
    pub limits: Limits,
    /// What the step's healthy calls cost: the sub-calls' budgets come from it.
    pub cost: &'a CallCost,
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
pub(crate) fn call(
    iso: &Isolation<'_>,
    records: &RecordBatch,
    lineage: Lineage,
) -> Result<Part, JobError> {
    let error = match (iso.call)(records, lineage.clone(), &iso.limits) {
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
        shorten: true,
    };
    search.bisect(0..records.len(), Some(error))?;
    tracing::info!(
        batch = iso.batch,
        partition = iso.partition,
        records = records.len(),
        poison = search.poison,
        calls = search.calls,
        shorter_budgets = search.shorten,
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
    /// Whether sub-calls run under budgets derived from the healthy calls (until a false
    /// alarm).
    shorten: bool,
}

impl Search<'_, '_> {
    /// Isolates the poison records of `range`, whose call failed with `error`, or (`None`)
    /// which holds a failure by inference: its parent failed and its sibling passed, so it is
    /// halved without being called whole (a loop or a hoard costs most when a call fails).
    fn bisect(&mut self, range: Range<usize>, error: Option<PluginError>) -> Result<(), JobError> {
        if range.len() <= 1 {
            return self.confirm(range.start, error);
        }
        let mid = range.start + range.len() / 2;
        let (left, right) = (range.start..mid, mid..range.end);
        match self.try_range(left.clone(), self.budget(left.len()))? {
            Err(error) => {
                self.bisect(left, Some(error))?;
                match self.try_range(right.clone(), self.budget(right.len()))? {
                    Err(error) => self.bisect(right, Some(error)),
                    Ok(()) => Ok(()),
                }
            }
            Ok(()) => self.bisect(right, None),
        }
    }

    /// The limits of a sub-call on `records` records.
    fn budget(&self, records: usize) -> Limits {
        let full = self.iso.limits;
        if !self.shorten {
            return full;
        }
        let time = self.iso.cost.expected_time(records).map_or(full.time, |t| {
            (t * TIME_FACTOR).max(TIME_FLOOR).min(full.time)
        });
        let memory = self.iso.cost.healthy_memory().map_or(full.memory, |m| {
            (m * MEMORY_FACTOR).max(m + MEMORY_FLOOR).min(full.memory)
        });
        Limits {
            time,
            memory,
            fuel: full.fuel,
        }
    }

    /// Whether `error` may come from a budget shorter than the plugin's own.
    fn shortened(&self, error: &PluginError) -> bool {
        match error.failure {
            Failure::TimedOut { budget, .. } => budget < self.iso.limits.time,
            Failure::OutOfMemory { cap, .. } => cap < self.iso.limits.memory,
            _ => false,
        }
    }

    /// Record `index` failed alone with `error`, or is the last one left of a failing range
    /// (`None`): it is dead-lettered once it failed alone under the plugin's own limits. So
    /// unless `error` came from them, it is called once more under them first (and its output
    /// kept if it passes).
    fn confirm(&mut self, index: usize, error: Option<PluginError>) -> Result<(), JobError> {
        if let Some(error) = error
            && !self.shortened(&error)
        {
            return self.dead_letter(index, error);
        }
        match self.try_range(index..index + 1, self.iso.limits)? {
            Ok(()) => {
                self.false_alarm();
                Ok(())
            }
            Err(error) => self.dead_letter(index, error),
        }
    }

    /// A record that failed under a shorter budget passed under the plugin's own: the rest of
    /// the search uses the plugin's limits.
    fn false_alarm(&mut self) {
        if self.shorten {
            tracing::warn!(
                batch = self.iso.batch,
                partition = self.iso.partition,
                "Records failed under a budget derived from the healthy calls but not under the plugin's own; the rest of the search uses the plugin's limits."
            );
        }
        self.shorten = false;
    }

    /// Calls the plugin on `range` under `limits`: its output is kept, a poison failure given
    /// back, any other failure returned as an error.
    fn try_range(
        &mut self,
        range: Range<usize>,
        limits: Limits,
    ) -> Result<Result<(), PluginError>, JobError> {
        self.calls += 1;
        let slice = self.records.slice(range.clone());
        let lineage = Lineage::Explicit(self.positions[range].to_vec());
        match (self.iso.call)(&slice, lineage, &limits) {
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
    use std::cell::RefCell;

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

    /// The plugin's limits in these tests.
    const LIMITS: Limits = Limits {
        memory: 64 << 20,
        time: Duration::from_secs(1),
        fuel: None,
    };

    /// What the fake plugin does with a record.
    #[derive(Clone, Copy, PartialEq)]
    enum Record {
        Good,
        /// Panics.
        Panics,
        /// Loops until its time budget.
        Loops,
        /// Takes 50 ms: valid, but slower than a derived budget.
        Slow,
    }

    /// A run of isolation over records `v0…` that the fake plugin treats as `kind` says.
    struct Run {
        out: Result<Vec<String>, String>,
        dead: Vec<(u32, u64)>,
        /// The limits of each call, in order.
        calls: Vec<Limits>,
    }

    /// Runs isolation over `n` records; `cost` is what the step's healthy calls cost.
    fn run(n: usize, kind: &dyn Fn(usize) -> Record, policy: PoisonPolicy, cost: &CallCost) -> Run {
        let mut records = RecordBatch::default();
        for i in 0..n {
            records.push(None, format!("v{i}").as_bytes(), Some(0));
        }
        let calls = RefCell::new(Vec::new());
        let dead = RefCell::new(Vec::new());
        let call = |r: &RecordBatch, l: Lineage, limits: &Limits| {
            calls.borrow_mut().push(*limits);
            let kinds = (0..r.len()).map(|i| {
                let v: usize = std::str::from_utf8(&r.value(i)[1..])
                    .unwrap()
                    .parse()
                    .unwrap();
                kind(v)
            });
            let worst = kinds.fold(Record::Good, |w, k| match (w, k) {
                (Record::Panics, _) | (_, Record::Panics) => Record::Panics,
                (Record::Loops, _) | (_, Record::Loops) => Record::Loops,
                (Record::Slow, _) | (_, Record::Slow) => Record::Slow,
                _ => Record::Good,
            });
            let timed_out = || {
                failing(Failure::TimedOut {
                    budget: limits.time,
                    elapsed: limits.time,
                })
            };
            match worst {
                Record::Panics => return Err(failing(Failure::Panicked("boom".into()))),
                Record::Loops => return Err(timed_out()),
                Record::Slow if limits.time < Duration::from_millis(50) => {
                    return Err(timed_out());
                }
                _ => {}
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
            limits: LIMITS,
            cost,
            call: &call,
            dead_letter: &dead_letter,
        };
        let lineage = Lineage::Range {
            partition: 3,
            start: 100,
        };
        let out = call_and_check(&iso, &records, lineage);
        Run {
            out,
            dead: dead.into_inner(),
            calls: calls.into_inner(),
        }
    }

    /// Runs isolation over `n` records of which those in `bad` make a call panic, with no
    /// healthy call measured yet.
    fn isolate(n: usize, bad: &[usize], policy: PoisonPolicy) -> Run {
        run(
            n,
            &|i| {
                if bad.contains(&i) {
                    Record::Panics
                } else {
                    Record::Good
                }
            },
            policy,
            &CallCost::default(),
        )
    }

    /// What healthy calls cost in the budget tests: 1 us a record, 2 MiB.
    fn measured() -> CallCost {
        let cost = CallCost::default();
        cost.record(10_000, Duration::from_millis(10), 2 << 20);
        cost
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

    fn all_but(n: usize, skip: &[usize]) -> Vec<String> {
        (0..n)
            .filter(|i| !skip.contains(i))
            .map(|i| format!("v{i}"))
            .collect()
    }

    #[test]
    fn one_poison_record_in_ten_thousand_is_found_in_about_two_log2_calls_and_the_rest_kept_in_order()
     {
        let r = isolate(10_000, &[4321], PoisonPolicy::default());
        assert_eq!(r.dead, [(3, 100 + 4321)]);
        assert_eq!(r.out.unwrap(), all_but(10_000, &[4321]));
        // 1 whole call, then 2 per level over 14 levels.
        assert!(r.calls.len() <= 1 + 2 * 14, "{} calls", r.calls.len());
    }

    #[test]
    fn several_poison_records_are_each_dead_lettered() {
        let r = isolate(1000, &[0, 500, 999], PoisonPolicy::default());
        assert_eq!(r.out.unwrap().len(), 997);
        assert_eq!(r.dead, [(3, 100), (3, 600), (3, 1099)]);
    }

    #[test]
    fn more_poison_than_the_limit_stops_with_the_limits_message() {
        let policy = PoisonPolicy {
            max_per_batch: 5,
            ..PoisonPolicy::default()
        };
        let bad: Vec<usize> = (0..100).collect();
        let r = isolate(100, &bad, policy);
        let e = r.out.unwrap_err();
        assert!(e.contains("max-poison-per-batch"), "{e}");
        assert_eq!(r.dead.len(), 5);
    }

    #[test]
    fn the_stop_policy_returns_the_first_failure() {
        let policy = PoisonPolicy {
            on_poison: OnPoison::Stop,
            ..PoisonPolicy::default()
        };
        let r = isolate(100, &[7], policy);
        assert!(r.out.unwrap_err().contains("panicked"));
        assert_eq!((r.dead.len(), r.calls.len()), (0, 1));
    }

    #[test]
    fn with_no_healthy_call_measured_every_sub_call_runs_under_the_plugins_limits() {
        let r = isolate(1000, &[10], PoisonPolicy::default());
        assert!(r.calls.iter().all(|l| *l == LIMITS));
    }

    #[test]
    fn sub_calls_of_a_looping_record_run_under_derived_budgets_and_the_last_is_confirmed_under_the_full_one()
     {
        let r = run(
            10_000,
            &|i| {
                if i == 4321 {
                    Record::Loops
                } else {
                    Record::Good
                }
            },
            PoisonPolicy::default(),
            &measured(),
        );
        assert_eq!(r.dead, [(3, 100 + 4321)]);
        assert_eq!(r.out.unwrap(), all_but(10_000, &[4321]));
        let full: Vec<usize> = (0..r.calls.len())
            .filter(|&i| r.calls[i] == LIMITS)
            .collect();
        // The first call and the confirmation; each other call 4 us a record, at least 2 ms,
        // and twice the healthy memory.
        assert_eq!((full.len(), full[0]), (2, 0), "{full:?}");
        for l in r.calls.iter().filter(|l| **l != LIMITS) {
            assert!(l.time <= Duration::from_millis(20), "{l:?}");
            assert!(l.time >= TIME_FLOOR, "{l:?}");
            assert_eq!(l.memory, 4 << 20);
        }
        assert!(r.calls.len() <= 1 + 2 * 14 + 1, "{} calls", r.calls.len());
    }

    #[test]
    fn a_slow_but_valid_record_is_kept_and_the_rest_of_the_search_uses_the_full_limits() {
        let r = run(
            10_000,
            &|i| match i {
                100 => Record::Slow,
                7000 => Record::Loops,
                _ => Record::Good,
            },
            PoisonPolicy::default(),
            &measured(),
        );
        assert_eq!(r.dead, [(3, 100 + 7000)], "only the looping record");
        assert_eq!(r.out.unwrap(), all_but(10_000, &[7000]));
        // The slow record's confirmation passed: every call after it has the full limits.
        let confirmed = (1..r.calls.len()).find(|&i| r.calls[i] == LIMITS).unwrap();
        assert!(r.calls[confirmed..].iter().all(|l| *l == LIMITS));
        assert!(
            r.calls.len() <= 1 + 2 * 2 * 14 + 1,
            "{} calls",
            r.calls.len()
        );
    }
}
