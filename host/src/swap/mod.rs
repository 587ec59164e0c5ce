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
//!
//! A version that went live is on [`trial`] for its first `[swap] trial-batches` batches: if
//! it fails in one, the driver rolls it back to the version it replaced, recomputes the batch
//! with that one, and the failed version is put in [`quarantine`] (refused until cleared).

pub mod offer;
pub mod quarantine;
pub mod trial;
pub mod watch;

pub use offer::{Candidate, Gate, Origin, Outcome};

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::checkpoint::SwapEvent;
use crate::plan::{Plan, StepPlan};
use crate::plugin::TransformStage;
use crate::scheduler::job::JobError;
use crate::scheduler::shadow::{Report, Shadow};
use quarantine::Quarantine;
use trial::{Blame, RolledBack, Trial};

/// The steps each new batch pins, the versions on trial, and the quarantine.
#[derive(Debug)]
pub struct Live {
    state: Mutex<State>,
    /// `[swap] trial-batches`.
    trial_batches: u32,
    quarantine: Quarantine,
}

#[derive(Debug)]
struct State {
    steps: Arc<Vec<StepPlan>>,
    /// The versions on trial, by plugin name.
    trials: BTreeMap<String, Trial>,
    /// The latest shadow run (running, or ended and kept for its report and `promote`).
    shadow: Option<Arc<Shadow>>,
}

