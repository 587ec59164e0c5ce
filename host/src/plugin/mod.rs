//! Plugins: WebAssembly components behind the WIT contract in `wit/`.
//!
//! - [`runtime`]: the one engine, the linker, the epoch ticker and the loader;
//! - [`cache`]: compiled components on disk, keyed by digest and engine settings;
//! - [`manifest`] and [`limits`]: what a plugin asks for and what the operator allows;
//! - [`state`]: what each instance's store holds (WASI with nothing granted, log, metrics);
//! - [`bindings`]: the typed bindings, one module per contract version;
//! - [`stages`]: the stages that call a plugin ([`TransformStage`], [`SinkStage`],
//!   [`ReceiverStage`]); `convert`: the batch to and from the WIT types of a call; `lift`:
//!   `transform`'s output lifted with one copy per list, or its values left in place
//!   (`lend`: read where the guest left them);
//! - this module: loaded [`Plugin`]s and the [`Stage`] every call goes through, with pooled
//!   instances, limits on every call and classified errors.
//!
//! A call that traps (a panic, a loop past its time budget, memory past its cap) returns a
//! [`PluginError`] naming the plugin, its digest, the partition and the batch; the trapped
//! instance is dropped and the next call gets a fresh one.

pub mod aggregator;
pub mod bindings;
pub mod cache;
mod convert;
pub mod error;
mod lend;
pub mod limits;
// The fast lift implements wasmtime's lifting traits (unsafe to implement) and calls a
// type-checked `transform` without checking its type again.
#[allow(unsafe_code)]
mod lift;
pub mod manifest;
pub mod migrate;
pub mod project;
pub mod runtime;
pub mod scaffold;
pub mod search;
mod self_test;
pub mod stages;
pub mod state;
pub mod trial;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use wasmtime::Store;
use wasmtime::component::{self, Component};
use wasmtime_wasi::WasiCtxBuilder;

use crate::batch::{BytesColumn, Data, Headers, Keys, RecordBatch};
use bindings::v0_1;
pub(crate) use convert::{col, from_wit_output, guest_failure, to_wit, wit_context};
pub use error::{CallResult, CallSite, Failure, Fault, LoadError, PluginError};
use limits::{CallCost, Limits, MemoryCapExceeded, MemoryLimiter};
pub use manifest::Manifest;
pub use runtime::{PluginRuntime, Registry, RuntimeError};
pub use stages::{Polled, ReceiverStage, SinkStage, TransformOutput, TransformStage};
pub use state::{CALL_BUCKETS, PluginMetrics};
use state::{HostState, LogPipe, PluginTag};

/// The kind of a plugin, learnt from the world its component implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PluginKind {
    /// World `transformer`.
    Transformer,
    /// World `sink`.
    Sink,
    /// World `receiver`.
    Receiver,
    /// World `aggregator`.
    Aggregator,
}

impl PluginKind {
    const ALL: [PluginKind; 4] = [
        PluginKind::Transformer,
        PluginKind::Sink,
        PluginKind::Receiver,
        PluginKind::Aggregator,
    ];

    /// The interface a component of this kind exports.
    pub fn export_name(self) -> &'static str {
        match self {
            PluginKind::Transformer => "sluice:plugin/transform@0.1.0",
            PluginKind::Sink => "sluice:plugin/deliver@0.1.0",
            PluginKind::Receiver => "sluice:plugin/source@0.1.0",
            PluginKind::Aggregator => "sluice:plugin/aggregate@0.1.0",
        }
    }

    /// The WIT world's name.
    pub fn world(self) -> &'static str {
        match self {
            PluginKind::Transformer => "transformer",
            PluginKind::Sink => "sink",
            PluginKind::Receiver => "receiver",
            PluginKind::Aggregator => "aggregator",
        }
    }

    /// The kind whose interface a component with these exports implements.
    pub fn from_exports(exports: &[String]) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|k| exports.iter().any(|e| e == k.export_name()))
    }

    /// For messages: every world and its export.
    pub fn expected_exports() -> String {
        Self::ALL
            .iter()
            .map(|k| format!("{} (world `{}`)", k.export_name(), k.world()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for PluginKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.world())
    }
}

