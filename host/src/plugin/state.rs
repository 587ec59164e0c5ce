//! What a plugin's store holds: its WASI context (granting nothing by default), its memory
//! limiter, the `host` imports (log, metrics), and the pipes that carry its stdout and stderr
//! into the host's log.

use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::v0_1::{host, keyed_state, types};
use super::limits::MemoryLimiter;
use crate::state::keyed::{KeyedBatch, Writes};

/// The name and digest a plugin's log lines and metrics are tagged with.
#[derive(Debug)]
pub struct PluginTag {
    /// The plugin's name.
    pub name: String,
    /// Its sha256, first 12 hex digits.
    pub digest: String,
}

/// Counters and gauges a plugin reports through the `host` import, and what its calls cost
/// (kept by the host, one atomic add per call, never per record).
#[derive(Debug, Default)]
pub struct PluginMetrics {
    counters: Mutex<BTreeMap<String, u64>>,
    gauges: Mutex<BTreeMap<String, f64>>,
    /// Calls made (successful or not).
    pub calls: AtomicU64,
    /// Calls that trapped (panic, time or memory cap, contract breach).
    pub traps: AtomicU64,
    /// Records handed to calls that succeeded.
    pub records: AtomicU64,
    /// Time spent in calls, nanoseconds.
    pub call_nanos: AtomicU64,
    /// The most memory an instance held after a call, bytes.
    pub memory_peak: AtomicU64,
    /// Calls by duration: how many took at most each bound of [`CALL_BUCKETS`] and more than
    /// the one before (not cumulative), then those above the last.
    pub call_buckets: [AtomicU64; CALL_BUCKETS.len() + 1],
}

/// The bounds of a plugin call's duration histogram, seconds.
pub const CALL_BUCKETS: [f64; 12] = [
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0,
];

/// The most distinct counter or gauge names one plugin may report; later new names are
/// dropped (a plugin naming a counter per record must not eat the host's memory).
pub const MAX_METRIC_NAMES: usize = 256;

impl PluginMetrics {
    /// Called after every call: it took `elapsed`, and its instance held `memory` bytes.
    pub fn called(&self, elapsed: std::time::Duration, memory: u64, trapped: bool) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.call_nanos
            .fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
        self.memory_peak.fetch_max(memory, Ordering::Relaxed);
        let seconds = elapsed.as_secs_f64();
        let bucket = CALL_BUCKETS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(CALL_BUCKETS.len());
        self.call_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        if trapped {
            self.traps.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> BTreeMap<String, u64> {
        self.counters.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// A snapshot of the gauges.
    pub fn gauges(&self) -> BTreeMap<String, f64> {
        self.gauges.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

/// Per-store state.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    /// The memory cap.
    pub limiter: MemoryLimiter,
    /// Which plugin this is.
    pub tag: Arc<PluginTag>,
    /// The partition and batch of the call under way, for log lines.
    pub current: (Option<u32>, Option<u64>),
    /// The plugin's metrics, shared by its instances.
    pub metrics: Arc<PluginMetrics>,
    /// What the guest wrote to stderr during the call under way.
    pub stderr: LogPipe,
    /// The keyed state of the call under way, set by the caller for a `transform` call of a
    /// step with keyed state; `None` elsewhere (reads see nothing, writes are dropped).
    pub keyed: Option<KeyedCall>,
}

/// A call's view of its step's keyed state: the open batch's, and the call's own writes,
/// which join the batch's only when the call succeeds.
#[derive(Debug)]
pub struct KeyedCall {
    /// The open batch's state.
    pub batch: std::sync::Arc<KeyedBatch>,
    /// What this call wrote so far.
    pub writes: Writes,
}

impl KeyedCall {
    /// A call on `batch`'s state that has written nothing yet.
    pub fn new(batch: std::sync::Arc<KeyedBatch>) -> KeyedCall {
        KeyedCall {
            batch,
            writes: Writes::default(),
        }
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        match self.writes.get(key) {
            Some(Some(e)) => Some(e.value.to_vec()),
            Some(None) => None,
            None => self.batch.get(key).map(Vec::from),
        }
    }

    fn put(&mut self, key: &[u8], value: &[u8], ttl_ms: Option<u64>) {
        let entry = self.batch.entry(value, ttl_ms);
        self.writes.insert(key.into(), Some(entry));
    }
}

/// The values of a WIT `bytes-column`; `None` when its offsets are out of range.
fn column_values(c: &types::BytesColumnResult) -> Option<Vec<&[u8]>> {
    let mut start = 0usize;
    let mut out = Vec::with_capacity(c.ends.len());
    for &end in &c.ends {
        let end = end as usize;
        out.push(c.data.get(start..end)?);
        start = end;
    }
    Some(out)
}

impl HostState {
    /// The values of `c`, or a log line naming the bad column (a broken contract: the call
    /// reads nothing and writes nothing for it).
    fn column<'a>(&self, c: &'a types::BytesColumnResult, call: &str) -> Vec<&'a [u8]> {
        column_values(c).unwrap_or_else(|| {
            tracing::warn!(plugin = %self.tag.name, digest = %self.tag.digest, call, "A keyed-state call sent a column whose offsets are out of range; it is ignored.");
            Vec::new()
        })
    }
}

impl keyed_state::Host for HostState {
    fn get(&mut self, key: Vec<u8>) -> Option<Vec<u8>> {
        self.keyed.as_ref()?.get(&key)
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>, ttl_ms: Option<u64>) {
        if let Some(k) = &mut self.keyed {
            k.put(&key, &value, ttl_ms);
        }
    }

