//! What a plugin's store holds: its WASI context (granting nothing by default), its memory
//! limiter, the `host` imports (log, metrics), and the pipes that carry its stdout and stderr
//! into the host's log.

use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::v0_1::host;
use super::limits::MemoryLimiter;

/// The name and digest a plugin's log lines and metrics are tagged with.
#[derive(Debug)]
pub struct PluginTag {
    /// The plugin's name.
    pub name: String,
    /// Its sha256, first 12 hex digits.
    pub digest: String,
}

/// Counters and gauges a plugin reports through the `host` import.
#[derive(Debug, Default)]
pub struct PluginMetrics {
    counters: Mutex<BTreeMap<String, u64>>,
    gauges: Mutex<BTreeMap<String, f64>>,
}

impl PluginMetrics {
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
            *m.entry(name).or_default() += delta;
        }
    }

    fn gauge_set(&mut self, name: String, value: f64) {
        if let Ok(mut m) = self.metrics.gauges.lock() {
            m.insert(name, value);
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
