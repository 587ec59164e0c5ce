//! The traits a plugin implements: [`Transform`], [`Sink`] and [`Receiver`].

use crate::{Batch, BatchBuilder, Context, Error, Output, Params};

/// A transformation: a map, filter, flat-map or re-keying step, called per partition per batch,
/// once per block of the batch. Export it with [`crate::export_transform!`].
pub trait Transform: Sized + 'static {
    /// Called once on each fresh instance, before any batch. Checks the parameters and returns
    /// the plugin's state, or a message naming the parameter that is wrong and why (the host
    /// then refuses to start the pipeline).
    fn init(params: &Params) -> Result<Self, String>;

    /// Called with one block of a partition's batch (the records of one block interval, at
    /// most 2 MiB; [`Context::part`] counts the calls of a batch); appends the results to
    /// `out`. The same instance may be reused for later blocks, batches and partitions: it
    /// must not assume the calls it sees are consecutive.
    fn transform(&mut self, ctx: &Context, input: &Batch, out: &mut Output) -> Result<(), Error>;

    /// The fast path of a map that keeps every value's length (an upper-case, a byte mask, a
    /// fixed-width re-encoding): called before [`Transform::transform`] with the whole values
    /// buffer of the block, to rewrite in place. Return `Ok(true)` when `values` now holds the
    /// output (record `i` keeps input record `i`'s offsets, key, timestamp and headers);
    /// `transform` is then not called, and nothing is copied in the component: the buffer the
    /// host lowered goes back as it is. Return `Ok(false)` without touching `values` to have
    /// `transform` called as usual (the default). Both paths must give the same output:
    /// `transform` is what native tests and benchmarks call.
    ///
    /// ```
    /// use sluice_sdk::{Batch, Context, Error, Output, Params, Transform};
    ///
    /// struct Upper;
    ///
    /// impl Transform for Upper {
    ///     fn init(_: &Params) -> Result<Self, String> {
    ///         Ok(Upper)
    ///     }
    ///     fn transform(&mut self, _: &Context, input: &Batch, out: &mut Output) -> Result<(), Error> {
    ///         out.map_same_shape(input).make_ascii_uppercase();
    ///         Ok(())
    ///     }
    ///     fn map_in_place(&mut self, _: &Context, values: &mut [u8]) -> Result<bool, Error> {
    ///         values.make_ascii_uppercase();
    ///         Ok(true)
    ///     }
    /// }
    ///
    /// let mut values = b"ab".to_vec();
    /// assert!(Upper.map_in_place(&Context::default(), &mut values)?);
    /// assert_eq!(values, b"AB");
    /// # Ok::<(), Error>(())
    /// ```
    fn map_in_place(&mut self, ctx: &Context, values: &mut [u8]) -> Result<bool, Error> {
        let _ = (ctx, values);
        Ok(false)
    }
}

/// A transformation's own check, exported beside it with
/// `export_transform!(T, self_test)` (world `tested-transformer`).
///
/// Before a version goes live (when the pipeline starts, and when it is offered in a hot swap)
/// the host makes a fresh instance, calls [`Transform::init`], then this, with the same
/// parameters and under the plugin's limits. An `Err` (or a panic) refuses the version with the
/// message: the pipeline does not start, or the live version stays. The instance is dropped
/// afterwards, so the test may change `self` freely; a known input through
/// [`Transform::transform`] is the usual check.
pub trait SelfTest: Transform {
    /// Checks the plugin; returns why it failed, for a person to read.
    fn self_test(&mut self, params: &Params) -> Result<(), String>;
}

/// A keyed-state transformation's converter, exported beside it with
/// `export_transform!(T, migrate)` (world `migrating-transformer`).
///
/// When a batch opens on a new version of the plugin (another digest than the version that
/// last wrote the step's [`crate::state`]), the host calls this on a fresh instance after
/// [`Transform::init`], under the plugin's limits, with the whole state in chunks, before the
/// batch's first [`Transform::transform`]. `state`'s keys are the state's keys and its values
/// the values as version `from_version` (its manifest's `plugin-version`) wrote them; push
/// each entry to keep with its new value ([`Output::push`] with the record keeps its key);
/// an entry not pushed is dropped. An `Err` (or a panic) refuses the version: in a hot swap
/// the old version and its state stay; at start the pipeline does not start.
pub trait Migrate: Transform {
    /// Converts one chunk of the state.
    fn migrate(&mut self, from_version: &str, state: &Batch, out: &mut Output)
    -> Result<(), Error>;
}

/// A sink: the last step of a pipeline, which writes batches somewhere outside. Export it with
/// [`crate::export_sink!`].
///
/// A batch reaches a sink in two phases: [`Sink::write`] per partition, once per block as the
/// batch's records arrive, then [`Sink::commit`] once the batch is closed and every write done. A replayed batch comes again
/// with the same batch id, so a sink that keys its output by batch id gives exactly-once output.
pub trait Sink: Sized + 'static {
    /// Called once on each fresh instance, before any batch, with the plugin's parameters.
    fn init(params: &Params) -> Result<Self, String>;

    /// Writes one block of a partition's records of a batch. Nothing need be visible before
    /// `commit`.
    fn write(&mut self, ctx: &Context, input: &Batch) -> Result<(), Error>;

    /// Makes batch `batch_id` of `stream` visible. Called after every partition was written;
    /// called again for the same id after a replay, where it must do no harm.
    fn commit(&mut self, stream: &str, batch_id: u64) -> Result<(), Error>;
}

/// What [`Receiver::poll`] returns besides the records.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Poll {
    /// The position after the last record, to pass to [`Receiver::open`] on a restart; `None`
    /// when the source cannot be replayed.
    pub position: Option<String>,
    /// Set when the partition has no more records and never will.
    pub end: bool,
}

/// A custom receiver: a source the host polls for records. Export it with
/// [`crate::export_receiver!`].
pub trait Receiver: Sized + 'static {
    /// Called once on each fresh instance, before anything else, with the plugin's parameters.
    fn init(params: &Params) -> Result<Self, String>;

    /// How many partitions this source has. Called once, after `init`.
    fn partitions(&self) -> u32;

    /// Starts reading `partition` at `position`: a value returned earlier in
    /// [`Poll::position`], or `None` for the beginning.
    fn open(&mut self, partition: u32, position: Option<String>) -> Result<(), Error>;

    /// Appends the records available now on `partition` to `out`: at most `max_records` of them
    /// and about `max_bytes` bytes. No records means nothing is available yet; the host polls
    /// again after a short pause.
    fn poll(
        &mut self,
        partition: u32,
        max_records: u32,
        max_bytes: u32,
        out: &mut BatchBuilder,
    ) -> Result<Poll, Error>;
}
