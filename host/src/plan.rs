//! The plan the engine runs: the pipeline file with its plugins loaded (pinned by digest),
//! their stages made (parameters checked by each plugin's `init`), and its stores reached.
//! Building a plan runs nothing; `sluice validate` stops there.
//!
//! Assembly asks each kind to build itself (`SourceConfig::build`, `SinkConfig::build`) from a
//! context: the pipeline file's directory, the async runtime, and a plugin loader that pins
//! every plugin's digest. What is not a kind's (the runtime, the steps, the dead letters, the
//! checkpoint log, the worker pool) is built here.
//!
//! This is its own room, above `receiver` and `sink` and below `scheduler` and `driver`: the
//! job (in `scheduler`) runs a plan's steps and the driver runs the plan, so a plan inside
//! `driver` would tie `scheduler` and `driver` to each other.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::runtime::Handle;

use crate::build::{BuildContext, BuildError};
use crate::config::poison::PoisonPolicy;
use crate::config::{ConfigError, PipelineFile, Step};
use crate::error::Fault;
use crate::plugin::limits::Grants;
use crate::plugin::{Plugin, PluginKind, PluginRuntime, TransformStage};
use crate::receiver::Source;
use crate::sink::Sink;
use crate::sink::count::CountSink;
use crate::sink::dead_letter::DeadLetters;
use crate::store::Location;

/// A step, resolved.
#[derive(Clone)]
pub enum StepPlan {
    /// A transformation plugin's stage, and what it does with a poison record.
    Plugin(Arc<TransformStage>, PoisonPolicy),
    /// Repartition by key into this many partitions (`None`: as many as before).
    RepartitionByKey(Option<u32>),
    /// Count records per key; with `sum_values`, add up their values (decimal counts).
    CountByKey {
        /// `sum-values`: a record adds its value rather than 1.
        sum_values: bool,
    },
    /// A window over batch time, and its state (shared by every batch that pins the steps,
    /// so it lives across hot swaps).
    Window(Arc<crate::ops::window::WindowOp>),
    /// A running state per key (`update-state-by-key`), shared like a window's.
    UpdateState(Arc<crate::ops::running::RunningOp>),
    /// A window over event time with a watermark (`event-window`), shared like a window's.
    EventWindow(Arc<crate::ops::event_window::EventWindowOp>),
    /// A lookup join: each record enriched with its row of a table held in memory.
    Lookup(Arc<crate::lookup::Lookup>),
    /// A step in native Rust, for benchmarks that compare it with a plugin doing the same.
    Native(NativeStep),
}

/// A native step: a function from a partition's records to its output.
#[derive(Clone, Copy)]
pub struct NativeStep {
    /// A name for reports.
    pub name: &'static str,
    /// The function.
    pub f: fn(&crate::batch::RecordBatch) -> crate::batch::RecordBatch,
}

