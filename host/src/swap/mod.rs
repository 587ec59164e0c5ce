//! Hot swap of transformation plugins under a running driver.
//!
//! The driver keeps the [`Live`] steps: what each new batch pins when it opens. A batch keeps
//! the steps it opened with to its end, and its checkpoint entry records their digests
//! ([`digests`]), so a restart recomputes it with the same versions. A swap therefore happens
//! at a batch boundary: batches already open finish on the old version, the next one to open
//! runs the new one, and no batch mixes them.
//!
//! New versions come from two places, and both go through one [`offer::Gate`]: the [`watch`]
//! module looks at the plugin directory and offers a changed `.wasm` once it has stopped
//! changing; the admin endpoint (`sluice plugin swap`, in `crate::admin`) offers the bytes it
//! is sent, possibly with new parameters. The gate checks the version off the batch path
//! (compiled into the on-disk cache, its world, manifest and grants, and `init` with the
//! parameters of every step that uses it), and only then makes it live. A version that fails
//! a check never goes live: the live one stays, and the reason is logged and returned.

pub mod offer;
pub mod watch;

pub use offer::{Candidate, Gate, Origin, Outcome};

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::plan::StepPlan;
use crate::plugin::TransformStage;

/// The steps each new batch pins.
#[derive(Debug)]
pub struct Live {
    steps: Mutex<Arc<Vec<StepPlan>>>,
}

impl Live {
    /// Starts with `steps` (the plan's).
    pub fn new(steps: Arc<Vec<StepPlan>>) -> Live {
        Live {
            steps: Mutex::new(steps),
        }
    }

    /// The steps a batch opening now runs.
    pub fn steps(&self) -> Arc<Vec<StepPlan>> {
        self.steps.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Puts each `(index, stage)` in place of the plugin step at that index (keeping its
    /// poison policy), for the batches that open from now on.
    pub fn replace(&self, stages: Vec<(usize, Arc<TransformStage>)>) {
        let mut live = self.steps.lock().unwrap_or_else(|e| e.into_inner());
        let mut steps: Vec<StepPlan> = live.as_ref().clone();
        for (i, stage) in stages {
            if let Some(StepPlan::Plugin(old, poison)) = steps.get(i) {
                debug_assert_eq!(old.plugin().name(), stage.plugin().name());
                steps[i] = StepPlan::Plugin(stage, *poison);
            }
        }
        *live = Arc::new(steps);
    }

    /// The sha256 the live steps run plugin `name` with, if a step uses it.
    pub fn digest_of(&self, name: &str) -> Option<String> {
        step_digests(&self.steps()).remove(name)
    }
}

/// The plugin digests a batch running `steps` records: `base` (every plugin of the plan:
/// source, sinks and steps) with the steps' own versions in place of the plan's.
pub fn digests(base: &BTreeMap<String, String>, steps: &[StepPlan]) -> BTreeMap<String, String> {
    let mut all = base.clone();
    all.extend(step_digests(steps));
    all
}

fn step_digests(steps: &[StepPlan]) -> BTreeMap<String, String> {
    steps
        .iter()
        .filter_map(|s| match s {
            StepPlan::Plugin(stage, _) => {
                let info = stage.plugin().info();
                Some((info.name.clone(), info.digest.clone()))
            }
            _ => None,
        })
        .collect()
}