impl Live {
    /// Starts with `steps` (the plan's), new versions on trial for `trial_batches` batches.
    pub fn new(steps: Arc<Vec<StepPlan>>, trial_batches: u32, quarantine: Quarantine) -> Live {
        Live {
            state: Mutex::new(State {
                steps,
                trials: BTreeMap::new(),
                shadow: None,
            }),
            trial_batches,
            quarantine,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The steps a batch opening now runs.
    pub fn steps(&self) -> Arc<Vec<StepPlan>> {
        self.lock().steps.clone()
    }

    /// Puts each `(index, stage)` in place of the plugin step at that index, for the batches
    /// that open from now on; the new version is on trial (its steps strict, see
    /// [`trial::strict`]) unless trials are off.
    pub fn replace(&self, stages: Vec<(usize, Arc<TransformStage>)>) {
        let mut state = self.lock();
        let mut steps: Vec<StepPlan> = state.steps.as_ref().clone();
        let mut replaced = Vec::new();
        let mut name_digest = None;
        for (i, stage) in stages {
            if let Some(StepPlan::Plugin(old, poison)) = steps.get(i) {
                debug_assert_eq!(old.plugin().name(), stage.plugin().name());
                // A version replacing one on trial restores, if it fails, what that one replaced.
                let configured = configured_policy(&state.trials, i, *poison);
                let info = stage.plugin().info();
                name_digest = Some((info.name.clone(), info.digest.clone()));
                replaced.push((i, StepPlan::Plugin(old.clone(), configured)));
                let policy = if self.trial_batches > 0 {
                    trial::strict(configured)
                } else {
                    configured
                };
                steps[i] = StepPlan::Plugin(stage, policy);
            }
        }
        if let Some((name, digest)) = name_digest
            && self.trial_batches > 0
        {
            let trial = Trial {
                digest,
                replaced,
                left: self.trial_batches,
                batches: self.trial_batches,
            };
            state.trials.insert(name, trial);
        }
        state.steps = Arc::new(steps);
    }

    /// The sha256 the live steps run plugin `name` with, if a step uses it.
    pub fn digest_of(&self, name: &str) -> Option<String> {
        step_digests(&self.steps()).remove(name)
    }

    /// Whether a batch running `steps` is on trial: it runs a version on trial.
    pub fn on_trial(&self, steps: &[StepPlan]) -> bool {
        let state = self.lock();
        !state.trials.is_empty()
            && step_digests(steps)
                .iter()
                .any(|(n, d)| state.trials.get(n).is_some_and(|t| &t.digest == d))
    }

    /// The version on trial that `error` is the fault of, if any.
    pub fn blame(&self, error: &JobError) -> Option<Blame> {
        let blame = trial::blame(error)?;
        let state = self.lock();
        let t = state.trials.get(&blame.plugin)?;
        (t.digest == blame.digest).then_some(blame)
    }

    /// Rolls the version `blame` names back to the one it replaced, for every batch opening
    /// from now on, and quarantines it. `None` when it is no longer on trial.
    pub fn roll_back(&self, blame: &Blame) -> Option<RolledBack> {
        let mut state = self.lock();
        let t = state.trials.remove(&blame.plugin)?;
        let mut steps: Vec<StepPlan> = state.steps.as_ref().clone();
        let mut restored = String::new();
        for (i, step) in &t.replaced {
            if let StepPlan::Plugin(stage, _) = step {
                restored = stage.plugin().info().digest.clone();
            }
            steps[*i] = step.clone();
        }
        state.steps = Arc::new(steps);
        drop(state);
        self.quarantine
            .add(&blame.plugin, &blame.digest, &blame.error);
        tracing::error!(
            plugin = %blame.plugin,
            digest = %short(&blame.digest),
            restored = %short(&restored),
            error = %blame.error,
            "A new version of the plugin failed on trial: it is rolled back to the version it replaced and quarantined (`sluice plugin clear` takes it out), and the failed batch is recomputed with the restored version."
        );
        Some(RolledBack {
            event: SwapEvent::RolledBack {
                plugin: blame.plugin.clone(),
                digest: blame.digest.clone(),
                restored: restored.clone(),
                error: blame.error.clone(),
            },
            restored,
            steps: t.replaced,
        })
    }

    /// Counts a committed batch that ran `steps` towards its versions' trials; returns the
    /// verdicts of the versions that passed (their steps get their configured policy back).
    pub fn passed(&self, steps: &[StepPlan]) -> Vec<SwapEvent> {
        let mut state = self.lock();
        let mut events = Vec::new();
        for (name, digest) in step_digests(steps) {
            let Some(t) = state.trials.get_mut(&name) else {
                continue;
            };
            if t.digest != digest {
                continue;
            }
            t.left -= 1;
            if t.left > 0 {
                continue;
            }
            let t = state.trials.remove(&name).unwrap_or_else(|| unreachable!());
            let mut live: Vec<StepPlan> = state.steps.as_ref().clone();
            for (i, old) in &t.replaced {
                if let (StepPlan::Plugin(_, configured), Some(StepPlan::Plugin(stage, _))) =
                    (old, live.get(*i))
                {
                    live[*i] = StepPlan::Plugin(stage.clone(), *configured);
                }
            }
            state.steps = Arc::new(live);
            tracing::info!(plugin = %name, digest = %short(&digest), batches = t.batches, "The new version of the plugin passed its trial.");
            events.push(SwapEvent::Passed {
                plugin: name,
                digest,
                batches: t.batches,
            });
        }
        events
    }

    /// Starts `shadow` for the batches that open from now on, ending any earlier one.
    pub fn start_shadow(&self, shadow: Shadow) -> Arc<Shadow> {
        let shadow = Arc::new(shadow);
        if let Some(old) = self.lock().shadow.replace(shadow.clone()) {
            old.stop();
        }
        tracing::info!(plugin = %shadow.plugin, digest = %short(&shadow.digest), live = %short(&shadow.live), batches = shadow.wanted, "A candidate runs in the shadow of the live version from the next batch to open: its output is compared and dropped.");
        shadow
    }

    /// The running shadow, for a batch opening now.
    pub fn running_shadow(&self) -> Option<Arc<Shadow>> {
        self.lock().shadow.clone().filter(|s| !s.done())
    }

    /// The report of the latest shadow of plugin `name`.
    pub fn shadow_report(&self, name: &str) -> Option<Report> {
        let state = self.lock();
        let s = state.shadow.as_ref().filter(|s| s.plugin == name)?;
        Some(s.report())
    }

    /// Swaps in the candidate of the latest shadow of `name` (it goes live with the next
    /// batch, on trial): its sha256 and the one it replaced. Refused when there is none, when
    /// it failed in the shadow, or when it is quarantined.
    pub fn promote(&self, name: &str) -> Result<(String, String), String> {
        let shadow = {
            let state = self.lock();
            state.shadow.clone().filter(|s| s.plugin == name)
        };
        let Some(shadow) = shadow else {
            return Err(format!(
                "no candidate of plugin `{name}` ran in the shadow (`sluice plugin shadow` first)"
            ));
        };
        if let Some(f) = shadow.report().failed {
            return Err(format!(
                "the candidate sha256 {} failed in its shadow run ({f}); it is not promoted",
                short(&shadow.digest)
            ));
        }
        if let Some(q) = self.refused(&shadow.digest) {
            return Err(format!(
                "the candidate sha256 {} is quarantined ({})",
                short(&shadow.digest),
                q.error
            ));
        }
        let previous = self.digest_of(name).unwrap_or_default();
        shadow.stop();
        self.replace(shadow.stages.clone());
        tracing::info!(plugin = %name, digest = %short(&shadow.digest), previous = %short(&previous), "The candidate of the shadow run is promoted and goes live with the next batch to open.");
        Ok((shadow.digest.clone(), previous))
    }

    /// Why `digest` is refused, if it is quarantined.
    pub fn refused(&self, digest: &str) -> Option<quarantine::Entry> {
        self.quarantine.refused(digest)
    }
}

/// The policy step `i` is configured with: the one the version on trial replaced keeps it.
fn configured_policy(
    trials: &BTreeMap<String, Trial>,
    i: usize,
    current: crate::config::poison::PoisonPolicy,
) -> crate::config::poison::PoisonPolicy {
    trials
        .values()
        .flat_map(|t| t.replaced.iter())
        .find_map(|(j, s)| match s {
            StepPlan::Plugin(_, p) if *j == i => Some(*p),
            _ => None,
        })
        .unwrap_or(current)
}

/// The live steps of a run of `plan`, with the quarantine under its checkpoint location
/// (`log`'s). When the plugin directory holds a quarantined version, the run goes on with the
/// version its newest recorded batch ran, and says so; with none to go back to it is refused.
pub fn start(
    plan: &Plan,
    handle: &tokio::runtime::Handle,
    log: Option<&crate::checkpoint::CheckpointLog>,
) -> Result<Live, String> {
    let at = plan.checkpoint.clone().map(|c| (c, handle.clone()));
    let quarantine = Quarantine::open(at)?;
    let bad: Vec<(String, String, quarantine::Entry)> = step_digests(&plan.steps)
        .into_iter()
        .filter_map(|(name, digest)| quarantine.refused(&digest).map(|q| (name, digest, q)))
        .collect();
    let mut steps = plan.steps.clone();
    if !bad.is_empty() {
        let newest = match log {
            Some(log) => handle.block_on(crate::checkpoint::history::newest_plugins(log)),
            None => BTreeMap::new(),
        };
        let mut pinned = BTreeMap::new();
        for (name, digest, q) in bad {
            match newest.get(&name) {
                Some(good) if quarantine.refused(good).is_none() => {
                    tracing::warn!(plugin = %name, quarantined = %short(&digest), running = %short(good), error = %q.error, "The plugin directory holds a quarantined version of the plugin; the run goes on with the version its newest recorded batch ran. Put back a good version, or clear the quarantine with `sluice plugin clear`.");
                    pinned.insert(name, good.clone());
                }
                _ => {
                    return Err(format!(
                        "plugin `{name}` in the plugin directory is version sha256 {digest}, which was rolled back and quarantined ({}), and there is no recorded version to run instead; put back a good version, or take it out of quarantine with `sluice plugin clear PIPELINE {}`",
                        q.error,
                        short(&digest)
                    ));
                }
            }
        }
        steps = plan.pinned_steps(&pinned)?;
    }
    Ok(Live::new(steps, plan.file.swap.trial_batches, quarantine))
}

/// The first 12 hex digits of a sha256, as logs show it.
pub fn short(digest: &str) -> &str {
    &digest[..12.min(digest.len())]
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
