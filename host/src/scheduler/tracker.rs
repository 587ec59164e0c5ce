//! The batch clock and the tracker, on an injectable [`Clock`](crate::clock::Clock), so their
//! logic is tested with a manual clock.

use std::time::Duration;

/// When each batch closes: batch `id` at the end of its interval,
/// `origin + interval × (id − first + 1)`.
#[derive(Debug, Clone, Copy)]
pub struct BatchClock {
    first: u64,
    origin_ms: i64,
    interval_ms: i64,
}

impl BatchClock {
    /// The clock of a run whose first batch is `first`, started at `now_ms`. After a restart,
    /// `last_time_ms` is the recorded time of the batch before `first`: the grid goes on from
    /// it, except that a batch whose time passed while the driver was down closes right away
    /// (and the grid starts again from now), as Spark's restarted batches do.
    pub fn new(first: u64, now_ms: i64, interval: Duration, last_time_ms: Option<i64>) -> Self {
        let interval_ms = (interval.as_millis() as i64).max(1);
        let origin_ms = match last_time_ms {
            Some(t) if t + interval_ms > now_ms => t,
            Some(_) => now_ms - interval_ms,
            None => now_ms,
        };
        BatchClock {
            first,
            origin_ms,
            interval_ms,
        }
    }

    /// Batch `id`'s time: the end of its interval, ms since the epoch.
    pub fn time_ms(&self, id: u64) -> i64 {
        self.origin_ms + self.interval_ms * (id.saturating_sub(self.first) as i64 + 1)
    }

    /// How long from `now_ms` until batch `id` is due (zero when it is).
    pub fn until(&self, id: u64, now_ms: i64) -> Duration {
        Duration::from_millis(self.time_ms(id).saturating_sub(now_ms).max(0) as u64)
    }
}

/// What the tracker knows when it closes a batch.
#[derive(Debug, Clone, Copy, Default)]
pub struct Signals {
    /// A stop was asked for (a signal, a failure): this close is the last.
    pub closing: bool,
    /// Every partition has ended and nothing waits to be cut.
    pub drained: bool,
}

/// The tracker: numbers the batches it closes and says which close is the last.
#[derive(Debug, Clone)]
pub struct Tracker {
    next: u64,
    finished: bool,
}

impl Tracker {
    /// A tracker whose next close is batch `first`.
    pub fn new(first: u64) -> Self {
        Tracker {
            next: first,
            finished: false,
        }
    }

    /// Closes the next batch: its id and whether it is the last. `None` after the last.
    pub fn close(&mut self, s: Signals) -> Option<(u64, bool)> {
        if self.finished {
            return None;
        }
        let id = self.next;
        self.next += 1;
        self.finished = s.closing || s.drained;
        Some((id, self.finished))
    }

    /// The id the next close will have.
    pub fn next(&self) -> u64 {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn batches_close_at_the_end_of_their_interval_from_the_start() {
        let clock = ManualClock::at(10_000);
        let c = BatchClock::new(0, clock.now_ms(), SECOND, None);
        assert_eq!(c.time_ms(0), 11_000);
        assert_eq!(c.time_ms(2), 13_000);
        assert_eq!(c.until(0, clock.now_ms()), SECOND);
        clock.advance(Duration::from_millis(1_500));
        assert_eq!(c.until(0, clock.now_ms()), Duration::ZERO);
        assert_eq!(c.until(1, clock.now_ms()), Duration::from_millis(500));
    }

    #[test]
    fn after_a_restart_the_grid_goes_on_and_a_batch_missed_while_down_closes_at_once() {
        // Batch 7 was recorded at t=20,000; restarted 300 ms later: batch 8 keeps its time.
        let c = BatchClock::new(8, 20_300, SECOND, Some(20_000));
        assert_eq!(c.time_ms(8), 21_000);
        assert_eq!(c.time_ms(9), 22_000);
        // Restarted 5 s later: batch 8 is due now, and the grid starts again from now.
        let c = BatchClock::new(8, 25_000, SECOND, Some(20_000));
        assert_eq!(c.until(8, 25_000), Duration::ZERO);
        assert_eq!(c.time_ms(9), 26_000);
    }

    #[test]
    fn the_tracker_numbers_closes_and_stops_after_the_last() {
        let mut t = Tracker::new(5);
        assert_eq!(t.close(Signals::default()), Some((5, false)));
        assert_eq!(
            t.close(Signals {
                drained: true,
                ..Default::default()
            }),
            Some((6, true))
        );
        assert_eq!(t.close(Signals::default()), None);
        let mut t = Tracker::new(0);
        assert_eq!(
            t.close(Signals {
                closing: true,
                ..Default::default()
            }),
            Some((0, true))
        );
        assert_eq!(t.next(), 1);
    }
}
