//! The plugin-directory watcher: finds new versions of the transformation plugins a
//! pipeline uses and makes each live once it has passed every check.
//!
//! Every `poll-interval` it looks at `NAME.wasm` and `NAME.toml` (size and modification
//! time) for each plugin the steps use. A file that looked different at the previous look is
//! still being written (a copy in progress), so it is only read once two looks in a row agree.
//! Then, off the batch path: the bytes are read and hashed; a digest equal to the live one is
//! nothing new; any other is loaded as a transformation (compiled into the on-disk cache, its
//! manifest, digest, limits, grants, world and imports checked, a copy kept by digest for
//! recomputes) and given to `init` with each step's parameters. Only when every step's stage
//! is made does the version go live, with the next batch to open.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use super::{Live, short};
use crate::config::Step;
use crate::plan::Plan;
use crate::plugin::limits::Grants;
use crate::plugin::{PluginKind, PluginRuntime, TransformStage};

/// Watches the plugin directory for one pipeline run.
pub struct Watcher {
    dir: PathBuf,
    runtime: PluginRuntime,
    live: Arc<Live>,
    targets: Vec<Target>,
    interval: Duration,
}

/// One plugin the steps use.
struct Target {
    name: String,
    grants: Grants,
    /// The steps that use it: index and parameters.
    steps: Vec<(usize, BTreeMap<String, String>)>,
    /// What the previous look saw.
    seen: Option<Look>,
    /// The last look acted on (a version checked, live or refused).
    handled: Option<Look>,
}

/// The plugin's files as one look saw them: size and modification time of the `.wasm` and
/// of its manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Look {
    wasm: (u64, SystemTime),
    manifest: Option<(u64, SystemTime)>,
}

/// What a check of a new version came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It went live: its digest, and the one it replaced.
    Live { digest: String, previous: String },
    /// It failed a check and never went live: its digest, and why.
    Refused { digest: String, reason: String },
}

/// Stops the watcher's thread when dropped.
pub struct Watching(Arc<AtomicBool>);

impl Drop for Watching {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl Watcher {
    /// A watcher for `plan`'s transformation plugins, swapping into `live`; `None` when
    /// `[swap] watch = false`, there is no plugin directory, or no step uses a plugin.
    pub fn from_plan(plan: &Plan, live: Arc<Live>) -> Option<Watcher> {
        let dir = plan.plugin_dir.clone()?;
        if !plan.file.swap.watch {
            return None;
        }
        let mut targets: Vec<Target> = Vec::new();
        for (i, step) in plan.file.steps().into_iter().enumerate() {
            let Step::Plugin { name, params, .. } = step else {
                continue;
            };
            match targets.iter_mut().find(|t| t.name == name) {
                Some(t) => t.steps.push((i, params)),
                None => targets.push(Target {
                    grants: plan.grants.get(&name).cloned().unwrap_or_default(),
                    name,
                    steps: vec![(i, params)],
                    seen: None,
                    handled: None,
                }),
            }
        }
        if targets.is_empty() {
            return None;
        }
        Some(Watcher {
            dir,
            runtime: plan.runtime.clone(),
            live,
            targets,
            interval: plan.file.swap.poll_interval,
        })
    }

