//! One `Shutdown`: every way a run stops (Ctrl-C, SIGTERM, `--max-batches`, the partitions
//! ending, a failure) goes through it, and every task watches it.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::RunError;

/// How far a stop has gone (0: running).
/// Drain: receivers stop, what they received makes a last batch, every block runs, commit.
const DRAIN: u8 = 1;
/// Stop after the running batch.
const NOW: u8 = 2;

/// The run's stop state, shared by the signal handlers, the receivers, the clock and the loop.
#[derive(Debug, Clone)]
pub struct Shutdown {
    level: Arc<AtomicU8>,
    receivers: watch::Sender<bool>,
    failure: Arc<Mutex<Option<RunError>>>,
    closing: Arc<AtomicBool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown {
            level: Arc::default(),
            receivers: watch::Sender::new(false),
            failure: Arc::default(),
            closing: Arc::default(),
        }
    }
}

impl Shutdown {
    /// One stop request (a signal): the first drains, the second stops after the running
    /// batch.
    pub fn request(&self) {
        let _ = self
            .level
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |l| {
                Some((l + 1).min(NOW))
            });
    }

    /// Whether a stop was requested.
    pub fn requested(&self) -> bool {
        self.level.load(Ordering::SeqCst) >= DRAIN
    }

    /// Whether a second request asked to stop after the running batch.
    pub fn now(&self) -> bool {
        self.level.load(Ordering::SeqCst) >= NOW
    }

    /// Tells the receivers and the block generator to stop, and the clock to close a last
    /// batch.
    pub fn stop_receiving(&self) {
        self.closing.store(true, Ordering::SeqCst);
        let _ = self.receivers.send(true);
    }

    /// What receivers watch: true once they must stop.
    pub fn receivers(&self) -> watch::Receiver<bool> {
        self.receivers.subscribe()
    }

    /// Whether the clock must close a last batch.
    pub fn closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    /// A task failed for good: the first failure is kept and the run stops.
    pub fn fail(&self, e: RunError) {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(e);
        self.stop_receiving();
    }

    /// Whether a task failed.
    pub fn failed(&self) -> bool {
        self.failure.lock().map(|f| f.is_some()).unwrap_or(true)
    }

    /// Takes the failure, if any.
    pub fn take_failure(&self) -> Option<RunError> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_request_drains_and_the_second_stops_now() {
        let s = Shutdown::default();
        assert!(!s.requested());
        s.request();
        assert!(s.requested() && !s.now());
        s.request();
        s.request();
        assert!(s.now());
    }

    #[test]
    fn a_failure_stops_the_receivers_and_is_kept_once() {
        let s = Shutdown::default();
        let rx = s.receivers();
        s.fail(RunError::Receiver {
            partition: 1,
            message: "first".into(),
        });
        s.fail(RunError::Receiver {
            partition: 2,
            message: "second".into(),
        });
        assert!(*rx.borrow() && s.closing() && s.failed());
        assert!(s.take_failure().unwrap().to_string().contains("first"));
    }
}
