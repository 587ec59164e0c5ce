//! The gate every new version of a transformation plugin goes through, whoever offers it: the
//! plugin-directory watcher ([`super::watch`]) or the admin endpoint (`sluice plugin swap`).
//!
//! [`Gate::offer`] takes one lock, so two offers never race, and runs every check in one
//! place ([`Gate::offer_locked`]): the digest (the live one is nothing new), then, off the
//! batch path, the load (compiled into the on-disk cache, manifest, digest, limits, grants,
//! world and imports), then `init` with each step's parameters (or the new ones the offer
//! brings). Only when every step's stage is made does the version go live, with the next
//! batch to open; otherwise the live one stays, and the reason is logged and returned.
//!
//! An offer of bytes (the admin endpoint's) is staged under the compiled-component cache, as
//! `staging/<pid>-<n>/NAME.wasm` with its manifest beside it, and loaded from there like a
//! file: the plugin directory is the watcher's alone. The stage is removed after the check;
//! a version that went live is kept by digest in the cache, as every loaded version is.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::{Live, short};
use crate::config::Step;
use crate::plan::Plan;
use crate::plugin::limits::Grants;
use crate::plugin::{PluginKind, PluginRuntime, TransformStage};
use crate::scheduler::shadow::{Report, Shadow};

/// Parameters, by name.
pub type Params = BTreeMap<String, String>;

/// What a check of a new version came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It went live: its digest, and the one it replaced.
    Live {
        /// The new version's sha256.
        digest: String,
        /// The sha256 it replaced.
        previous: String,
    },
    /// It failed a check and never went live: its digest, and why.
    Refused {
        /// The refused version's sha256.
        digest: String,
        /// Why, in a sentence.
        reason: String,
    },
    /// It is the live version already, and no new parameters came with it: nothing changed.
    Unchanged {
        /// The live sha256.
        digest: String,
    },
    /// It passed its checks and runs in the shadow of the live version (`Then::Shadow`).
    Shadowing {
        /// The candidate's sha256.
        digest: String,
        /// The live sha256 it is compared with.
        live: String,
    },
}

/// What a version that passes its checks does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    /// It goes live with the next batch to open (a swap).
    GoLive,
    /// It runs in the shadow of the live version for this many batches
    /// ([`crate::scheduler::shadow`]); `promote` swaps it in later.
    Shadow(u32),
}

/// The new version of a plugin an offer brings.
#[derive(Debug)]
pub enum Candidate {
    /// A `NAME.wasm` file, read where it is (its `NAME.toml` beside it).
    File(PathBuf),
    /// A component's bytes and its manifest's text (none: the plugin has no manifest).
    Bytes {
        /// The component.
        wasm: Vec<u8>,
        /// The manifest, as TOML text.
        manifest: Option<String>,
    },
}

/// An offer that could not be checked at all (as opposed to a version refused by a check).
#[derive(Debug, thiserror::Error)]
pub enum OfferError {
    /// No step of the pipeline uses a plugin of this name.
    #[error("no step of this pipeline uses a transformation plugin named {0:?}")]
    UnknownPlugin(String),
    /// The file could not be read, or the bytes could not be staged.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// Who offers a version, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The plugin-directory watcher.
    Directory,
    /// The admin endpoint (`sluice plugin swap`).
    Admin,
}

impl Origin {
    fn as_str(self) -> &'static str {
        match self {
            Origin::Directory => "plugin directory",
            Origin::Admin => "admin endpoint",
        }
    }
}

/// The checks between a new version and the live steps, for one pipeline run.
pub struct Gate {
    runtime: PluginRuntime,
    live: Arc<Live>,
    /// The transformation plugins the steps use, by name; the lock every offer holds.
    targets: Mutex<BTreeMap<String, Target>>,
    /// The same plugins' steps (numbers of `[[transform]]`, from 1), readable while an offer
    /// holds the lock.
    steps: BTreeMap<String, Vec<usize>>,
    /// Numbers the staging directories of this process.
    staged: AtomicU64,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate").finish_non_exhaustive()
    }
}

