//! The plugin runtime: one `wasmtime::Engine` for the process, the linker every plugin is
//! instantiated through, the epoch ticker that enforces time budgets, and the loader that turns
//! `.wasm` files into checked, ready-to-instantiate plugins.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::Linker;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::bindings::v0_1;
use super::cache::{ArtifactCache, CacheOutcome};
use super::error::LoadError;
use super::limits::{Grants, RuntimeConfig};
use super::manifest::Manifest;
use super::state::{HostState, PluginMetrics, PluginTag};
use super::{KindPre, Plugin, PluginInfo, PluginKind};

/// The runtime could not start (the engine refused its configuration).
#[derive(Debug, thiserror::Error)]
#[error("the plugin runtime cannot start: {0}")]
pub struct RuntimeError(pub String);

/// The process's plugin runtime. Cheap to clone.
#[derive(Clone)]
pub struct PluginRuntime {
    pub(crate) inner: Arc<RuntimeInner>,
}

impl std::fmt::Debug for PluginRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginRuntime")
            .field("cache", &self.inner.cache.dir())
            .finish_non_exhaustive()
    }
}

pub(crate) struct RuntimeInner {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<HostState>,
    pub(crate) cache: ArtifactCache,
    pub(crate) config: RuntimeConfig,
    /// Whether instances come from the pooling allocator, whose memories never move (a lent
    /// output needs that).
    pub(crate) pooled: bool,
    ticker_stop: Arc<AtomicBool>,
}

impl Drop for RuntimeInner {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

impl PluginRuntime {
    /// Starts a runtime: builds the engine and linker and starts the epoch ticker.
    pub fn new(config: RuntimeConfig) -> Result<Self, RuntimeError> {
        let (engine, pooled) = build_engine(&config)?;
        let mut linker = Linker::<HostState>::new(&engine);
        // WASI is linked so that components built with Rust's std (which import wasi:cli,
        // wasi:io, wasi:filesystem, …) instantiate; what it grants is decided per instance by
        // its WasiCtx, which by default grants nothing.
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| RuntimeError(e.to_string()))?;
        v0_1::transformer::sluice::plugin::host::add_to_linker::<
            HostState,
            wasmtime::component::HasSelf<HostState>,
        >(&mut linker, |s| s)
        .map_err(|e| RuntimeError(e.to_string()))?;
        v0_1::keyed_state::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(
            &mut linker,
            |s| s,
        )
        .map_err(|e| RuntimeError(e.to_string()))?;

        let cache = ArtifactCache::new(config.resolved_cache_dir(), &engine);
        let ticker_stop = Arc::new(AtomicBool::new(false));
        start_ticker(engine.clone(), config.epoch_tick, ticker_stop.clone());
        Ok(PluginRuntime {
            inner: Arc::new(RuntimeInner {
                engine,
                linker,
                cache,
                config,
                pooled,
                ticker_stop,
            }),
        })
    }

    /// The runtime's settings.
    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    /// The compiled-artifact cache.
    pub fn cache(&self) -> &ArtifactCache {
        &self.inner.cache
    }

    /// The engine (for benchmarks and tools).
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// Loads one plugin file, checking its manifest, digest, limits, grants, world and imports.
    pub fn load_file(&self, wasm: &Path, grants: &Grants) -> Result<Plugin, LoadError> {
        self.load(wasm, Some(grants), None)
    }

    /// [`load_file`](Self::load_file) for a given role: a plugin of another kind is refused
    /// for that (before its grants are looked at, so the message names the real problem).
    pub fn load_as(
        &self,
        wasm: &Path,
        grants: &Grants,
        kind: PluginKind,
    ) -> Result<Plugin, LoadError> {
        self.load(wasm, Some(grants), Some(kind))
    }

