//! A plugin step's calls on one partition's data within a batch: the live step's, in calls of
//! bounded size, with the retry policy and poison isolation of [`super::job`]'s doc; and the
//! shadow's candidate on the same input ([`super::shadow`]).

use std::time::Duration;

use super::isolate::{self, Isolation, poison_kind};
use super::open::OpenBatch;
use super::part::{JobError, Lineage, Part};
use super::shadow;
use crate::batch::RecordBatch;
use crate::config::poison::{OnPoison, PoisonPolicy};
use crate::plan::Plan;
use crate::plugin::limits::Limits;
use crate::plugin::{CallContext, Failure, PluginError, TransformStage};
use crate::sink::dead_letter::DeadLetter;

/// The most value bytes sent in one call. A partition's batch above it is sent in several
/// calls, in order, with the same batch id: a plugin's memory cap then bounds the call, not
/// the batch (at full speed a one-second batch can hold tens of megabytes per partition).
pub const MAX_CALL_BYTES: usize = 8 << 20;

/// Splits `0..batch.len()` into ranges of at most about `MAX_CALL_BYTES` of values.
pub(super) fn call_ranges(batch: &RecordBatch) -> Vec<std::ops::Range<usize>> {
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

/// Runs a transform step (its stage and poison policy) on one partition's data, in calls of
/// bounded size.
pub(super) fn transform_part(
    plan: &Plan,
    stage: (&TransformStage, PoisonPolicy),
    batch: &OpenBatch,
    step: usize,
    input: (u32, &RecordBatch, Lineage),
) -> Result<Part, JobError> {
    let (partition, records, lineage) = input;
    let caller = Caller {
        plan,
        stage: stage.0,
        policy: stage.1,
        batch,
        step,
        partition,
        keyed: super::keyed::open(plan, batch, step, stage.0)?,
    };
    let ranges = call_ranges(records);
    if ranges.len() == 1 {
        return caller.isolating(records, lineage);
    }
    // Several calls: each gets a slice; outputs are appended, with lineage per slice.
    let mut out = RecordBatch::default();
    let mut out_lineage = Vec::new();
    for range in ranges {
        let slice = records.slice(range.clone());
        let slice_lineage = Lineage::Explicit(range.clone().map(|i| lineage.at(i)).collect());
        let done = caller.isolating(&slice, slice_lineage)?;
        out.append(&done.records);
        out_lineage.extend((0..done.records.len()).map(|i| done.lineage.at(i)));
    }
    Ok(Part {
        partition,
        records: out,
        lineage: Lineage::Explicit(out_lineage),
    })
}

/// A transform step's calls on one partition's data within a batch.
struct Caller<'a> {
    plan: &'a Plan,
    stage: &'a TransformStage,
    policy: PoisonPolicy,
    batch: &'a OpenBatch,
    step: usize,
    partition: u32,
    /// The step's keyed state in the batch, when its plugin has some.
    keyed: Option<std::sync::Arc<crate::state::keyed::KeyedBatch>>,
}