/// A pipeline ready to run.
pub struct Plan {
    /// The pipeline's name.
    pub name: String,
    /// The pipeline file.
    pub path: PathBuf,
    /// The file as read.
    pub file: PipelineFile,
    /// The plugin runtime.
    pub runtime: PluginRuntime,
    /// The stream's name.
    pub stream: String,
    /// Source partitions.
    pub partitions: u32,
    /// The source, built.
    pub source: Arc<dyn Source>,
    /// The steps, in order, as each new batch pins them.
    pub steps: Arc<Vec<StepPlan>>,
    /// The sinks.
    pub sinks: Vec<Arc<dyn Sink>>,
    /// Where rejected records go.
    pub dead_letters: Arc<DeadLetters>,
    /// Tasks running at once.
    pub workers: usize,
    /// The worker pool: `workers` threads.
    pub pool: Arc<rayon::ThreadPool>,
    /// `count-by-key`: the most keys one target partition counted in the last finished
    /// batch, so that the next batch's count maps start that big instead of growing.
    pub count_keys_hint: Arc<std::sync::atomic::AtomicUsize>,
    /// Every plugin used, by name, with its sha256: what each batch runs with.
    pub digests: BTreeMap<String, String>,
    /// Count sinks, so a benchmark can read them.
    pub counters: Vec<Arc<CountSink>>,
    /// The source's `latency-marker` prefix.
    pub latency_marker: Option<Vec<u8>>,
    /// Reliable mode: the source's `wal`.
    pub wal: bool,
    /// Reliable mode: the source's `wal-fsync` (default true).
    pub wal_fsync: bool,
    /// Where the checkpoint log (and, in reliable mode, the write-ahead log) go
    /// (`[checkpoint] path`); `None` with `[checkpoint] enabled = false`.
    pub checkpoint: Option<Location>,
    /// The grants, by plugin name (to load a pinned older version of a plugin).
    pub grants: BTreeMap<String, Grants>,
    /// The plugin directory the hot-swap watcher looks in: the search path's first.
    pub plugin_dir: Option<PathBuf>,
    /// The plugin search path (`--plugins`, the file's `plugins`, or `$SLUICE_PLUGINS`).
    pub plugin_path: crate::plugin::search::PluginPath,
    /// The keyed state of the plugin steps whose plugin imports `keyed-state`, by step
    /// (shared by every batch, so it lives across hot swaps).
    pub keyed: crate::state::keyed::Stores,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("name", &self.name)
            .field("stream", &self.stream)
            .field("partitions", &self.partitions)
            .field("digests", &self.digests)
            .finish_non_exhaustive()
    }
}

/// Builds the plan for the pipeline file at `path`. `plugins` overrides the file's plugin
/// directory. Must be called outside the async runtime whose `handle` is given (it waits on
/// store look-ups).
pub fn build(path: &Path, plugins: Option<&Path>, handle: &Handle) -> Result<Plan, ConfigError> {
    build_with(path, plugins, None, handle)
}

/// [`build`], with the compiled-component cache directory given by the caller (`--cache-dir`),
/// which wins over the file's `runtime.cache-dir`.
pub fn build_with(
    path: &Path,
    plugins: Option<&Path>,
    cache_dir: Option<&Path>,
    handle: &Handle,
) -> Result<Plan, ConfigError> {
    let plugins: Vec<PathBuf> = plugins.map(Path::to_owned).into_iter().collect();
    build_searching(path, &plugins, cache_dir, handle)
}