    /// Loads the version of plugin `name` with sha256 `digest` that an earlier run used, from
    /// the copy the cache keeps of every version it loaded (with its manifest): a batch
    /// recorded in the checkpoint log is recomputed with the plugin versions it first ran
    /// with, even after the plugin directory has a newer one.
    pub fn load_digest(
        &self,
        name: &str,
        digest: &str,
        grants: &Grants,
        kind: PluginKind,
    ) -> Result<Plugin, LoadError> {
        let wasm = self.kept_source(digest).join(format!("{name}.wasm"));
        self.load(&wasm, Some(grants), Some(kind))
    }

    /// Where the kept copy of plugin `name`'s version `digest` is (it may not exist).
    pub fn kept_wasm(&self, name: &str, digest: &str) -> std::path::PathBuf {
        self.kept_source(digest).join(format!("{name}.wasm"))
    }

    fn kept_source(&self, digest: &str) -> std::path::PathBuf {
        self.inner.cache.dir().join("sources").join(digest)
    }

    /// Keeps a copy of a loaded plugin (and its manifest) by digest, once, for
    /// [`PluginRuntime::load_digest`]. Trouble costs only that later recompute.
    fn keep_source(&self, digest: &str, name: &str, wasm: &Path, bytes: &[u8]) {
        let dir = self.kept_source(digest);
        let target = dir.join(format!("{name}.wasm"));
        if target.exists() || wasm.starts_with(&dir) {
            return;
        }
        let kept = std::fs::create_dir_all(&dir).and_then(|()| {
            let manifest = wasm.with_extension("toml");
            if manifest.exists() {
                std::fs::copy(&manifest, dir.join(format!("{name}.toml")))?;
            }
            let tmp = dir.join(format!(".{name}.wasm.{}", std::process::id()));
            std::fs::write(&tmp, bytes)?;
            std::fs::rename(&tmp, &target)
        });
        if let Err(e) = kept {
            tracing::warn!(plugin = name, dir = %dir.display(), error = %e, "Could not keep a copy of this plugin version; a batch recorded with it could not be recomputed with it.");
        }
    }

    /// Loads a plugin to inspect it (`sluice plugin check`): everything is checked except the
    /// grants, and no capability is given.
    pub fn inspect_file(&self, wasm: &Path) -> Result<Plugin, LoadError> {
        self.load(wasm, None, None)
    }

