//! Time, injectable: the system clock for runs, a manual one for tests of the batch clock and
//! the tracker. Everything that reads the time asks a [`Clock`] or [`now_ms`].

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// Milliseconds since the Unix epoch, from the system clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Microseconds since the Unix epoch, from the system clock (what a latency marker's stamp
/// is measured against: a commit within a millisecond of a marker's send must not come out
/// negative, as one from [`now_ms`] times 1,000 could).
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

static PROCESS_START_MS: std::sync::OnceLock<i64> = std::sync::OnceLock::new();

/// Called first thing by the `sluice` binary's `main`: notes when the process started, so the
/// first batch of a fresh run can close one batch interval after launch rather than after the
/// set-up (see [`first_origin_ms`]).
pub fn mark_process_start() {
    let _ = PROCESS_START_MS.set(now_ms());
}

/// Where a fresh run's batch grid starts, given the time `now_ms` its clock starts and its
/// batch `interval`: when the process started (so the first batch closes one interval after
/// launch, the set-up counted in it, as a user who starts `sluice run` expects), unless the
/// set-up took an interval or more, or the start was not noted (the library used in-process):
/// then `now_ms`.
pub fn first_origin_ms(now_ms: i64, interval: Duration) -> i64 {
    first_origin(now_ms, interval, PROCESS_START_MS.get().copied())
}

fn first_origin(now_ms: i64, interval: Duration, started_ms: Option<i64>) -> i64 {
    match started_ms {
        Some(s) if s <= now_ms && ((now_ms - s) as u128) < interval.as_millis() => s,
        _ => now_ms,
    }
}

/// Wall-clock time in ms since the Unix epoch.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Now.
    fn now_ms(&self) -> i64;
}

/// The system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        now_ms()
    }
}

/// A clock that moves only when told (tests).
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock at `ms`.
    pub fn at(ms: i64) -> Self {
        ManualClock(AtomicI64::new(ms))
    }

    /// Moves it forward.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_grid_starts_at_launch_unless_the_set_up_took_an_interval() {
        let second = Duration::from_secs(1);
        assert_eq!(first_origin(10_300, second, Some(10_000)), 10_000);
        assert_eq!(first_origin(11_000, second, Some(10_000)), 11_000);
        assert_eq!(first_origin(10_300, second, None), 10_300);
        // A clock that went back: now.
        assert_eq!(first_origin(9_000, second, Some(10_000)), 9_000);
    }
}