    fn delete(&mut self, key: Vec<u8>) {
        if let Some(k) = &mut self.keyed {
            k.writes.insert(key.into(), None);
        }
    }

    fn get_many(&mut self, keys: types::BytesColumnResult) -> types::KeysResult {
        let wanted = self.column(&keys, "get-many");
        let mut data = Vec::new();
        let mut ends = Vec::with_capacity(wanted.len());
        let mut present = vec![0u8; wanted.len().div_ceil(8)];
        for (i, key) in wanted.iter().enumerate() {
            if let Some(v) = self.keyed.as_ref().and_then(|k| k.get(key)) {
                data.extend_from_slice(&v);
                present[i / 8] |= 1 << (i % 8);
            }
            ends.push(data.len() as u32);
        }
        types::KeysResult {
            column: types::BytesColumnResult { data, ends },
            present,
        }
    }

    fn put_many(
        &mut self,
        keys: types::BytesColumnResult,
        values: types::BytesColumnResult,
        ttl_ms: Option<u64>,
    ) {
        let ks = self.column(&keys, "put-many");
        let vs = self.column(&values, "put-many");
        if ks.len() != vs.len() {
            tracing::warn!(plugin = %self.tag.name, keys = ks.len(), values = vs.len(), "A put-many call sent a different number of keys and values; it is ignored.");
            return;
        }
        if let Some(k) = &mut self.keyed {
            for (key, value) in ks.iter().zip(vs) {
                k.put(key, value, ttl_ms);
            }
        }
    }

    fn delete_many(&mut self, keys: types::BytesColumnResult) {
        let ks = self.column(&keys, "delete-many");
        if let Some(k) = &mut self.keyed {
            for key in ks {
                k.writes.insert(key.into(), None);
            }
        }
    }
}

impl HostState {
    /// State for a new instance.
    pub fn new(
        wasi: WasiCtx,
        limiter: MemoryLimiter,
        tag: Arc<PluginTag>,
        metrics: Arc<PluginMetrics>,
        stderr: LogPipe,
    ) -> Self {
        HostState {
            wasi,
            table: ResourceTable::new(),
            limiter,
            tag,
            current: (None, None),
            metrics,
            stderr,
            keyed: None,
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl host::Host for HostState {
    fn log(&mut self, level: host::Level, message: String) {
        let tag = &self.tag;
        let (partition, batch) = self.current;
        macro_rules! emit {
            ($lvl:ident) => {
                tracing::$lvl!(plugin = %tag.name, digest = %tag.digest, partition, batch, "{message}")
            };
        }
        match level {
            host::Level::Trace => emit!(trace),
            host::Level::Debug => emit!(debug),
            host::Level::Info => emit!(info),
            host::Level::Warn => emit!(warn),
            host::Level::Error => emit!(error),
        }
    }

    fn counter_add(&mut self, name: String, delta: u64) {
        if let Ok(mut m) = self.metrics.counters.lock() {
            let len = m.len();
            match m.get_mut(&name) {
                Some(v) => *v = v.saturating_add(delta),
                None if len < MAX_METRIC_NAMES => {
                    m.insert(name, delta);
                }
                None => {}
            }
        }
    }

    fn gauge_set(&mut self, name: String, value: f64) {
        if let Ok(mut m) = self.metrics.gauges.lock() {
            let len = m.len();
            match m.get_mut(&name) {
                Some(v) => *v = value,
                None if len < MAX_METRIC_NAMES => {
                    m.insert(name, value);
                }
                None => {}
            }
        }
    }
}

/// The most a guest's stdout or stderr keeps between two drains; the rest is counted, not kept.
const PIPE_CAPACITY: usize = 64 * 1024;

/// A guest output stream (stdout or stderr) that the host drains into its log after each call.
/// Writes are synchronous, so a panic message is in the pipe by the time the trap returns.
#[derive(Clone, Debug, Default)]
pub struct LogPipe {
    buf: Arc<Mutex<Vec<u8>>>,
}

impl LogPipe {
    /// Takes what was written since the last call, as text.
    pub fn take(&self) -> String {
        let bytes = self
            .buf
            .lock()
            .map(|mut b| std::mem::take(&mut *b))
            .unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn append(&self, bytes: &[u8]) {
        if let Ok(mut b) = self.buf.lock() {
            let room = PIPE_CAPACITY.saturating_sub(b.len());
            b.extend_from_slice(&bytes[..bytes.len().min(room)]);
        }
    }

    /// Writes what the guest printed into the log, one event per line.
    pub fn drain_to_log(&self, tag: &PluginTag, stream: &'static str) {
        let text = self.take();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            tracing::info!(plugin = %tag.name, digest = %tag.digest, stream, "{line}");
        }
    }
}

impl IsTerminal for LogPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogPipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for LogPipe {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(PIPE_CAPACITY)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LogPipe {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for LogPipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