    fn load(
        &self,
        wasm: &Path,
        grants: Option<&Grants>,
        role: Option<PluginKind>,
    ) -> Result<Plugin, LoadError> {
        let started = Instant::now();
        let stem = wasm
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_owned();
        let manifest_path = wasm.with_extension("toml");
        let manifest = if manifest_path.exists() {
            Manifest::load(&manifest_path, &stem)?
        } else {
            Manifest::implicit(&stem)
        };
        let bytes = std::fs::read(wasm).map_err(|source| LoadError::Read {
            path: wasm.to_owned(),
            source,
        })?;
        let digest = hex::encode(Sha256::digest(&bytes));
        if let Some(expected) = &manifest.sha256
            && !expected.eq_ignore_ascii_case(&digest)
        {
            return Err(LoadError::DigestMismatch {
                path: wasm.to_owned(),
                expected: expected.clone(),
                actual: digest,
            });
        }
        let limits = self.inner.config.limits_for(&manifest)?;
        if !bytes.starts_with(b"\0asm") {
            return Err(LoadError::Invalid {
                path: wasm.to_owned(),
                message: "the file does not start with the WebAssembly magic bytes".to_owned(),
            });
        }
        let (component, outcome, compile_time) = self
            .inner
            .cache
            .get_or_compile(&self.inner.engine, &digest, &bytes)
            .map_err(|e| LoadError::Invalid {
                path: wasm.to_owned(),
                message: invalid_message(&e),
            })?;

        let exports: Vec<String> = component
            .component_type()
            .exports(&self.inner.engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        let imports: Vec<String> = component
            .component_type()
            .imports(&self.inner.engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        let Some(kind) = PluginKind::from_exports(&exports) else {
            return Err(LoadError::WrongWorld {
                path: wasm.to_owned(),
                exports,
            });
        };
        if let Some(role) = role
            && role != kind
        {
            return Err(LoadError::WrongRole {
                name: manifest.name.clone(),
                kind,
                role,
            });
        }
        let granted = match grants {
            Some(grants) => check_grants(&manifest, grants)?,
            None => Vec::new(),
        };
        let pre = self
            .inner
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Link {
                name: manifest.name.clone(),
                message: format!("{e:#}"),
            })?;
        let mismatch = |e: wasmtime::Error| LoadError::WorldMismatch {
            path: wasm.to_owned(),
            export: kind.export_name().to_owned(),
            message: format!("{e:#}"),
        };
        let pre = match kind {
            PluginKind::Transformer => {
                KindPre::Transformer(v0_1::transformer::TransformerPre::new(pre).map_err(mismatch)?)
            }
            PluginKind::Sink => KindPre::Sink(v0_1::sink::SinkPre::new(pre).map_err(mismatch)?),
            PluginKind::Receiver => {
                KindPre::Receiver(v0_1::receiver::ReceiverPre::new(pre).map_err(mismatch)?)
            }
            PluginKind::Aggregator => {
                KindPre::Aggregator(v0_1::aggregator::AggregatorPre::new(pre).map_err(mismatch)?)
            }
        };
        let info = PluginInfo {
            name: manifest.name.clone(),
            kind,
            digest: digest.clone(),
            path: wasm.to_owned(),
            size: bytes.len() as u64,
            wit_package: kind.export_name().to_owned(),
            imports,
            exports,
            limits,
            cached: outcome == CacheOutcome::Hit,
            compile_time,
            manifest,
            lends_output: kind == PluginKind::Transformer
                && self.inner.pooled
                && super::lend::lends_output(&bytes),
        };
        tracing::info!(
            plugin = %info.name,
            kind = %kind,
            digest = %&digest[..12],
            cache = if info.cached { "hit" } else { "miss" },
            compile_ms = crate::telemetry::ms(compile_time),
            load_ms = crate::telemetry::ms(started.elapsed()),
            "Plugin loaded."
        );
        if grants.is_some() {
            self.keep_source(&digest, &info.name, wasm, &bytes);
        }
        let tag = Arc::new(PluginTag {
            name: info.name.clone(),
            digest: digest[..12].to_owned(),
        });
        Ok(Plugin::new(
            self.clone(),
            info,
            pre,
            granted,
            tag,
            Arc::new(PluginMetrics::default()),
            component,
        ))
    }

    /// Loads every `*.wasm` in `dir`. A plugin that is refused is reported (logged, and listed
    /// in the result) and the others still load.
    pub fn load_dir(
        &self,
        dir: &Path,
        grants: &BTreeMap<String, Grants>,
    ) -> std::io::Result<Registry> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
            .collect();
        files.sort();
        let mut registry = Registry::default();
        let none = Grants::default();
        for file in files {
            let stem = file
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_owned();
            match self.load_file(&file, grants.get(&stem).unwrap_or(&none)) {
                Ok(plugin) => {
                    registry.plugins.insert(stem, plugin);
                }
                Err(e) => {
                    tracing::error!(error = %e, "Plugin refused; the others still load.");
                    registry.refused.push(e);
                }
            }
        }
        Ok(registry)
    }
}

/// The plugins of a directory: those that loaded and those that were refused.
#[derive(Default, Debug)]
pub struct Registry {
    /// Loaded plugins by name.
    pub plugins: BTreeMap<String, Plugin>,
    /// Why each refused plugin was refused.
    pub refused: Vec<LoadError>,
}

impl Registry {
    /// The plugin called `name`.
    pub fn get(&self, name: &str) -> Option<&Plugin> {
        self.plugins.get(name)
    }

    /// The refusal of the plugin whose file stem is `name`, if it was refused.
    pub fn refusal(&self, name: &str) -> Option<&LoadError> {
        self.refused.iter().find(|e| {
            let s = e.to_string();
            s.contains(&format!("{name}.wasm"))
                || s.contains(&format!("plugin {name}:"))
                || s.contains(&format!("{name}.toml"))
        })
    }
}

