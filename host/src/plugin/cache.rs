//! Compiled components, cached on disk.
//!
//! Compiling a component takes tens of milliseconds for a small Rust plugin and seconds for a
//! Python or JavaScript one; loading a compiled artifact takes a fraction of a millisecond. An
//! artifact's name carries everything that decides whether it is still valid: the component's
//! sha256, the wasmtime version and a hash of the engine settings that change generated code
//! (`Engine::precompile_compatibility_hash`). A changed setting or version therefore misses the
//! cache instead of loading a stale artifact. Each file ends in a sha256 of its body, so a torn
//! or corrupted artifact is detected, logged and rebuilt, never loaded.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

const TRAILER: usize = 32;

/// Where compiled components live, for one engine configuration.
#[derive(Debug, Clone)]
pub struct ArtifactCache {
    dir: PathBuf,
    engine_key: String,
}

/// How a component was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Loaded from a compiled artifact on disk.
    Hit,
    /// Compiled now (and stored for the next start).
    Miss,
}

impl ArtifactCache {
    /// A cache in `dir` for artifacts compiled by `engine`.
    pub fn new(dir: PathBuf, engine: &Engine) -> Self {
        let mut h = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        // The compatibility hash covers the exact wasmtime version as well as the settings.
        let engine_key = format!("engine-{:016x}", h.finish());
        ArtifactCache { dir, engine_key }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file an artifact of the component with this sha256 is kept in.
    pub fn path_for(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}-{}.cwasm", self.engine_key))
    }

    /// Loads the component with sha256 `digest` from the cache, or compiles `wasm` and stores it.
    /// Cache trouble (unwritable directory, corrupt file) is logged and costs a compile, never
    /// a failure.
    pub fn get_or_compile(
        &self,
        engine: &Engine,
        digest: &str,
        wasm: &[u8],
    ) -> wasmtime::Result<(Component, CacheOutcome, Duration)> {
        let start = Instant::now();
        let path = self.path_for(digest);
        if let Some(component) = self.load(engine, &path) {
            return Ok((component, CacheOutcome::Hit, start.elapsed()));
        }
        let component = Component::new(engine, wasm)?;
        if let Err(e) = self.store(&path, &component) {
            tracing::warn!(path = %path.display(), error = %e, "Could not store a compiled component; the next start compiles it again.");
        }
        Ok((component, CacheOutcome::Miss, start.elapsed()))
    }

    fn load(&self, engine: &Engine, path: &Path) -> Option<Component> {
        let bytes = std::fs::read(path).ok()?;
        if bytes.len() < TRAILER {
            tracing::warn!(path = %path.display(), "A cached component is truncated; compiling again.");
            return None;
        }
        let (body, trailer) = bytes.split_at(bytes.len() - TRAILER);
        if Sha256::digest(body).as_slice() != trailer {
            tracing::warn!(path = %path.display(), "A cached component fails its checksum; compiling again.");
            return None;
        }
        // SAFETY: `deserialize` trusts its input to be an artifact wasmtime produced. This file
        // was written by `store` below from `Component::serialize`, under a name bound to this
        // engine's configuration and wasmtime version, and its trailing sha256 was just verified,
        // so it is exactly the bytes we serialized. wasmtime still checks the header itself and
        // refuses an artifact made for another engine configuration.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize(engine, body) };
        match component {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "A cached component does not load; compiling again.");
                None
            }
        }
    }

    fn store(&self, path: &Path, component: &Component) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let body = component
            .serialize()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&body)?;
            f.write_all(&Sha256::digest(&body))?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)
    }
}