impl Caller<'_> {
    /// One call on `records` (the next part of the partition), its poison records isolated as
    /// the step's policy says.
    fn isolating(&self, records: &RecordBatch, lineage: Lineage) -> Result<Part, JobError> {
        let part = self.batch.calls.next(self.step, self.partition);
        let ctx = self.batch.ctx(self.plan, self.partition, part);
        let call = |r: &RecordBatch, l: Lineage, limits: &Limits| self.call(&ctx, r, l, limits);
        let dead_letter = |r: &RecordBatch, index: usize, at: (u32, u64), e: &PluginError| {
            let reason = format!("poison: {}", e.failure);
            self.dead_letter(&ctx, (r, index), at, &reason, poison_kind(&e.failure));
        };
        let iso = Isolation {
            policy: self.policy,
            found: &self.batch.poisoned[self.step],
            batch: ctx.batch_id,
            partition: self.partition,
            limits: self.stage.plugin().info().limits,
            cost: self.stage.cost(),
            call: &call,
            dead_letter: &dead_letter,
        };
        isolate::call(&iso, records, lineage)
    }

    /// Dead-letters `record` (a batch and an index in it), from source position `at`.
    fn dead_letter(
        &self,
        ctx: &CallContext,
        record: (&RecordBatch, usize),
        at: (u32, u64),
        reason: &str,
        failure: Option<&str>,
    ) {
        let info = self.stage.plugin().info();
        self.plan.dead_letters.add(
            &self.plan.stream,
            ctx.batch_id,
            DeadLetter {
                partition: at.0,
                offset: at.1,
                step: self.step,
                plugin: &info.name,
                digest: &info.digest,
                reason,
                failure,
                batch: record.0,
                index: record.1,
            },
        );
    }

    /// One call on `records` under `limits`, with the retry policy of the module's doc: a
    /// retryable failure retried, bad records dead-lettered and the call made again without
    /// them.
    fn call(
        &self,
        ctx: &CallContext,
        records: &RecordBatch,
        lineage: Lineage,
        limits: &Limits,
    ) -> Result<Part, JobError> {
        let isolating = self.policy.on_poison == OnPoison::DeadLetter;
        let mut input = std::borrow::Cow::Borrowed(records);
        let mut lineage = lineage;
        let mut retries = 0;
        let mut bad_rounds = 0;
        loop {
            match self
                .stage
                .transform_keyed(ctx, &input, limits, self.keyed.as_ref())
            {
                Ok(out) => {
                    for (index, reason) in &out.rejected {
                        let at = lineage.at(*index as usize);
                        self.dead_letter(ctx, (&input, *index as usize), at, reason, None);
                    }
                    return Ok(Part {
                        partition: self.partition,
                        lineage: lineage.follow(out.origins),
                        records: out.batch,
                    });
                }
                Err(e) => match &e.failure {
                    Failure::BadRecord { index, reason }
                        if (*index as usize) < input.len() && bad_rounds < 1000 =>
                    {
                        let index = *index as usize;
                        self.dead_letter(ctx, (&input, index), lineage.at(index), reason, None);
                        let keep: Vec<u32> = (0..input.len() as u32)
                            .filter(|&i| i as usize != index)
                            .collect();
                        input = std::borrow::Cow::Owned(input.gather(&keep));
                        // Resolved now: bad records one by one would nest a lineage per round.
                        lineage = Lineage::Explicit(
                            keep.iter().map(|&i| lineage.at(i as usize)).collect(),
                        );
                        bad_rounds += 1;
                    }
                    // Isolation calls again in halves: a retry of the whole would only wait.
                    f if isolating && poison_kind(f).is_some() => {
                        return Err(JobError::Plugin {
                            batch: ctx.batch_id,
                            source: e,
                        });
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
}

/// Whether a shadow pinned by `batch` runs a candidate for step `step`.
pub(super) fn shadowed(batch: &OpenBatch, step: usize) -> bool {
    batch
        .shadow
        .as_ref()
        .is_some_and(|s| s.stage_for(step).is_some())
}

/// Runs the shadow's candidate for step `step` on the step's input (in the calls the live
/// step made) and compares its output with the live step's `live` (see [`super::shadow`]).
pub(super) fn shadow_step(
    plan: &Plan,
    batch: &OpenBatch,
    step: usize,
    input: (u32, &RecordBatch, &Lineage),
    live: &Part,
) {
    let Some(shadow) = &batch.shadow else {
        return;
    };
    let Some(stage) = shadow.stage_for(step) else {
        return;
    };
    let (partition, records, lineage) = input;
    let mut out = RecordBatch::default();
    let mut origins: Vec<u32> = Vec::new();
    let ranges = call_ranges(records);
    let whole = ranges.len() == 1;
    for range in ranges {
        let ctx = batch.ctx(plan, partition, batch.shadow_calls.next(step, partition));
        let slice = if whole {
            std::borrow::Cow::Borrowed(records)
        } else {
            std::borrow::Cow::Owned(records.slice(range.clone()))
        };
        match shadow::call(stage, &ctx, &slice) {
            Ok((b, o)) => {
                let from = range.start as u32;
                if o.is_empty() {
                    origins.extend((0..b.len() as u32).map(|i| from + i));
                } else {
                    origins.extend(o.iter().map(|&x| from + x));
                }
                out.append(&b);
            }
            Err(e) => {
                shadow.fail(batch.id, format!("partition {partition}: {e}"));
                return;
            }
        }
    }
    shadow.compare(batch.id, live, (&out, &origins), lineage);
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