fn check_grants(manifest: &Manifest, grants: &Grants) -> Result<Vec<(String, PathBuf)>, LoadError> {
    let mut out = Vec::new();
    for dir in &manifest.capabilities.dirs {
        let Some(host) = grants.dirs.get(dir) else {
            return Err(LoadError::NotGranted {
                name: manifest.name.clone(),
                dir: dir.clone(),
            });
        };
        if !host.is_dir() {
            return Err(LoadError::Grant {
                name: manifest.name.clone(),
                guest: dir.clone(),
                host: host.clone(),
                message: "not a directory".to_owned(),
            });
        }
        out.push((dir.clone(), host.clone()));
    }
    for extra in grants.dirs.keys() {
        if !manifest.capabilities.dirs.contains(extra) {
            tracing::warn!(plugin = %manifest.name, dir = %extra, "A directory is granted that the plugin's manifest does not ask for; it is not given.");
        }
    }
    Ok(out)
}

fn invalid_message(e: &wasmtime::Error) -> String {
    let msg = format!("{e:#}");
    if msg.contains("unexpected end") || msg.contains("end of file") {
        format!("the file is truncated ({msg})")
    } else if msg.contains("parse a wasm module with a component parser")
        || msg.contains("expected a component")
    {
        format!(
            "it is a core WebAssembly module, not a component; build it for wasm32-wasip2 ({msg})"
        )
    } else {
        msg
    }
}

/// How much of a linear memory stays resident when its pool slot is given back: a typical
/// plugin's heap after a call on a block.
const KEEP_RESIDENT: usize = 2 << 20;

/// The engine, and whether it uses the pooling allocator.
fn build_engine(config: &RuntimeConfig) -> Result<(Engine, bool), RuntimeError> {
    let mut cfg = Config::new();
    cfg.wasm_component_model(true);
    cfg.epoch_interruption(true);
    cfg.consume_fuel(config.fuel);
    cfg.cranelift_opt_level(wasmtime::OptLevel::Speed);
    // SLUICE_WASM_PERFMAP=1: name the JIT-compiled plugin functions in /tmp/perf-<pid>.map so
    // that `perf report` shows them instead of bare addresses (bench/profile sets it).
    if std::env::var_os("SLUICE_WASM_PERFMAP").is_some_and(|v| v == "1") {
        cfg.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    let mut pool = PoolingAllocationConfig::default();
    let instances = config.instances.max(4);
    pool.total_component_instances(instances);
    pool.total_core_instances(instances * 8);
    pool.total_memories(instances * 2);
    pool.total_tables(instances * 8);
    pool.max_memories_per_component(4);
    pool.max_tables_per_component(16);
    pool.max_memory_size(config.max_memory as usize);
    // A slot given back (an instance dropped after a trap) is zeroed with memset up to this
    // size instead of madvise, so the fresh instance that takes it next (poison isolation
    // makes one after each trapping sub-call) does not page-fault its heap in again.
    pool.linear_memory_keep_resident(KEEP_RESIDENT);
    cfg.allocation_strategy(InstanceAllocationStrategy::Pooling(pool.clone()));
    match Engine::new(&cfg) {
        Ok(engine) => Ok((engine, true)),
        Err(e) => {
            // Some machines cap virtual memory (ulimit -v); the pooling allocator reserves a lot
            // of it up front. Fall back to allocating on demand, and say so.
            tracing::warn!(error = %e, "The pooling allocator is not available here; instances are allocated on demand.");
            cfg.allocation_strategy(InstanceAllocationStrategy::OnDemand);
            Engine::new(&cfg)
                .map(|engine| (engine, false))
                .map_err(|e| RuntimeError(format!("{e:#}")))
        }
    }
}

fn start_ticker(engine: Engine, tick: Duration, stop: Arc<AtomicBool>) {
    let spawned = std::thread::Builder::new()
        .name("sluice-epoch".to_owned())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(tick);
                engine.increment_epoch();
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "The epoch ticker could not start; time budgets will not be enforced.");
    }
}
