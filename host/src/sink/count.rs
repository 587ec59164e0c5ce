//! `kind = "count"`: counts records, writes nothing (for benchmarks).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{BuildContext, BuildError, Sink, SinkError};
use crate::batch::RecordBatch;
use crate::plugin::CallContext;

/// `kind = "count"`, checked: it has no keys.
#[derive(Debug, Clone)]
pub struct CountConfig {}

impl CountConfig {
    /// A fresh counter.
    pub fn build(&self, _ctx: &mut BuildContext<'_>) -> Result<Arc<dyn Sink>, BuildError> {
        Ok(Arc::new(CountSink::default()))
    }
}

/// `kind = "count"`: counts records and bytes, writes nothing. For benchmarks.
#[derive(Default)]
pub struct CountSink {
    /// Records written.
    pub records: AtomicU64,
    /// Value bytes written.
    pub bytes: AtomicU64,
}

impl Sink for CountSink {
    fn name(&self) -> String {
        "count".to_owned()
    }

    fn write(&self, _ctx: &CallContext, batch: &RecordBatch) -> Result<(), SinkError> {
        self.records
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        self.bytes
            .fetch_add(batch.values.data.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn commit(&self, _stream: &str, _batch_id: u64) -> Result<(), SinkError> {
        Ok(())
    }

    fn committed(&self, _stream: &str, _batch_id: u64) -> Result<Option<bool>, SinkError> {
        Ok(Some(true))
    }

    fn counter(self: Arc<Self>) -> Option<Arc<CountSink>> {
        Some(self)
    }
}