    /// Runs [`Watcher::poll`] every poll interval on a thread of its own until the returned
    /// guard is dropped.
    pub fn spawn(mut self) -> Watching {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        tracing::info!(
            dir = %self.dir.display(),
            plugins = ?self.targets.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
            poll_ms = self.interval.as_millis() as u64,
            "Watching the plugin directory: a new version of a transformation plugin goes live at the next batch once it passes its checks."
        );
        let spawned = std::thread::Builder::new()
            .name("sluice-swap".to_owned())
            .spawn(move || {
                while !stopped.load(Ordering::SeqCst) {
                    self.poll();
                    sleep_unless(&stopped, self.interval);
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "Could not start the plugin-directory watcher; plugins will not be swapped in this run.");
        }
        Watching(stop)
    }

    /// Looks at every plugin once; checks, and makes live or refuses, each new version whose
    /// files looked the same at the previous look. Returns what it did, by plugin.
    pub fn poll(&mut self) -> Vec<(String, Outcome)> {
        let mut done = Vec::new();
        for t in &mut self.targets {
            let look = look(&self.dir, &t.name);
            let steady = look.is_some() && look == t.seen;
            t.seen = look;
            if !steady || look == t.handled {
                continue;
            }
            t.handled = look;
            if let Some(outcome) = check(&self.runtime, &self.live, &self.dir, t) {
                if matches!(outcome, Outcome::Refused { .. })
                    && look != self::look(&self.dir, &t.name)
                {
                    // It changed while being read: look again rather than refuse it.
                    t.handled = None;
                    continue;
                }
                done.push((t.name.clone(), outcome));
            }
        }
        done
    }
}

/// Checks the version of `t` in `dir`; `None` when it is the live one.
fn check(runtime: &PluginRuntime, live: &Live, dir: &Path, t: &Target) -> Option<Outcome> {
    let wasm = dir.join(format!("{}.wasm", t.name));
    let digest = match std::fs::read(&wasm) {
        Ok(bytes) => hex::encode(Sha256::digest(&bytes)),
        Err(e) => {
            tracing::warn!(plugin = %t.name, path = %wasm.display(), error = %e, "Could not read a changed plugin file; the live version stays.");
            return None;
        }
    };
    let previous = live.digest_of(&t.name).unwrap_or_default();
    if digest == previous {
        return None;
    }
    if let Some(q) = live.refused(&digest) {
        let reason = format!(
            "version sha256 {digest} is quarantined: it was rolled back after failing on trial ({}); `sluice plugin clear` takes it out of quarantine",
            q.error
        );
        tracing::error!(plugin = %t.name, digest = %short(&digest), live = %short(&previous), reason = %reason, "A new version of the plugin is refused; the live version stays.");
        return Some(Outcome::Refused { digest, reason });
    }
    match stages(runtime, &wasm, t, &digest) {
        Ok(stages) => {
            live.replace(stages);
            tracing::info!(plugin = %t.name, digest = %short(&digest), previous = %short(&previous), "A new version of the plugin passed its checks and goes live with the next batch to open; batches already open finish on the version they opened with.");
            Some(Outcome::Live { digest, previous })
        }
        Err(reason) => {
            tracing::error!(plugin = %t.name, digest = %short(&digest), live = %short(&previous), reason = %reason, "A new version of the plugin failed its checks and does not go live; the live version stays.");
            Some(Outcome::Refused { digest, reason })
        }
    }
}

/// Loads the version with `digest` and makes its stage for every step that uses it.
fn stages(
    runtime: &PluginRuntime,
    wasm: &Path,
    t: &Target,
    digest: &str,
) -> Result<Vec<(usize, Arc<TransformStage>)>, String> {
    let plugin = runtime
        .load_as(wasm, &t.grants, PluginKind::Transformer)
        .map_err(|e| e.to_string())?;
    if plugin.info().digest != digest {
        return Err(format!(
            "{} changed while it was being loaded (sha256 {} read, {} loaded)",
            wasm.display(),
            short(digest),
            short(&plugin.info().digest)
        ));
    }
    t.steps
        .iter()
        .map(|(i, params)| {
            let stage = plugin
                .transformer(params)
                .map_err(|e| format!("`[[transform]]` number {}: {e}", i + 1))?;
            Ok((*i, Arc::new(stage)))
        })
        .collect()
}

/// The plugin's files as they are now; `None` when there is no `.wasm`.
fn look(dir: &Path, name: &str) -> Option<Look> {
    let stat = |ext: &str| {
        let m = std::fs::metadata(dir.join(format!("{name}.{ext}"))).ok()?;
        Some((m.len(), m.modified().ok()?))
    };
    Some(Look {
        wasm: stat("wasm")?,
        manifest: stat("toml"),
    })
}

fn sleep_unless(stop: &AtomicBool, total: Duration) {
    let step = Duration::from_millis(20);
    let mut left = total;
    while !left.is_zero() && !stop.load(Ordering::SeqCst) {
        let d = left.min(step);
        std::thread::sleep(d);
        left -= d;
    }
}
