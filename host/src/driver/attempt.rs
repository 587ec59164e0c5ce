//! One open batch, and what makes its failure on a new version survivable: the answer to
//! "what happens when a version on trial fails?".
//!
//! A batch that runs a version on trial ([`crate::swap::trial`]) keeps a copy of every block
//! it runs. When that version fails (in a block, or at the close), the driver rolls it back
//! ([`Live::roll_back`]), drops what the failed attempt wrote (its sinks' staged output and
//! its dead letters: nothing of it was visible), and runs the kept copies again on the
//! batch's own steps with the restored version in place; the blocks still to come run on
//! those too. The batch then records the restored version's digest and the rollback event,
//! so a restart recomputes it the same way. Batches not on trial copy nothing.

use std::sync::Arc;
use std::time::Duration;

use crate::block::{Block, BlockManager};
use crate::checkpoint::SwapEvent;
use crate::plan::{Plan, StepPlan};
use crate::scheduler::job::{self, Closed, JobError, OpenBatch, Shape};
use crate::swap::Live;

/// The open batch, with its trial copies and what happened to its versions.
#[derive(Debug)]
pub struct Attempt {
    /// The batch.
    pub batch: OpenBatch,
    /// On trial: a copy of every block run so far.
    kept: Option<Vec<Block>>,
    /// Rollbacks and verdicts, for its entry.
    events: Vec<SwapEvent>,
}

/// A batch finished (its wide steps run, its writes staged), ready to record and commit.
#[derive(Debug)]
pub struct Finished {
    /// The batch id.
    pub id: u64,
    /// Its batch time.
    pub time_ms: i64,
    /// Time spent on its blocks.
    pub busy: Duration,
    /// The steps it ran with in the end.
    pub steps: Arc<Vec<StepPlan>>,
    /// What it did.
    pub closed: Closed,
    /// Its rollbacks and verdicts.
    pub events: Vec<SwapEvent>,
}

impl Attempt {
    /// Opens batch `id` at `time_ms` on `steps`.
    pub fn open(
        plan: &Plan,
        shape: &Shape,
        (id, time_ms): (u64, i64),
        steps: Arc<Vec<StepPlan>>,
        live: &Live,
    ) -> Attempt {
        let kept = live.on_trial(&steps).then(Vec::new);
        let mut batch = OpenBatch::new(plan, shape, id, time_ms, steps);
        batch.shadow = live.running_shadow();
        Attempt {
            batch,
            kept,
            events: Vec::new(),
        }
    }

    /// Runs `blocks` (see [`job::run_blocks`]); a failure of a version on trial rolls it back
    /// and recomputes the batch so far.
    pub fn run(
        &mut self,
        plan: &Plan,
        shape: &Shape,
        blocks: Vec<Block>,
        manager: &BlockManager,
        live: &Live,
    ) -> Result<(), JobError> {
        if let Some(kept) = &mut self.kept {
            kept.extend(blocks.iter().map(copy));
        }
        let mut result = job::run_blocks(plan, shape, &self.batch, blocks, manager);
        while let Err(e) = result {
            result = self.again(plan, shape, manager, live, e)?;
        }
        Ok(())
    }

    /// Finishes the batch (see [`job::finish`]), rolling back and recomputing as
    /// [`Attempt::run`] does; gives the kept blocks' bytes back to the budget.
    pub fn finish(
        mut self,
        plan: &Plan,
        shape: &Shape,
        manager: &BlockManager,
        live: &Live,
    ) -> Result<Finished, JobError> {
        loop {
            let placeholder = OpenBatch::new(plan, shape, self.batch.id, 0, Arc::default());
            let batch = std::mem::replace(&mut self.batch, placeholder);
            let (id, time_ms, busy) = (batch.id, batch.time_ms, batch.busy);
            let steps = batch.steps.clone();
            let shadow = batch.shadow.clone();
            match job::finish(plan, shape, batch) {
                Ok((closed, kept_bytes)) => {
                    manager.release(kept_bytes);
                    self.events.extend(live.passed(&steps));
                    if let Some(s) = shadow.filter(|s| s.batch_done(id)) {
                        self.events.push(verdict(&s));
                    }
                    return Ok(Finished {
                        id,
                        time_ms,
                        busy,
                        steps,
                        closed,
                        events: self.events,
                    });
                }
                Err(e) => {
                    // The failed close dropped the batch; put back one to recompute into.
                    self.batch = OpenBatch::new(plan, shape, id, time_ms, steps);
                    self.batch.busy = busy;
                    self.batch.shadow = shadow;
                    let mut result = self.again(plan, shape, manager, live, e)?;
                    while let Err(e) = result {
                        result = self.again(plan, shape, manager, live, e)?;
                    }
                }
            }
        }
    }

    /// After `error`: when it is the fault of a version on trial that this batch kept copies
    /// for, rolls it back and runs the copies again on the restored steps, giving the result
    /// of that run; else `Err(error)`: the batch fails.
    fn again(
        &mut self,
        plan: &Plan,
        shape: &Shape,
        manager: &BlockManager,
        live: &Live,
        error: JobError,
    ) -> Result<Result<(), JobError>, JobError> {
        let Some(blame) = self.kept.as_ref().and(live.blame(&error)) else {
            return Err(error);
        };
        let Some(rolled) = live.roll_back(&blame) else {
            return Err(error);
        };
        let kept = self.kept.take().unwrap_or_default();
        let mut steps: Vec<StepPlan> = self.batch.steps.as_ref().clone();
        for (i, step) in rolled.steps {
            steps[i] = step;
        }
        let steps = Arc::new(steps);
        job::abort(plan, &self.batch);
        let dropped = plan.dead_letters.discard(self.batch.id);
        tracing::info!(
            batch = self.batch.id,
            blocks = kept.len(),
            dead_letters_dropped = dropped,
            restored = %crate::swap::short(&rolled.restored),
            "Recomputing the batch with the restored version: what the failed attempt wrote is dropped (none of it was visible)."
        );
        self.events.push(rolled.event);
        let (id, time_ms, busy) = (self.batch.id, self.batch.time_ms, self.batch.busy);
        let fresh = OpenBatch::new(plan, shape, id, time_ms, steps.clone());
        let failed = std::mem::replace(&mut self.batch, fresh);
        self.batch.busy = busy;
        if let Some(s) = &failed.shadow {
            s.forget(id);
        }
        self.batch.shadow = failed.shadow.clone();
        manager.release(failed.kept_bytes());
        // Still on trial when another plugin's new version is.
        self.kept = live
            .on_trial(&steps)
            .then(|| kept.iter().map(copy).collect());
        Ok(job::run_blocks(plan, shape, &self.batch, kept, manager))
    }
}

/// The verdict of a shadow run that ended, for the entry of its last batch.
fn verdict(s: &crate::scheduler::shadow::Shadow) -> SwapEvent {
    let (batches, differing) = s.counts();
    SwapEvent::Shadowed {
        plugin: s.plugin.clone(),
        digest: s.digest.clone(),
        live: s.live.clone(),
        batches,
        differing,
        failed: s.report().failed,
    }
}

/// A copy of `b` for a recompute: its records and set-aside notes (the budget counted the
/// original; the copy counts nothing).
fn copy(b: &Block) -> Block {
    Block {
        id: b.id,
        first_offset: b.first_offset,
        records: b.records.clone(),
        bytes: 0,
        cut_ms: b.cut_ms,
        positions: Vec::new(),
        aside: b.aside.clone(),
        queued: None,
    }
}