/// [`build_with`] with a plugin search path from the command line (`--plugins`, repeated;
/// empty: the file's `plugins`, else `$SLUICE_PLUGINS`), first match wins.
pub fn build_searching(
    path: &Path,
    plugins: &[PathBuf],
    cache_dir: Option<&Path>,
    handle: &Handle,
) -> Result<Plan, ConfigError> {
    let file = PipelineFile::load(path)?;
    let bad = |message: String| ConfigError {
        path: path.to_owned(),
        message,
        fault: Fault::User,
    };
    // A store or broker that does not answer at start may answer later.
    let built = |e: BuildError| match e {
        BuildError::Invalid(message) => bad(message),
        BuildError::Unreachable(message) => ConfigError {
            path: path.to_owned(),
            message,
            fault: Fault::External,
        },
    };
    let base = base_dir(path);
    let name = file.name.clone().unwrap_or_else(|| {
        base.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "pipeline".to_owned())
    });
    let runtime = plugin_runtime(&file, &base, cache_dir).map_err(&bad)?;
    let plugin_path =
        crate::plugin::search::PluginPath::resolve(plugins, file.plugins.as_ref(), &base);
    let plugin_dir = plugin_path.dirs.first().cloned();
    let grants = resolve_grants(&file, &base);
    let mut digests = BTreeMap::new();
    let mut load = |what: &str, plugin: &str, kind: PluginKind| {
        let p = load_plugin(&runtime, &plugin_path, &grants, what, plugin, kind)?;
        digests.insert(plugin.to_owned(), p.info().digest.clone());
        Ok(p)
    };

    let dl_spec = file
        .dead_letter
        .as_ref()
        .map_or("dead-letters", |d| d.path.as_str());
    let dl_existed = base.join(dl_spec).exists();
    let dl = reach(dl_spec, "dead-letter.path", &base, handle).map_err(built)?;
    // The source and sinks are built with the dead-letter location at hand; if building
    // them fails, a dead-letter directory made just now is taken away again: a refused
    // pipeline file leaves nothing behind.
    let made = Made::dir(dl.local.as_deref().filter(|_| !dl_existed));
    let source = file
        .source
        .build(&mut BuildContext {
            what: "`[source]`",
            base: &base,
            handle,
            load: &mut load,
            dead_letters: &dl,
        })
        .map_err(built)?;
    let steps = build_steps(&file, &base, handle, &mut load).map_err(built)?;
    let mut sinks: Vec<Arc<dyn Sink>> = Vec::new();
    for (i, sink) in file.sink.iter().enumerate() {
        let what = format!("`[[sink]]` number {}", i + 1);
        let mut ctx = BuildContext {
            what: &what,
            base: &base,
            handle,
            load: &mut load,
            dead_letters: &dl,
        };
        sinks.push(sink.build(&mut ctx).map_err(built)?);
    }
    let counters = sinks.iter().filter_map(|s| s.clone().counter()).collect();

    let mut wal = file.raw_source.wal.unwrap_or(false);
    if file.raw_source.wal_fsync.is_some() && !wal {
        return Err(bad(
            "key `source.wal-fsync`: needs `wal = true` on the source (it says how the write-ahead log syncs)"
                .to_owned(),
        ));
    }
    if wal && source.replays_by_position() {
        // The checkpoint log records where these sources stood, and a restart reads the same
        // records again from there; a log of their blocks would only be a second copy (whose
        // source positions are unknown past the last batch, so it could not be resumed after).
        tracing::warn!(
            source = %file.raw_source.kind,
            "`wal = true` is not needed for this source: it is replayed from the positions the checkpoint log records, exactly once; the write-ahead log is off."
        );
        wal = false;
    }
    let cp_spec = file
        .checkpoint
        .as_ref()
        .map_or("checkpoints", |c| c.path.as_str());
    let checkpoint = if file.checkpoint.as_ref().is_none_or(|c| c.enabled) {
        Some(reach(cp_spec, "checkpoint.path", &base, handle).map_err(built)?)
    } else {
        None
    };
    made.keep();
    let workers = file.workers.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    });
    let keyed = crate::state::keyed::Stores::new(&name);
    for (i, step) in file.steps().into_iter().enumerate() {
        if let Step::Plugin {
            state,
            snapshot_every,
            ..
        } = step
        {
            let at = state.spill_dir.as_ref().map(|d| base.join(d));
            keyed.configure(i, snapshot_every, state.budget, at);
        }
    }
    for (i, step) in steps.iter().enumerate() {
        if let StepPlan::Plugin(stage, _) = step
            && stage.plugin().uses_keyed_state()
        {
            keyed.of(i);
        }
    }
    if !keyed.all().is_empty() {
        crate::state::spill::clear_stale(None, &name);
    }
    Ok(Plan {
        keyed,
        name,
        path: path.to_owned(),
        runtime,
        stream: file.source.name().to_owned(),
        partitions: source.partitions(),
        source,
        steps: Arc::new(steps),
        sinks,
        dead_letters: Arc::new(DeadLetters::new(dl, handle.clone())),
        workers,
        pool: Arc::new(
            rayon::ThreadPoolBuilder::new()
                .num_threads(workers.max(1))
                .thread_name(|i| format!("sluice-worker-{i}"))
                .build()
                .map_err(|e| bad(format!("starting {workers} worker threads: {e}")))?,
        ),
        count_keys_hint: Arc::default(),
        digests,
        counters,
        latency_marker: file
            .raw_source
            .latency_marker
            .as_ref()
            .filter(|m| !m.is_empty())
            .map(|m| m.as_bytes().to_vec()),
        wal,
        wal_fsync: file.raw_source.wal_fsync.unwrap_or(true),
        checkpoint,
        grants,
        plugin_dir,
        plugin_path,
        file,
    })
}