/// One plugin the steps use.
struct Target {
    grants: Grants,
    /// The steps that use it: index, and the parameters the live version runs with.
    steps: Vec<(usize, Params)>,
    /// The steps' parameters of the candidate in the shadow, which a promote makes theirs.
    shadow_steps: Option<Vec<(usize, Params)>>,
    /// The versions that were live before, newest last, with their steps' parameters: what a
    /// manual [`Gate::roll_back`] goes back to.
    before: Vec<(String, Vec<(usize, Params)>)>,
}

/// How many earlier versions a plugin's [`Gate::roll_back`] can go back through.
const KEEP_BEFORE: usize = 16;

/// A plugin the live steps use, as [`Gate::plugins`] lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LivePlugin {
    /// The plugin's name.
    pub name: String,
    /// The sha256 the live steps run it with.
    pub digest: String,
    /// The steps that use it (numbers of `[[transform]]`, from 1).
    pub steps: Vec<usize>,
}

impl Gate {
    /// The gate of `plan`'s transformation plugins, swapping into `live`; `None` when no step
    /// uses a plugin.
    pub fn from_plan(plan: &Plan, live: Arc<Live>) -> Option<Gate> {
        let mut targets: BTreeMap<String, Target> = BTreeMap::new();
        for (i, step) in plan.file.steps().into_iter().enumerate() {
            let Step::Plugin { name, params, .. } = step else {
                continue;
            };
            let grants = plan.grants.get(&name).cloned().unwrap_or_default();
            targets
                .entry(name)
                .or_insert_with(|| Target {
                    grants,
                    steps: Vec::new(),
                    shadow_steps: None,
                    before: Vec::new(),
                })
                .steps
                .push((i, params));
        }
        let steps = targets
            .iter()
            .map(|(name, t)| (name.clone(), t.steps.iter().map(|(i, _)| i + 1).collect()))
            .collect();
        (!targets.is_empty()).then(|| Gate {
            runtime: plan.runtime.clone(),
            live,
            steps,
            targets: Mutex::new(targets),
            staged: AtomicU64::new(0),
        })
    }

    /// The names of the plugins a new version can be offered for.
    pub fn names(&self) -> Vec<String> {
        self.steps.keys().cloned().collect()
    }

    /// The plugins the live steps use, with the digest each runs. Does not wait for an offer
    /// being checked.
    pub fn plugins(&self) -> Vec<LivePlugin> {
        self.steps
            .iter()
            .map(|(name, steps)| LivePlugin {
                name: name.clone(),
                digest: self.live.digest_of(name).unwrap_or_default(),
                steps: steps.clone(),
            })
            .collect()
    }

    /// Checks `candidate` as the new version of plugin `name` (with `params`, when given, as
    /// the new parameters of every step that uses it) and makes it live if it passes. Holds
    /// the gate's lock throughout, so offers are checked one at a time. Runs compilation and
    /// `init`: call it off the batch path (and off async tasks).
    pub fn offer(
        &self,
        name: &str,
        candidate: Candidate,
        params: Option<Params>,
        origin: Origin,
    ) -> Result<Outcome, OfferError> {
        self.offer_then(name, candidate, params, (origin, Then::GoLive))
    }

    /// [`Gate::offer`], with what a version that passes does: go live, or run in the shadow.
    pub fn offer_then(
        &self,
        name: &str,
        candidate: Candidate,
        params: Option<Params>,
        (origin, then): (Origin, Then),
    ) -> Result<Outcome, OfferError> {
        let mut targets = self.lock();
        let target = targets
            .get_mut(name)
            .ok_or_else(|| OfferError::UnknownPlugin(name.to_owned()))?;
        match candidate {
            Candidate::File(wasm) => {
                self.offer_locked(name, target, &wasm, params.as_ref(), (origin, then))
            }
            Candidate::Bytes { wasm, manifest } => {
                let stage = self.stage(name, &wasm, manifest.as_deref())?;
                let outcome =
                    self.offer_locked(name, target, &stage.wasm, params.as_ref(), (origin, then));
                drop(stage);
                outcome
            }
        }
    }