/// What is known about a loaded plugin.
#[derive(Debug, Clone)]
pub struct PluginInfo {
    /// Its name (the file stem).
    pub name: String,
    /// Its kind.
    pub kind: PluginKind,
    /// The sha256 of its `.wasm`, hex.
    pub digest: String,
    /// Where it was loaded from.
    pub path: PathBuf,
    /// The `.wasm`'s size in bytes.
    pub size: u64,
    /// The versioned WIT interface it exports.
    pub wit_package: String,
    /// What the component imports.
    pub imports: Vec<String>,
    /// What the component exports.
    pub exports: Vec<String>,
    /// The limits its calls run under.
    pub limits: Limits,
    /// Whether it came from the compiled-artifact cache.
    pub cached: bool,
    /// How long compiling (or loading from the cache) took.
    pub compile_time: Duration,
    /// Its manifest (or the implicit one).
    pub manifest: Manifest,
    /// Whether its transformations' output values are read where the guest left them instead
    /// of copied out (the component says it keeps them valid; see `plugin::lend`).
    pub lends_output: bool,
}

pub(crate) enum KindPre {
    Transformer(v0_1::transformer::TransformerPre<HostState>),
    Sink(v0_1::sink::SinkPre<HostState>),
    Receiver(v0_1::receiver::ReceiverPre<HostState>),
    Aggregator(v0_1::aggregator::AggregatorPre<HostState>),
}

/// A loaded, checked plugin, ready to be instantiated. Cheap to clone.
#[derive(Clone)]
pub struct Plugin {
    inner: Arc<PluginShared>,
}

struct PluginShared {
    runtime: PluginRuntime,
    info: PluginInfo,
    pre: KindPre,
    dirs: Vec<(String, PathBuf)>,
    tag: Arc<PluginTag>,
    metrics: Arc<PluginMetrics>,
    /// The name and full digest every call's [`CallSite`] carries, shared so that making one
    /// allocates nothing (a call made four such copies of two strings before).
    site_names: (Arc<str>, Arc<str>),
    _component: Component,
}

impl fmt::Debug for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.inner.info.name)
            .field("kind", &self.inner.info.kind)
            .field("digest", &self.inner.tag.digest)
            .finish()
    }
}

impl Plugin {
    pub(crate) fn new(
        runtime: PluginRuntime,
        info: PluginInfo,
        pre: KindPre,
        dirs: Vec<(String, PathBuf)>,
        tag: Arc<PluginTag>,
        metrics: Arc<PluginMetrics>,
        component: Component,
    ) -> Self {
        let site_names = (
            Arc::from(info.name.as_str()),
            Arc::from(info.digest.as_str()),
        );
        Plugin {
            inner: Arc::new(PluginShared {
                runtime,
                site_names,
                info,
                pre,
                dirs,
                tag,
                metrics,
                _component: component,
            }),
        }
    }

    /// What is known about it.
    pub fn info(&self) -> &PluginInfo {
        &self.inner.info
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.inner.info.name
    }

    /// Its kind.
    pub fn kind(&self) -> PluginKind {
        self.inner.info.kind
    }

    /// The counters and gauges it reported.
    pub fn metrics(&self) -> &PluginMetrics {
        &self.inner.metrics
    }

    /// Makes a stage of this plugin with `params` (over the manifest's defaults). One instance
    /// is made and initialised now, so bad parameters are refused before anything runs.
    pub fn stage(&self, params: &BTreeMap<String, String>) -> CallResult<Stage> {
        let mut merged = self.inner.info.manifest.params.clone();
        merged.extend(params.iter().map(|(k, v)| (k.clone(), v.clone())));
        let stage = Stage {
            plugin: self.clone(),
            params: merged.into_iter().collect(),
            home: Arc::default(),
            instances_made: AtomicU64::new(0),
            cost: CallCost::default(),
        };
        let first = stage.instantiate(&stage.site("init", None, None))?;
        stage.give_back(first);
        Ok(stage)
    }

