//! # sluice
//!
//! A micro-batch stream processing host whose user code (transformations, sinks, custom
//! receivers) runs as sandboxed WebAssembly components.
//!
//! The modules, by part of the architecture (see `DESIGN.md` in the repository):
//!
//! - [`batch`]: the columnar record batch that flows through everything;
//! - [`config`]: the pipeline file and the plan built from it;
//! - [`receiver`]: one async receiver per source partition (generator, files, tcp, plugin);
//! - [`block`]: the block generator and the block manager (memory budget, backpressure);
//! - [`scheduler`]: the batch clock, the tracker and the job runner;
//! - [`driver`]: the lifecycle of a run; so far `run --supervise`, which restarts a crashed
//!   driver;
//! - [`checkpoint`]: what reliable mode has committed for good, where a restart resumes;
//! - [`wal`]: the write-ahead log on `object_store` (framed, checksummed, versioned segments,
//!   group commit, recovery that reports damage);
//! - [`sink`]: stdout, files, count and plugin sinks, and the dead-letter sink;
//! - [`plugin`]: the plugin runtime: engine, compiled-component cache, limits, instances, the
//!   typed WIT bindings;
//! - [`bench`]: the benchmarks behind `sluice bench`;
//! - [`cli`]: argument parsing and dispatch; [`error`] and [`telemetry`].
//!
//! Calling a transformation on a batch:
//!
//! ```no_run
//! use std::collections::BTreeMap;
//! use sluice::batch::RecordBatch;
//! use sluice::plugin::{CallContext, PluginRuntime, limits::{Grants, RuntimeConfig}};
//!
//! let runtime = PluginRuntime::new(RuntimeConfig::default())?;
//! let plugin = runtime.load_file("plugins/uppercase.wasm".as_ref(), &Grants::default())?;
//! let stage = plugin.transformer(&BTreeMap::new())?;
//! let ctx = CallContext { stream: "s".into(), partition: 0, batch_id: 0, batch_time_ms: 0, part: 0 };
//! let out = stage.transform(&ctx, &RecordBatch::from_values([&b"hello"[..]]))?;
//! assert_eq!(out.batch.value(0), b"HELLO");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod batch;
pub mod bench;
pub mod block;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod driver;
pub mod error;
pub mod plugin;
pub mod receiver;
pub mod scheduler;
pub mod sink;
pub mod telemetry;
pub mod wal;
