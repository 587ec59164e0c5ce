//! Write sluice transformations, sinks and receivers as WebAssembly components.
//!
//! A plugin is a Rust crate built for `wasm32-wasip2` as a `cdylib`. It implements one of
//! three traits and exports it with the matching macro; the macro generates the component's
//! exports, keeps the instance's state, and converts between the WIT types and this crate's.
//!
//! | module | what it holds |
//! |---|---|
//! | [`Transform`], [`Sink`], [`Receiver`] | the traits a plugin implements, one per WIT world |
//! | [`Aggregator`] | a user-defined aggregate for the window steps (world `aggregator`) |
//! | [`export_transform!`], [`export_sink!`], [`export_receiver!`], [`export_aggregator!`] | the macros that export them |
//! | [`Batch`], [`Record`] | the input: columnar records, read without copying |
//! | [`Output`] | what a transformation appends its records, rejections and keys to |
//! | [`BatchBuilder`] | what a receiver appends its records to |
//! | [`Params`], [`Context`], [`Error`] | parameters, where a call happens, why it failed |
//! | [`log`], [`metrics`] | the host's log and metrics |
//! | [`state`], [`Migrate`] | keyed state kept by the host across batches, and its converter |
//!
//! Everything but the exports also works natively, so a plugin's logic is tested (and
//! benchmarked) as plain Rust:
//!
//! ```
//! use sluice_sdk::{Batch, Context, Error, Output, Params, Transform, export_transform};
//!
//! /// Keeps the records whose value is longer than `min` bytes (default 1).
//! struct LongerThan {
//!     min: usize,
//! }
//!
//! impl Transform for LongerThan {
//!     fn init(params: &Params) -> Result<Self, String> {
//!         params.allow_only(&["min"])?;
//!         Ok(Self { min: params.parse_or("min", 1)? })
//!     }
//!
//!     fn transform(&mut self, _ctx: &Context, input: &Batch, out: &mut Output) -> Result<(), Error> {
//!         for record in input.records() {
//!             if record.value().len() > self.min {
//!                 out.push(record, record.value());
//!             }
//!         }
//!         Ok(())
//!     }
//! }
//!
//! export_transform!(LongerThan);
//!
//! let mut plugin = LongerThan::init(&Params::from_iter([("min", "3")]))?;
//! let input = Batch::from_values(["a", "abcd", "xyz", "hello"]);
//! let mut out = Output::new();
//! plugin.transform(&Context::default(), &input, &mut out)?;
//! assert_eq!(out.values().collect::<Vec<_>>(), [b"abcd".as_slice(), b"hello"]);
//! assert_eq!(out.origin(1), 3);
//!
//! let err = LongerThan::init(&Params::from_iter([("min", "x")])).err().unwrap();
//! assert!(err.contains("`min`"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Build the component with
//! `cargo build --target wasm32-wasip2 --profile plugin -p <crate>`.
#![deny(missing_docs)]

mod aggregator;
mod batch;
mod builder;
mod context;
mod error;
mod export;
#[doc(hidden)]
pub mod lend;
pub mod log;
pub mod metrics;
mod output;
mod params;
mod plugin;
pub mod state;

#[doc(hidden)]
#[path = "bindings.rs"]
pub mod __private;

pub use aggregator::Aggregator;
pub use batch::{
    Batch, BatchParts, Column, HeaderColumns, Headers, InvalidBatch, KeyColumn, Record, Records,
};
pub use builder::{BatchBuilder, RecordMut};
pub use context::Context;
pub use error::{BadRecord, Error};
pub use output::{Origin, Output, OutputParts};
pub use params::Params;
pub use plugin::{Migrate, Poll, Receiver, SelfTest, Sink, Transform};