/// The pipeline file's directory, made absolute when it can be.
pub(crate) fn base_dir(path: &Path) -> PathBuf {
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_owned();
    std::fs::canonicalize(&base).unwrap_or(base)
}

/// The plugin runtime of `[runtime]`; a relative `cache-dir` is the pipeline file's, and
/// `--cache-dir` wins.
fn plugin_runtime(
    file: &PipelineFile,
    base: &Path,
    cache_dir: Option<&Path>,
) -> Result<PluginRuntime, String> {
    let mut cfg = file.runtime.clone();
    if let Some(dir) = &cfg.cache_dir
        && dir.is_relative()
    {
        cfg.cache_dir = Some(base.join(dir));
    }
    if let Some(dir) = cache_dir {
        cfg.cache_dir = Some(dir.to_owned());
    }
    PluginRuntime::new(cfg).map_err(|e| e.to_string())
}

/// `[grants.NAME]`, with relative host directories resolved against `base`.
fn resolve_grants(file: &PipelineFile, base: &Path) -> BTreeMap<String, Grants> {
    file.grants
        .iter()
        .map(|(name, g)| {
            let mut g = g.clone();
            for host in g.dirs.values_mut() {
                if host.is_relative() {
                    *host = base.join(&*host);
                }
            }
            (name.clone(), g)
        })
        .collect()
}

/// Loads `plugin` from the plugin search path (first match wins) for `what` (a table of the
/// file), with its grants. The message names the table, and what the path has when the plugin
/// is not there.
fn load_plugin(
    runtime: &PluginRuntime,
    path: &crate::plugin::search::PluginPath,
    grants: &BTreeMap<String, Grants>,
    what: &str,
    plugin: &str,
    kind: PluginKind,
) -> Result<Plugin, String> {
    if path.is_empty() {
        return Err(format!(
            "{what}: plugin `{plugin}` is needed but there is no plugin directory: give --plugins DIR, `plugins = \"DIR\"` (or a list) in the file, or $SLUICE_PLUGINS{}",
            if path.unset.is_empty() {
                String::new()
            } else {
                format!(" (left out, variable not set: {})", path.unset.join(", "))
            }
        ));
    }
    let Some(wasm) = path.find(plugin) else {
        let have = path.names();
        return Err(format!(
            "{what}: plugin `{plugin}` is not in {} (it has: {})",
            path.describe(),
            if have.is_empty() {
                "nothing".to_owned()
            } else {
                have.join(", ")
            }
        ));
    };
    let none = Grants::default();
    runtime
        .load_as(&wasm, grants.get(plugin).unwrap_or(&none), kind)
        .map_err(|e| format!("{what}: {e}"))
}

/// `reduce-by-key-and-window` with `aggregate-plugin`: the plugin loaded, its stage made,
/// and `inverse = true` refused when it cannot retract.
fn plugin_window(
    i: usize,
    what: &str,
    w: crate::config::step::PluginWindow,
    load: &mut dyn FnMut(&str, &str, PluginKind) -> Result<Plugin, String>,
) -> Result<StepPlan, BuildError> {
    let what = format!("{what} (`aggregate-plugin`)");
    let plugin = load(&what, &w.plugin, PluginKind::Aggregator)?;
    let stage = plugin
        .aggregator(&w.params)
        .map_err(|e| format!("{what}: {e}"))?;
    if w.inverse && !stage.can_retract() {
        return Err(format!(
            "{what}: `inverse = true` needs an aggregate that can take an expired batch out, and plugin `{}` says it cannot (its `can-retract` returned false); drop `inverse`",
            w.plugin
        )
        .into());
    }
    let kind = crate::config::window::WindowKind::ReduceByKey {
        aggregate: crate::config::window::Aggregate::Count,
        inverse: w.inverse,
        partitions: w.partitions,
    };
    Ok(StepPlan::Window(Arc::new(
        crate::ops::window::WindowOp::with_plugin(i, kind, w.spec, Arc::new(stage)),
    )))
}