    /// Every check, in order; the one path each offer goes through (a new check belongs here).
    fn offer_locked(
        &self,
        name: &str,
        target: &mut Target,
        wasm: &Path,
        params: Option<&Params>,
        (origin, then): (Origin, Then),
    ) -> Result<Outcome, OfferError> {
        let bytes = std::fs::read(wasm).map_err(|source| OfferError::Io {
            what: "reading",
            path: wasm.to_owned(),
            source,
        })?;
        let digest = hex::encode(Sha256::digest(&bytes));
        drop(bytes);
        let previous = self.live.digest_of(name).unwrap_or_default();
        if digest == previous && params.is_none() && then == Then::GoLive {
            return Ok(Outcome::Unchanged { digest });
        }
        if let Some(q) = self.live.refused(&digest) {
            let reason = format!(
                "version sha256 {digest} is quarantined: it was rolled back after failing on trial ({}); `sluice plugin clear` takes it out of quarantine",
                q.error
            );
            tracing::error!(plugin = %name, digest = %short(&digest), live = %short(&previous), from = origin.as_str(), reason = %reason, "A new version of the plugin is refused; the live version stays.");
            return Ok(Outcome::Refused { digest, reason });
        }
        let steps: Vec<(usize, Params)> = match params {
            Some(p) => target.steps.iter().map(|(i, _)| (*i, p.clone())).collect(),
            None => target.steps.clone(),
        };
        match self.stages(wasm, &target.grants, &steps, &digest) {
            Ok(stages) if matches!(then, Then::Shadow(_)) => {
                let Then::Shadow(batches) = then else {
                    unreachable!()
                };
                let ids = (name.to_owned(), digest.clone(), previous.clone());
                self.live.start_shadow(Shadow::new(ids, stages, batches));
                target.shadow_steps = Some(steps);
                Ok(Outcome::Shadowing {
                    digest,
                    live: previous,
                })
            }
            Ok(stages) => {
                self.live.replace(stages);
                let replaced = std::mem::replace(&mut target.steps, steps);
                target.remember(previous.clone(), replaced);
                tracing::info!(plugin = %name, digest = %short(&digest), previous = %short(&previous), from = origin.as_str(), new_params = params.is_some(), "A new version of the plugin passed its checks and goes live with the next batch to open; batches already open finish on the version they opened with.");
                Ok(Outcome::Live { digest, previous })
            }
            Err(reason) => {
                tracing::error!(plugin = %name, digest = %short(&digest), live = %short(&previous), from = origin.as_str(), reason = %reason, "A new version of the plugin failed its checks and does not go live; the live version stays.");
                Ok(Outcome::Refused { digest, reason })
            }
        }
    }

    /// Goes back to the version of plugin `name` that was live before the current one (with
    /// the parameters it ran with), through every check a new version passes; it goes live
    /// with the next batch to open, on trial. Refused when no earlier version went live in
    /// this run. The version left is not quarantined: it can be offered again.
    pub fn roll_back(&self, name: &str) -> Result<Outcome, OfferError> {
        let mut targets = self.lock();
        let target = targets
            .get_mut(name)
            .ok_or_else(|| OfferError::UnknownPlugin(name.to_owned()))?;
        let current = self.live.digest_of(name).unwrap_or_default();
        let Some((digest, steps)) = target.before.pop() else {
            return Ok(Outcome::Refused {
                digest: current,
                reason: "no earlier version of this plugin went live in this run".to_owned(),
            });
        };
        let wasm = self.runtime.kept_wasm(name, &digest);
        let now = std::mem::replace(&mut target.steps, steps);
        let outcome = self.offer_locked(name, target, &wasm, None, (Origin::Admin, Then::GoLive));
        match &outcome {
            Ok(Outcome::Live { .. }) => {
                // Going back is not a step forward: forget the version just left.
                target.before.pop();
            }
            _ => {
                let steps = std::mem::replace(&mut target.steps, now);
                target.before.push((digest, steps));
            }
        }
        outcome
    }

