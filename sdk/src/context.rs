//! Where and when a call happens: [`Context`].

/// Where and when a call happens.
///
/// ```
/// use sluice_sdk::Context;
///
/// let ctx = Context::new("clicks", 2, 41, 1_700_000_000_000);
/// assert_eq!(ctx.stream, "clicks");
/// assert_eq!(ctx.batch_id, 41);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Context {
    /// The stream (source) name from the pipeline file.
    pub stream: String,
    /// The source partition this call processes.
    pub partition: u32,
    /// The batch number, counted from 0 and never reused, also across restarts.
    pub batch_id: u64,
    /// The batch time: the end of the batch interval, milliseconds since the Unix epoch.
    pub batch_time_ms: i64,
    /// Which call of this partition's batch this is, from 0: a partition's batch above the
    /// host's call size comes in several calls, in order, split the same way on a replay.
    pub part: u32,
}

impl Context {
    /// A context, for calling a plugin natively (in tests and benchmarks).
    pub fn new(
        stream: impl Into<String>,
        partition: u32,
        batch_id: u64,
        batch_time_ms: i64,
    ) -> Self {
        Self {
            stream: stream.into(),
            partition,
            batch_id,
            batch_time_ms,
            part: 0,
        }
    }

    /// The same context for another part of the partition's batch.
    pub fn with_part(mut self, part: u32) -> Self {
        self.part = part;
        self
    }
}
