//! What a plugin call may use, and what the operator allows.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use serde::Deserialize;

use super::error::LoadError;
use super::manifest::{Manifest, de_bytes};

/// The limits one call of one plugin runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Linear memory cap per instance, in bytes.
    pub memory: u64,
    /// Wall time per call.
    pub time: Duration,
    /// Instructions per call (fuel units), when fuel is on.
    pub fuel: Option<u64>,
}

/// The operator's settings for the plugin runtime (`[runtime]` in the pipeline file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct RuntimeConfig {
    /// `cache-dir`: where compiled components are kept. Default: `$SLUICE_CACHE_DIR`, else
    /// `$XDG_CACHE_HOME/sluice/components`, else `~/.cache/sluice/components`.
    pub cache_dir: Option<PathBuf>,
    /// `memory`: a plugin's memory cap when its manifest names none. Default `"128MiB"`.
    #[serde(deserialize_with = "de_bytes")]
    pub memory: u64,
    /// `max-memory`: the highest memory cap a manifest may ask. Default `"1GiB"`.
    #[serde(deserialize_with = "de_bytes")]
    pub max_memory: u64,
    /// `time`: a call's time budget when the manifest names none. Default `"10s"`.
    #[serde(with = "humantime_serde")]
    pub time: Duration,
    /// `max-time`: the highest time budget a manifest may ask. Default `"60s"`.
    #[serde(with = "humantime_serde")]
    pub max_time: Duration,
    /// `fuel`: count instructions, so manifests can set `limits.fuel`. Costs some speed.
    /// Default `false`.
    pub fuel: bool,
    /// `max-fuel`: the highest fuel a manifest may ask. Default 10^12.
    pub max_fuel: u64,
    /// `instances`: how many plugin instances may be alive at once, over all plugins
    /// (the pooling allocator's slots). Default 128.
    pub instances: u32,
    /// `epoch-tick`: how often time budgets are checked. Default `"10ms"`.
    #[serde(with = "humantime_serde")]
    pub epoch_tick: Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            cache_dir: None,
            memory: 128 << 20,
            max_memory: 1 << 30,
            time: Duration::from_secs(10),
            max_time: Duration::from_secs(60),
            fuel: false,
            max_fuel: 1_000_000_000_000,
            instances: 128,
            epoch_tick: Duration::from_millis(10),
        }
    }
}

impl RuntimeConfig {
    /// The cache directory this configuration resolves to.
    pub fn resolved_cache_dir(&self) -> PathBuf {
        if let Some(dir) = &self.cache_dir {
            return dir.clone();
        }
        if let Some(dir) = std::env::var_os("SLUICE_CACHE_DIR") {
            return PathBuf::from(dir);
        }
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(std::env::temp_dir);
        base.join("sluice").join("components")
    }

    /// The limits of a plugin with this manifest, or why its manifest asks too much.
    pub fn limits_for(&self, manifest: &Manifest) -> Result<Limits, LoadError> {
        let name = &manifest.name;
        let memory = manifest.limits.memory.unwrap_or(self.memory);
        if memory > self.max_memory {
            return Err(LoadError::Limit {
                name: name.clone(),
                key: "memory",
                asked: format!("{} MiB", memory >> 20),
                max: format!("{} MiB", self.max_memory >> 20),
            });
        }
        let time = manifest.limits.time.unwrap_or(self.time);
        if time > self.max_time {
            return Err(LoadError::Limit {
                name: name.clone(),
                key: "time",
                asked: humantime::format_duration(time).to_string(),
                max: humantime::format_duration(self.max_time).to_string(),
            });
        }
        let fuel = match manifest.limits.fuel {
            Some(f) if f > self.max_fuel => {
                return Err(LoadError::Limit {
                    name: name.clone(),
                    key: "fuel",
                    asked: f.to_string(),
                    max: self.max_fuel.to_string(),
                });
            }
            Some(f) if self.fuel => Some(f),
            Some(_) => {
                tracing::warn!(
                    plugin = %name,
                    "The manifest sets limits.fuel but fuel is off in the runtime settings; the time budget applies alone."
                );
                None
            }
            None if self.fuel => Some(self.max_fuel),
            None => None,
        };
        Ok(Limits { memory, time, fuel })
    }
}

/// What the operator grants one plugin (`[plugins.NAME.grants]`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Grants {
    /// `dirs`: guest path to host path, e.g. `{ "/out" = "./out" }`.
    #[serde(default)]
    pub dirs: BTreeMap<String, PathBuf>,
}