    /// Swaps in the candidate of the latest shadow run of plugin `name` (it goes live with the
    /// next batch to open, on trial, with the parameters it ran with in the shadow).
    pub fn promote(&self, name: &str) -> Result<Outcome, OfferError> {
        let mut targets = self.lock();
        let target = targets
            .get_mut(name)
            .ok_or_else(|| OfferError::UnknownPlugin(name.to_owned()))?;
        match self.live.promote(name) {
            Ok((digest, previous)) => {
                let replaced = target.steps.clone();
                if let Some(steps) = target.shadow_steps.take() {
                    target.steps = steps;
                }
                target.remember(previous.clone(), replaced);
                Ok(Outcome::Live { digest, previous })
            }
            Err(reason) => Ok(Outcome::Refused {
                digest: self
                    .live
                    .shadow_report(name)
                    .map(|r| r.digest)
                    .unwrap_or_default(),
                reason,
            }),
        }
    }

    /// The report of the latest shadow run of plugin `name`.
    pub fn shadow_report(&self, name: &str) -> Result<Option<Report>, OfferError> {
        if !self.steps.contains_key(name) {
            return Err(OfferError::UnknownPlugin(name.to_owned()));
        }
        Ok(self.live.shadow_report(name))
    }

    /// Loads the version with `digest` from `wasm` and makes its stage for each of `steps`.
    fn stages(
        &self,
        wasm: &Path,
        grants: &Grants,
        steps: &[(usize, Params)],
        digest: &str,
    ) -> Result<Vec<(usize, Arc<TransformStage>)>, String> {
        let plugin = self
            .runtime
            .load_as(wasm, grants, PluginKind::Transformer)
            .map_err(|e| e.to_string())?;
        if plugin.info().digest != digest {
            return Err(format!(
                "{} changed while it was being loaded (sha256 {} read, {} loaded)",
                wasm.display(),
                short(digest),
                short(&plugin.info().digest)
            ));
        }
        steps
            .iter()
            .map(|(i, params)| {
                let stage = plugin
                    .transformer(params)
                    .map_err(|e| format!("`[[transform]]` number {}: {e}", i + 1))?;
                Ok((*i, Arc::new(stage)))
            })
            .collect()
    }

    /// Writes `wasm` (and `manifest`) as `NAME.wasm` (and `NAME.toml`) into a fresh staging
    /// directory under the compiled-component cache.
    fn stage(&self, name: &str, wasm: &[u8], manifest: Option<&str>) -> Result<Staged, OfferError> {
        let n = self.staged.fetch_add(1, Ordering::SeqCst);
        let dir = self
            .runtime
            .cache()
            .dir()
            .join("staging")
            .join(format!("{}-{n}", std::process::id()));
        let staged = Staged {
            wasm: dir.join(format!("{name}.wasm")),
            dir,
        };
        let io = |what: &'static str, path: &Path| {
            let path = path.to_owned();
            move |source| OfferError::Io { what, path, source }
        };
        std::fs::create_dir_all(&staged.dir).map_err(io("creating", &staged.dir))?;
        if let Some(text) = manifest {
            let toml = staged.wasm.with_extension("toml");
            std::fs::write(&toml, text).map_err(io("writing", &toml))?;
        }
        std::fs::write(&staged.wasm, wasm).map_err(io("writing", &staged.wasm))?;
        Ok(staged)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Target>> {
        self.targets.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A staging directory, removed when dropped.
struct Staged {
    dir: PathBuf,
    wasm: PathBuf,
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "Could not remove a staged plugin version.");
        }
    }
}

impl Target {
    /// Notes that `digest`, running `steps`, was live until now.
    fn remember(&mut self, digest: String, steps: Vec<(usize, Params)>) {
        if self.before.len() == KEEP_BEFORE {
            self.before.remove(0);
        }
        self.before.push((digest, steps));
    }
}
