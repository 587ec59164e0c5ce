//! What each partition's receiver has handed in: records, bytes, time held back by the memory
//! budget, and its last error. Kept with one atomic add per appended chunk (never per record);
//! read by the monitor ([`crate::monitor`]) for the receivers table and `/metrics`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// One partition's intake counters.
#[derive(Debug, Default)]
pub struct Intake {
    records: AtomicU64,
    bytes: AtomicU64,
    held_nanos: AtomicU64,
    held_now_since_ms: AtomicU64,
    last_error: Mutex<Option<(i64, String)>>,
    failing: std::sync::atomic::AtomicBool,
    /// What the source has waiting beyond what was handed in, plus one (0: it does not say).
    lag: AtomicU64,
}

/// A copy of one partition's intake counters.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct IntakeSnapshot {
    /// Records appended since the start.
    pub records: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Time the receiver waited for room in the memory budget, seconds.
    pub backpressure_seconds: f64,
    /// Whether it is waiting for room now.
    pub held_now: bool,
    /// Its last error and when (ms since the epoch), if it had one.
    pub last_error: Option<String>,
    /// When the last error happened, ms since the epoch.
    pub last_error_ms: Option<i64>,
    /// Whether no records came in since that error.
    pub failing: bool,
    /// What the source says it has waiting that was not handed in yet, where it knows (the
    /// files source: bytes of listed files not read yet); `None` where it does not.
    pub lag: Option<u64>,
}

impl Intake {
    /// Called after a chunk of `records` records and `bytes` bytes went in.
    pub fn appended(&self, records: u64, bytes: u64) {
        self.records.fetch_add(records, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        if self.failing.load(Ordering::Relaxed) {
            self.failing.store(false, Ordering::Relaxed);
        }
    }

    /// Called by a source that knows how much it has waiting (its unit is the source's: bytes
    /// for files).
    pub fn set_lag(&self, waiting: u64) {
        self.lag.store(waiting.saturating_add(1), Ordering::Relaxed);
    }

    /// Whether its last event was an error (no records came in since).
    pub fn failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }

    /// Called when the receiver starts waiting for room.
    pub fn held(&self) {
        let now = crate::clock::now_ms().max(1) as u64;
        self.held_now_since_ms.store(now, Ordering::Relaxed);
    }

    /// Called when it got room after waiting `waited`.
    pub fn released(&self, waited: Duration) {
        self.held_now_since_ms.store(0, Ordering::Relaxed);
        self.held_nanos
            .fetch_add(waited.as_nanos() as u64, Ordering::Relaxed);
    }

    /// Time the receiver waited for room in the memory budget so far, seconds.
    pub fn held_seconds(&self) -> f64 {
        self.held_nanos.load(Ordering::Relaxed) as f64 / 1e9
    }

    /// Called when the receiver failed with `message` (it may be restarted).
    pub fn failed(&self, message: &str) {
        let mut e = self.last_error.lock().unwrap_or_else(|e| e.into_inner());
        *e = Some((crate::clock::now_ms(), message.to_owned()));
        self.failing.store(true, Ordering::Relaxed);
    }

    /// A copy of the counters.
    pub fn snapshot(&self) -> IntakeSnapshot {
        let error = self
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        IntakeSnapshot {
            records: self.records.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            backpressure_seconds: self.held_seconds(),
            held_now: self.held_now_since_ms.load(Ordering::Relaxed) != 0,
            last_error_ms: error.as_ref().map(|e| e.0),
            failing: self.failing(),
            lag: self.lag.load(Ordering::Relaxed).checked_sub(1),
            last_error: error.map(|e| e.1),
        }
    }
}