/// What the healthy calls of one stage cost, learnt from the calls that succeed: the time
/// per record (the ratio of two moving averages, so that big calls weigh as much as their
/// records) and the most linear memory an instance held after one. Poison isolation
/// (`scheduler::isolate`) gives its sub-calls budgets derived from it, so that a sub-call
/// holding a looping or hoarding record fails in a few healthy calls' time instead of the
/// whole budget.
#[derive(Debug, Default)]
pub struct CallCost {
    /// Moving averages of (nanoseconds, records) per call; `None` before the first success.
    time: Mutex<Option<(f64, f64)>>,
    /// The most memory, bytes, an instance held after a call that succeeded; 0 before one.
    memory: std::sync::atomic::AtomicU64,
}

impl CallCost {
    /// The weight of the newest call in the moving averages.
    const WEIGHT: f64 = 1.0 / 8.0;

    /// Called after each call that succeeded: it took `elapsed` over `records` records and
    /// its instance held `memory` bytes after it.
    pub fn record(&self, records: usize, elapsed: Duration, memory: u64) {
        let (ns, n) = (elapsed.as_nanos() as f64, records.max(1) as f64);
        if let Ok(mut time) = self.time.lock() {
            *time = Some(match *time {
                None => (ns, n),
                Some((t, r)) => (t + (ns - t) * Self::WEIGHT, r + (n - r) * Self::WEIGHT),
            });
        }
        self.memory
            .fetch_max(memory, std::sync::atomic::Ordering::Relaxed);
    }

    /// How long a healthy call on `records` records is expected to take; `None` before any
    /// call succeeded.
    pub fn expected_time(&self, records: usize) -> Option<Duration> {
        let (t, r) = (*self.time.lock().ok()?)?;
        Some(Duration::from_nanos((t / r * records.max(1) as f64) as u64))
    }

    /// The most memory an instance held after a healthy call; `None` before any succeeded.
    pub fn healthy_memory(&self) -> Option<u64> {
        let m = self.memory.load(std::sync::atomic::Ordering::Relaxed);
        (m > 0).then_some(m)
    }
}

/// Enforces a memory cap on one store, and remembers whether the cap was hit.
#[derive(Debug)]
pub struct MemoryLimiter {
    /// The cap in bytes (set for each call: the plugin's limit, or a shorter one).
    pub cap: u64,
    /// The largest request refused, if any, since the last reset.
    pub refused: Option<u64>,
    /// The largest memory, bytes, the store's instance was let grow to.
    pub size: u64,
}

/// The error a store raises when its plugin asks for memory past its cap.
#[derive(Debug, thiserror::Error)]
#[error("memory cap of {cap} bytes exceeded: asked for {requested} bytes")]
pub struct MemoryCapExceeded {
    /// The cap.
    pub cap: u64,
    /// What was asked.
    pub requested: u64,
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.cap {
            self.refused = Some(desired as u64);
            // Trap at once rather than return -1 from memory.grow: the guest's allocator would
            // abort anyway, and a trap keeps the cause clear.
            return Err(MemoryCapExceeded {
                cap: self.cap,
                requested: desired as u64,
            }
            .into());
        }
        self.size = self.size.max(desired as u64);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_over_the_operator_maximum_is_refused_naming_the_limit() {
        let cfg = RuntimeConfig::default();
        let mut m = Manifest::implicit("hog");
        m.limits.memory = Some(2 << 30);
        let msg = cfg.limits_for(&m).unwrap_err().to_string();
        assert!(
            msg.contains("limits.memory") && msg.contains("hog"),
            "{msg}"
        );
    }

    #[test]
    fn the_expected_time_scales_with_records_and_big_calls_weigh_as_their_records() {
        let cost = CallCost::default();
        assert_eq!(cost.expected_time(10), None);
        cost.record(10_000, Duration::from_millis(10), 4 << 20);
        assert_eq!(cost.expected_time(5_000), Some(Duration::from_millis(5)));
        // A one-record call of 100 us barely moves it: 1 us a record would be 100x.
        cost.record(1, Duration::from_micros(100), 1 << 20);
        let t = cost.expected_time(10_000).unwrap();
        assert!(t < Duration::from_millis(12), "{t:?}");
        assert_eq!(cost.healthy_memory(), Some(4 << 20));
    }

    #[test]
    fn manifest_limits_override_the_defaults() {
        let cfg = RuntimeConfig::default();
        let mut m = Manifest::implicit("p");
        m.limits.time = Some(Duration::from_millis(100));
        let l = cfg.limits_for(&m).unwrap();
        assert_eq!(l.time, Duration::from_millis(100));
        assert_eq!(l.memory, cfg.memory);
        assert_eq!(l.fuel, None);
    }
}
