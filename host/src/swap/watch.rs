//! The plugin-directory watcher: finds new versions of the transformation plugins a
//! pipeline uses and makes each live once it has passed every check.
//!
//! Every `poll-interval` it looks at `NAME.wasm` and `NAME.toml` (size and modification
//! time) for each plugin the steps use. A file that looked different at the previous look is
//! still being written (a copy in progress), so it is only read once two looks in a row agree.
//! Then it is offered to the [`Gate`], which checks it off the batch path exactly as it checks
//! a version sent to the admin endpoint (a digest equal to the live one is nothing new; any
//! other is loaded, checked and given to `init` with each step's parameters) and makes it live
//! with the next batch to open, or refuses it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use super::offer::{Candidate, Gate, Origin, Outcome};
use crate::plan::Plan;

/// Watches the plugin directory for one pipeline run.
pub struct Watcher {
    dir: PathBuf,
    gate: Arc<Gate>,
    targets: Vec<Target>,
    interval: Duration,
}

/// One plugin the steps use.
struct Target {
    name: String,
    /// The directory of the search path the plugin was found in at start.
    dir: PathBuf,
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

/// Stops the watcher's thread when dropped.
pub struct Watching(Arc<AtomicBool>);

impl Drop for Watching {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl Watcher {
    /// A watcher for `plan`'s transformation plugins, offering new versions to `gate`; `None`
    /// when `[swap] watch = false` or there is no plugin directory.
    pub fn from_plan(plan: &Plan, gate: Arc<Gate>) -> Option<Watcher> {
        let dir = plan.plugin_dir.clone()?;
        if !plan.file.swap.watch {
            return None;
        }
        let targets = gate
            .names()
            .into_iter()
            .map(|name| Target {
                dir: plan
                    .plugin_path
                    .dir_of(&name)
                    .unwrap_or_else(|| dir.clone()),
                name,
                seen: None,
                handled: None,
            })
            .collect();
        Some(Watcher {
            dir,
            gate,
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

    /// Looks at every plugin once; offers to the gate each new version whose files looked the
    /// same at the previous look. Returns what the gate made of each (the live version offered
    /// again is left out), by plugin.
    pub fn poll(&mut self) -> Vec<(String, Outcome)> {
        let mut done = Vec::new();
        for t in &mut self.targets {
            let look = look(&t.dir, &t.name);
            let steady = look.is_some() && look == t.seen;
            t.seen = look;
            if !steady || look == t.handled {
                continue;
            }
            t.handled = look;
            let wasm = t.dir.join(format!("{}.wasm", t.name));
            let outcome = match self.gate.offer(
                &t.name,
                Candidate::File(wasm),
                None,
                Origin::Directory,
            ) {
                Ok(Outcome::Unchanged { .. }) => continue,
                Ok(outcome) => outcome,
                Err(e) => {
                    tracing::warn!(plugin = %t.name, error = %e, "Could not read a changed plugin file; the live version stays.");
                    continue;
                }
            };
            if matches!(outcome, Outcome::Refused { .. }) && look != self::look(&t.dir, &t.name) {
                // It changed while being read: look again rather than refuse it.
                t.handled = None;
                continue;
            }
            done.push((t.name.clone(), outcome));
        }
        done
    }
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
