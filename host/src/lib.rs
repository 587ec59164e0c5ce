//! # sluice
//!
//! A micro-batch stream processing host whose user code (transformations, sinks, custom
//! receivers) runs as sandboxed WebAssembly components.
//!
//! The modules, by part of the architecture (see `DESIGN.md` in the repository):
//!
//! - [`clock`]: time, injectable (a manual clock for tests);
//! - [`store`]: store locations (paths and `file://`, `az://`, `s3://` URLs) on `object_store`;
//! - [`secret`]: strings that never print (keys, passwords);
//! - [`batch`]: the columnar record batch that flows through everything, and the source
//!   positions its records came from;
//! - [`config`]: the user's pipeline file (versioned, strict keys, line numbers);
//! - [`receiver`]: the source kinds, each with its config struct that builds it, and one async
//!   receiver per source partition (generator, files, tcp, amqp, eventhubs, plugin);
//! - [`block`]: the block generator and the block manager (memory budget, backpressure);
//! - [`scheduler`]: the batch clock, the tracker and the job (how a batch runs);
//! - [`driver`]: the lifecycle: recover, the batch loop, commit, stop, supervise;
//! - [`checkpoint`]: the checkpoint log, one entry per batch: where a restart resumes;
//! - [`dedup`]: duplicate detection by message id (a bounded window of ids, checkpointed);
//! - [`wal`]: the write-ahead log on `object_store` (framed, checksummed, versioned segments,
//!   group commit, recovery that reports damage);
//! - [`replay`]: `sluice replay`: recorded batches recomputed from their logged ranges, with
//!   their recorded plugin versions or a given one, into a separate output;
//! - [`dead_letters`]: `sluice dead-letters list | show | replay`: the dead letters read
//!   back, and chosen ones sent through the current pipeline again;
//! - [`sink`]: the sink kinds (stdout, files, count, plugin), each with its config struct that
//!   builds it, and the dead-letter sink;
//! - [`build`]: what a source or sink kind builds itself with (context, error);
//! - [`lookup`]: the lookup join (`builtin = "lookup"`): a table file in memory, reloaded
//!   when it changes, enriching each record with the row of its key;
//! - [`plan`]: the plan the engine runs, assembled by asking each kind to build itself;
//! - [`swap`]: hot swap of transformation plugins under a running driver (the live steps
//!   each new batch pins, the gate every new version passes, the plugin-directory watcher);
//! - [`admin`]: the admin endpoint of a running pipeline (token, loopback by default) and its
//!   client, `sluice plugin swap`;
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

pub mod admin;
pub mod batch;
pub mod bench;
pub mod block;
pub mod build;
pub mod checkpoint;
pub mod cli;
pub mod clock;
pub mod config;
pub mod dead_letters;
pub mod dedup;
pub mod driver;
pub mod error;
pub mod ha;
pub mod lookup;
pub mod monitor;
pub mod ops;
pub mod plan;
pub mod plugin;
pub mod receiver;
pub mod replay;
pub mod scheduler;
pub mod secret;
pub mod sink;
pub mod state;
pub mod store;
pub mod swap;
pub mod telemetry;
pub mod wal;