/// The steps of `[[transform]]`, their plugins loaded and stages made, their lookup tables
/// read (relative to `base`; a store reached through `handle`).
fn build_steps(
    file: &PipelineFile,
    base: &Path,
    handle: &Handle,
    load: &mut dyn FnMut(&str, &str, PluginKind) -> Result<Plugin, String>,
) -> Result<Vec<StepPlan>, BuildError> {
    let mut steps = Vec::new();
    for (i, step) in file.steps().into_iter().enumerate() {
        let what = format!("`[[transform]]` number {}", i + 1);
        steps.push(match step {
            Step::Plugin {
                name,
                params,
                poison,
                ..
            } => {
                let plugin = load(&what, &name, PluginKind::Transformer)?;
                let stage = plugin
                    .transformer(&params)
                    .map_err(|e| format!("{what}: {e}"))?;
                StepPlan::Plugin(Arc::new(stage), poison)
            }
            Step::RepartitionByKey { partitions } => {
                if partitions == Some(0) {
                    return Err(format!("{what}: key `partitions` must be at least 1").into());
                }
                StepPlan::RepartitionByKey(partitions)
            }
            Step::CountByKey { sum_values } => StepPlan::CountByKey { sum_values },
            Step::UpdateState(spec, memory) => {
                use crate::state::spill;
                let pipeline = file.name.clone().unwrap_or_else(|| {
                    base.file_name()
                        .map_or("pipeline".to_owned(), |n| n.to_string_lossy().into_owned())
                });
                let at = memory.spill_dir.as_ref().map(|d| base.join(d));
                spill::clear_stale(at.as_deref(), &pipeline);
                let dir = spill::step_dir(at.as_deref(), &pipeline, i);
                let op = crate::ops::running::RunningOp::new(i, spec, memory.budget, dir);
                StepPlan::UpdateState(Arc::new(op))
            }
            Step::EventWindow(spec) => StepPlan::EventWindow(Arc::new(
                crate::ops::event_window::EventWindowOp::new(i, *spec),
            )),
            Step::Window { kind, spec } => {
                StepPlan::Window(Arc::new(crate::ops::window::WindowOp::new(i, kind, spec)))
            }
            Step::PluginWindow(w) => plugin_window(i, &what, *w, load)?,
            Step::Lookup(config) => {
                let lookup = crate::lookup::Lookup::start(&config, base, handle).map_err(|e| {
                    let message = format!("{what}: {e}");
                    if e.retryable() {
                        BuildError::Unreachable(message)
                    } else {
                        BuildError::Invalid(message)
                    }
                })?;
                StepPlan::Lookup(Arc::new(lookup))
            }
        });
    }
    Ok(steps)
}

/// Resolves a location the host writes to (created when local) and reaches its store.
/// A directory made while building a plan: removed when dropped still empty, unless kept.
struct Made(Option<std::path::PathBuf>);