    /// A transformation stage; refuses a plugin of another kind, and one whose `self-test`
    /// export (when it has one) fails with these parameters.
    pub fn transformer(&self, params: &BTreeMap<String, String>) -> Result<TransformStage, String> {
        self.expect_kind(PluginKind::Transformer)?;
        let stage = self.stage(params).map_err(|e| e.to_string())?;
        stage.self_test().map_err(|e| e.to_string())?;
        Ok(TransformStage(stage))
    }

    /// A sink stage; refuses a plugin of another kind.
    pub fn sink(&self, params: &BTreeMap<String, String>) -> Result<SinkStage, String> {
        self.expect_kind(PluginKind::Sink)?;
        self.stage(params).map(SinkStage).map_err(|e| e.to_string())
    }

    /// A receiver stage; refuses a plugin of another kind.
    pub fn receiver(&self, params: &BTreeMap<String, String>) -> Result<ReceiverStage, String> {
        self.expect_kind(PluginKind::Receiver)?;
        self.stage(params)
            .map(ReceiverStage)
            .map_err(|e| e.to_string())
    }

    /// Times `n` bare instantiations from the `InstancePre` (a new store each, no `init`) and
    /// returns the mean. For benchmarks.
    pub fn time_instantiation(&self, n: u32) -> CallResult<Duration> {
        let stage = Stage {
            plugin: self.clone(),
            params: Vec::new(),
            home: Arc::default(),
            instances_made: AtomicU64::new(0),
            cost: CallCost::default(),
        };
        let site = stage.site("instantiate", None, None);
        let started = Instant::now();
        for _ in 0..n.max(1) {
            let (mut store, _) = stage.new_store(&site)?;
            let bound = stage.bind(&mut store).map_err(|e| PluginError {
                site: site.clone(),
                failure: Failure::Instantiate(format!("{e:#}")),
            })?;
            std::hint::black_box(&bound);
        }
        Ok(started.elapsed() / n.max(1))
    }

    fn expect_kind(&self, kind: PluginKind) -> Result<(), String> {
        if self.kind() == kind {
            Ok(())
        } else {
            Err(format!(
                "plugin `{}` is a {} (it exports {}), but a {} is needed here",
                self.name(),
                self.kind(),
                self.kind().export_name(),
                kind
            ))
        }
    }
}

/// Where and when a call happens (the WIT `batch-context`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallContext {
    /// The stream name.
    pub stream: String,
    /// The partition.
    pub partition: u32,
    /// The batch id.
    pub batch_id: u64,
    /// The batch time, ms since the epoch.
    pub batch_time_ms: i64,
    /// Which call of the partition's batch, from 0: one per block (see [`crate::block`]).
    pub part: u32,
}

enum Bound {
    /// The bindings, the instance itself for the optional `self-test` export, and its
    /// `transform`, type-checked for the fast lift of [`lift`].
    Transformer(
        v0_1::transformer::Transformer,
        component::Instance,
        component::Func,
    ),
    Sink(v0_1::sink::Sink),
    Receiver(v0_1::receiver::Receiver),
    Aggregator(v0_1::aggregator::Aggregator),
}

struct Instance {
    store: Store<HostState>,
    stdout: LogPipe,
    bound: Bound,
}

/// One use of a plugin in a pipeline: the plugin, its parameters, and a pool of initialised
/// instances. Calls may come from several threads at once; each takes its own instance.
pub struct Stage {
    plugin: Plugin,
    params: Vec<(String, String)>,
    /// The idle instances, and how many are lent out with their output.
    home: Arc<lend::Home>,
    instances_made: AtomicU64,
    cost: CallCost,
}

/// An instance a call's caller kept out of the pool (its output is lent), and whether it may be
/// reused once given back.
type Kept = (Instance, bool);

impl Stage {
    /// The parameters its instances were given (the manifest's defaults, overridden by the
    /// step's).
    pub fn params(&self) -> &[(String, String)] {
        &self.params
    }
}

impl fmt::Debug for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stage")
            .field("plugin", &self.plugin)
            .field("params", &self.params)
            .finish()
    }
}

impl Stage {
    /// The plugin.
    pub fn plugin(&self) -> &Plugin {
        &self.plugin
    }

    /// How many instances were made so far (one at the start, one more after each trap, and
    /// one per concurrent caller).
    pub fn instances_made(&self) -> u64 {
        self.instances_made.load(Ordering::Relaxed)
    }

    fn site(&self, call: &'static str, partition: Option<u32>, batch: Option<u64>) -> CallSite {
        CallSite {
            plugin: self.plugin.inner.site_names.0.clone(),
            digest: self.plugin.inner.site_names.1.clone(),
            call,
            partition,
            batch,
        }
    }

    /// A store for a new instance: WASI granting only the plugin's granted directories, the
    /// memory limiter, and the time budget armed.
    fn new_store(&self, site: &CallSite) -> CallResult<(Store<HostState>, LogPipe)> {
        let shared = &self.plugin.inner;
        let stdout = LogPipe::default();
        let stderr = LogPipe::default();
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        for (guest, host) in &shared.dirs {
            wasi.preopened_dir(host, guest, wasmtime_wasi::FsPerms::ReadWrite)
                .map_err(|e| PluginError {
                    site: site.clone(),
                    failure: Failure::Instantiate(format!(
                        "granted directory {} for {guest}: {e}",
                        host.display()
                    )),
                })?;
        }
        let limits = shared.info.limits;
        let state = HostState::new(
            wasi.build(),
            MemoryLimiter {
                cap: limits.memory,
                refused: None,
                size: 0,
            },
            shared.tag.clone(),
            shared.metrics.clone(),
            stderr,
        );
        let mut store = Store::new(&shared.runtime.inner.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_trap();
        arm(&mut store, &limits, shared.runtime.config().epoch_tick);
        Ok((store, stdout))
    }

    fn bind(&self, store: &mut Store<HostState>) -> wasmtime::Result<Bound> {
        match &self.plugin.inner.pre {
            KindPre::Transformer(pre) => {
                let raw = pre.instance_pre().instantiate(&mut *store)?;
                let bound = v0_1::transformer::Transformer::new(&mut *store, &raw)?;
                let transform = lift::lookup_transform(&raw, store)?;
                Ok(Bound::Transformer(bound, raw, transform))
            }
            KindPre::Sink(pre) => pre.instantiate(store).map(Bound::Sink),
            KindPre::Receiver(pre) => pre.instantiate(store).map(Bound::Receiver),
            KindPre::Aggregator(pre) => pre.instantiate(store).map(Bound::Aggregator),
        }
    }

    fn instantiate(&self, site: &CallSite) -> CallResult<Instance> {
        let fail = |failure| PluginError {
            site: CallSite {
                call: "init",
                ..site.clone()
            },
            failure,
        };
        let limits = self.plugin.inner.info.limits;
        let (mut store, stdout) = self.new_store(site)?;
        let started = Instant::now();
        let bound = match self.bind(&mut store) {
            Ok(b) => b,
            Err(e) => {
                let failure = classify(e, &mut store, &limits, started.elapsed());
                return Err(fail(match failure {
                    Failure::Trapped(m) => Failure::Instantiate(m),
                    other => other,
                }));
            }
        };
        self.instances_made.fetch_add(1, Ordering::Relaxed);
        let mut inst = Instance {
            store,
            stdout,
            bound,
        };
        let init_site = CallSite {
            call: "init",
            ..site.clone()
        };
        let params: Vec<(&str, &str)> = self
            .params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let owned_params = &self.params;
        let result = self.call_on(&mut inst, &init_site, &limits, |bound, store| match bound {
            Bound::Transformer(t, _, _) => t.sluice_plugin_transform().call_init(store, &params),
            Bound::Sink(s) => s.sluice_plugin_deliver().call_init(store, &params),
            Bound::Receiver(r) => r.sluice_plugin_source().call_init(store, owned_params),
            Bound::Aggregator(a) => a.sluice_plugin_aggregate().call_init(store, &params),
        });
        match result.map(|(r, _)| r) {
            Ok(Ok(())) => Ok(inst),
            Ok(Err(message)) => Err(PluginError {
                site: init_site,
                failure: Failure::Init(message),
            }),
            Err(e) => Err(e),
        }
    }

    fn give_back(&self, inst: Instance) {
        self.home.give_back(inst);
    }

    /// Runs `f` on an instance under the plugin's limits. A trap drops the instance; anything
    /// else returns it to the pool.
    fn call<R>(
        &self,
        site: CallSite,
        f: impl FnOnce(&Bound, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> CallResult<R> {
        let limits = self.plugin.inner.info.limits;
        self.call_within(site, &limits, f).map(|(r, _, _)| r)
    }

    /// [`call`](Self::call) under `limits` (the plugin's, or shorter ones), giving what the
    /// call used too: its time and the instance's memory after it.
    fn call_within<R>(
        &self,
        site: CallSite,
        limits: &Limits,
        f: impl FnOnce(&Bound, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> CallResult<(R, Duration, u64)> {
        self.call_keeping(site, limits, f, |_| false)
            .map(|(r, elapsed, memory, _)| (r, elapsed, memory))
    }

    /// [`call_within`](Self::call_within), where the caller keeps the instance (instead of
    /// the pool) when `keep` says so of the result: a lent output's. The kept instance comes
    /// with whether it may be reused afterwards.
    fn call_keeping<R>(
        &self,
        site: CallSite,
        limits: &Limits,
        f: impl FnOnce(&Bound, &mut Store<HostState>) -> wasmtime::Result<R>,
        keep: impl FnOnce(&R) -> bool,
    ) -> CallResult<(R, Duration, u64, Option<Kept>)> {
        let pooled = self.home.idle.lock().ok().and_then(|mut idle| idle.pop());
        let mut inst = match pooled {
            Some(inst) => inst,
            None => self.instantiate(&site)?,
        };
        let result = self.call_on(&mut inst, &site, limits, f);
        let memory = inst.store.data().limiter.size;
        // An instance that holds more than half its cap after a call is retired rather than
        // reused: a guest whose heap only grows (a leak, or a runtime such as SpiderMonkey's
        // that keeps what each call's copies took) would otherwise reach its cap on a later,
        // healthy call. The next call starts from a fresh instance, as after a trap.
        let reuse = memory <= limits.memory / 2;
        if result.is_ok() && !reuse {
            tracing::debug!(plugin = %self.plugin.inner.tag.name, memory_mib = memory >> 20, cap_mib = limits.memory >> 20, "A plugin instance holds more than half its memory cap after a call; it is retired and the next call gets a fresh one.");
        }
        let (r, elapsed) = result?;
        if keep(&r) {
            return Ok((r, elapsed, memory, Some((inst, reuse))));
        }
        if reuse {
            self.give_back(inst);
        }
        Ok((r, elapsed, memory, None))
    }

    fn call_on<R>(
        &self,
        inst: &mut Instance,
        site: &CallSite,
        limits: &Limits,
        f: impl FnOnce(&Bound, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> CallResult<(R, Duration)> {
        let shared = &self.plugin.inner;
        arm(&mut inst.store, limits, shared.runtime.config().epoch_tick);
        inst.store.data_mut().current = (site.partition, site.batch);
        let limiter = &mut inst.store.data_mut().limiter;
        limiter.refused = None;
        limiter.cap = limits.memory;
        let started = Instant::now();
        let result = f(&inst.bound, &mut inst.store);
        let elapsed = started.elapsed();
        let memory = inst.store.data().limiter.size;
        shared.metrics.called(elapsed, memory, result.is_err());
        inst.stdout.drain_to_log(&shared.tag, "stdout");
        match result {
            Ok(r) => {
                inst.store.data().stderr.drain_to_log(&shared.tag, "stderr");
                Ok((r, elapsed))
            }
            Err(e) => {
                let failure = classify(e, &mut inst.store, limits, elapsed);
                tracing::warn!(plugin = %shared.tag.name, digest = %shared.tag.digest, partition = site.partition, batch = site.batch, call = site.call, error = %failure, "A plugin call trapped; its instance is dropped and the next call gets a fresh one.");
                Err(PluginError {
                    site: site.clone(),
                    failure,
                })
            }
        }
    }
}

/// Sets the time and fuel budget for the next call.
fn arm(store: &mut Store<HostState>, limits: &Limits, tick: Duration) {
    // One tick more than the budget holds: the ticker runs on its own, so the first tick may
    // come at once; this way a call is never stopped before its budget, and at most one tick
    // after it.
    let ticks = limits
        .time
        .as_nanos()
        .div_ceil(tick.as_nanos().max(1))
        .max(1) as u64
        + 1;
    store.set_epoch_deadline(ticks);
    if let Some(fuel) = limits.fuel {
        let _ = store.set_fuel(fuel);
    }
}

/// Turns a trap into a [`Failure`] that says what happened.
fn classify(
    e: wasmtime::Error,
    store: &mut Store<HostState>,
    limits: &Limits,
    elapsed: Duration,
) -> Failure {
    let stderr = store.data().stderr.take();
    if let Some(cap) = e.downcast_ref::<MemoryCapExceeded>() {
        return Failure::OutOfMemory {
            cap: cap.cap,
            requested: cap.requested,
        };
    }
    if let Some(requested) = store.data().limiter.refused {
        return Failure::OutOfMemory {
            cap: limits.memory,
            requested,
        };
    }
    match e.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => Failure::TimedOut {
            budget: limits.time,
            elapsed,
        },
        Some(wasmtime::Trap::OutOfFuel) => Failure::OutOfFuel(limits.fuel.unwrap_or_default()),
        Some(wasmtime::Trap::UnreachableCodeReached) if stderr.contains("panicked at") => {
            Failure::Panicked(panic_message(&stderr))
        }
        Some(trap) => {
            let mut m = trap.to_string();
            if !stderr.trim().is_empty() {
                m = format!("{m}; the plugin's stderr said: {}", one_line(&stderr));
            }
            Failure::Trapped(m)
        }
        None => Failure::Trapped(format!("{e:#}")),
    }
}

/// `thread '<unnamed>' panicked at src/lib.rs:9:5:\nboom\nnote: …` → `boom (at src/lib.rs:9:5)`.
fn panic_message(stderr: &str) -> String {
    let mut lines = stderr
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("note: "));
    let mut at = None;
    let mut msg = Vec::new();
    for line in lines.by_ref() {
        if let Some(rest) = line.split("panicked at ").nth(1) {
            at = Some(rest.trim_end_matches(':').to_owned());
        } else {
            msg.push(line.trim());
        }
    }
    match at {
        Some(at) => format!("{} (at {at})", msg.join(" ")),
        None => one_line(stderr),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rust_panic_on_stderr_reads_as_one_line_with_its_place() {
        let stderr = "\nthread '<unnamed>' panicked at src/lib.rs:9:5:\nfixture panic on purpose\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n";
        assert_eq!(
            panic_message(stderr),
            "fixture panic on purpose (at src/lib.rs:9:5)"
        );
    }

    #[test]
    fn the_kind_comes_from_the_exported_interface() {
        let exports = vec!["sluice:plugin/deliver@0.1.0".to_owned()];
        assert_eq!(PluginKind::from_exports(&exports), Some(PluginKind::Sink));
        assert_eq!(PluginKind::from_exports(&["run".to_owned()]), None);
    }
}