impl Made {
    fn dir(path: Option<&Path>) -> Made {
        Made(path.map(Path::to_owned))
    }

    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for Made {
    fn drop(&mut self) {
        if let Some(dir) = &self.0 {
            let _ = std::fs::remove_dir(dir); // only when empty
        }
    }
}

fn reach(spec: &str, key: &str, base: &Path, handle: &Handle) -> Result<Location, BuildError> {
    let at = Location::resolve(spec, key, base, true)?;
    handle
        .block_on(at.reach(key))
        .map_err(BuildError::Unreachable)?;
    Ok(at)
}

impl Plan {
    /// The steps a batch recorded with plugin digests `pinned` runs: the plan's own, except a
    /// plugin whose recorded version differs from the one loaded now, which is loaded again
    /// at that version ([`PluginRuntime::load_digest`]). Names the plugin and both digests
    /// when the old version cannot be had.
    pub fn pinned_steps(
        &self,
        pinned: &BTreeMap<String, String>,
    ) -> Result<Arc<Vec<StepPlan>>, String> {
        self.pinned_steps_with(pinned, &BTreeMap::new())
    }

    /// [`Plan::pinned_steps`], with the parameters `params` recorded for some steps (by index)
    /// in place of the pipeline file's (a batch that ran after a swap with new parameters).
    pub fn pinned_steps_with(
        &self,
        pinned: &BTreeMap<String, String>,
        params: &crate::checkpoint::StepParams,
    ) -> Result<Arc<Vec<StepPlan>>, String> {
        let changed = pinned
            .iter()
            .any(|(name, d)| self.digests.get(name).is_some_and(|now| now != d));
        if !changed && params.is_empty() {
            return Ok(self.steps.clone());
        }
        let mut steps: Vec<StepPlan> = self.steps.as_ref().clone();
        for (i, step) in self.file.steps().into_iter().enumerate() {
            let Step::Plugin {
                name,
                params: file_params,
                poison,
                ..
            } = step
            else {
                continue;
            };
            let Some(now) = self.digests.get(&name) else {
                continue;
            };
            let want = pinned.get(&name).unwrap_or(now);
            let recorded = params.get(&i);
            if want == now && recorded.is_none() {
                continue;
            }
            let plugin = match (&steps[i], want == now) {
                (StepPlan::Plugin(stage, _), true) => stage.plugin().clone(),
                _ => self.load_pinned(&name, want, now)?,
            };
            let stage = plugin
                .transformer(recorded.unwrap_or(&file_params))
                .map_err(|e| format!("plugin `{name}` sha256 {want}: {e}"))?;
            tracing::info!(plugin = %name, recorded = %&want[..12.min(want.len())], current = %&now[..12.min(now.len())], "The batch being recomputed runs with the plugin version it was recorded with.");
            steps[i] = StepPlan::Plugin(Arc::new(stage), poison);
        }
        Ok(Arc::new(steps))
    }

    /// Plugin `name` at the version `want` a batch recorded (`now`: the directory's).
    fn load_pinned(&self, name: &str, want: &str, now: &str) -> Result<Plugin, String> {
        let none = Default::default();
        let grants = self.grants.get(name).unwrap_or(&none);
        self.runtime
            .load_digest(name, want, grants, PluginKind::Transformer)
            .map_err(|e| {
                format!(
                    "plugin `{name}`: the recorded batch ran with sha256 {want}, which this host cannot load ({e}); the plugin directory has {now}"
                )
            })
    }
}

impl std::fmt::Debug for StepPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StepPlan::Plugin(s, _) => write!(f, "Plugin({})", s.plugin().name()),
            StepPlan::RepartitionByKey(n) => write!(f, "RepartitionByKey({n:?})"),
            StepPlan::CountByKey { sum_values } => {
                write!(f, "CountByKey(sum_values: {sum_values})")
            }
            StepPlan::Window(w) => write!(f, "Window({})", w.kind.name()),
            StepPlan::UpdateState(_) => f.write_str("UpdateState"),
            StepPlan::EventWindow(w) => write!(f, "EventWindow({})", w.spec.shape.name()),
            StepPlan::Lookup(l) => write!(f, "Lookup({})", l.shown()),
            StepPlan::Native(n) => write!(f, "Native({})", n.name),
        }
    }
}
