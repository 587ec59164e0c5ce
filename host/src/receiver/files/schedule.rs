//! When the files source lists: every poll interval, and once more [`CLOSE_LEAD`] before each
//! batch closes (the batch clock says when), so that a file waits for its batch at most about
//! the batch interval and the lead, however long the poll interval.

use std::time::Duration;

use crate::clock::now_ms;

/// How long before a batch closes the source lists once more, so that a file dropped up to
/// about this long before the close (less the time to read it) makes that batch.
pub const CLOSE_LEAD: Duration = Duration::from_millis(50);

/// How long to wait after a listing that ended at `now_ms` before the next: the poll
/// interval, or less when a batch closes before then, so that a listing falls [`CLOSE_LEAD`]
/// before each close. `close`: when the open batch closes and the batch interval (ms), from
/// the batch clock; once the lead before that close has passed, the next close's counts. A
/// file then waits for a batch at most the batch interval and the lead, rather than the batch
/// interval and the poll interval, whatever the poll interval (issue #16: at 200 ms it was most
/// of the files source's extra latency).
pub fn next_listing(poll: Duration, now_ms: i64, close: Option<(i64, i64)>) -> Duration {
    let Some((close_ms, interval_ms)) = close else {
        return poll;
    };
    let interval_ms = interval_ms.max(1);
    let mut at = close_ms - CLOSE_LEAD.as_millis() as i64;
    if at <= now_ms {
        // That close's listing is done: the next close's, on the clock's grid.
        at += ((now_ms - at) / interval_ms + 1) * interval_ms;
    }
    let until = (at - now_ms) as u64;
    poll.min(Duration::from_millis(until))
}

/// Waits until the next listing is due ([`next_listing`]; `before_closes`: also the one
/// before each close that `next_close` says) or `stop` changes. Until the batch clock has
/// said its first close (its task starts after the receivers', or waits for a replay's
/// fence), it looks again every [`CLOSE_LEAD`], so a partition whose first listing came first
/// does not wait a whole poll interval for its listings before closes (a 10 s poll interval
/// left one partition's files 8 to 9 s late in CI).
pub(super) async fn until_next_listing(
    poll: Duration,
    next_close: impl Fn() -> Option<(i64, i64)>,
    before_closes: bool,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) {
    let started = tokio::time::Instant::now();
    loop {
        let close = next_close().filter(|_| before_closes);
        let left = poll.saturating_sub(started.elapsed());
        let wait = next_listing(left, now_ms(), close);
        let nap = match close {
            None if before_closes => wait.min(CLOSE_LEAD),
            _ => wait,
        };
        tokio::select! {
            _ = tokio::time::sleep(nap) => {}
            _ = stop.changed() => return,
        }
        if nap == wait {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn a_listing_falls_just_before_each_batch_close() {
        let poll = Duration::from_millis(200);
        let lead = CLOSE_LEAD.as_millis() as i64;
        let close = Some((11_000, 1_000));
        let ms = |m: i64| Duration::from_millis(m as u64);
        // The close is far off: the poll interval.
        assert_eq!(next_listing(poll, 10_000, close), poll);
        // It comes within the poll interval: the next listing is the lead before it.
        assert_eq!(next_listing(poll, 10_900, close), ms(100 - lead));
        // That listing was the one before the close: a poll interval later ...
        assert_eq!(next_listing(poll, 11_000 - lead + 5, close), poll);
        // ... or, with a long poll interval, the lead before the next close (the clock has
        // not said it yet), and so on while the clock is late to say.
        let long = Duration::from_secs(10);
        assert_eq!(next_listing(long, 11_000 - lead + 5, close), ms(995));
        assert_eq!(
            next_listing(long, 12_500, close),
            ms(13_000 - lead - 12_500)
        );
        // No clock yet (a replay waiting for its fence): the poll interval.
        assert_eq!(next_listing(poll, 10_900, None), poll);
        // A poll interval shorter than the time to the lead is left alone.
        let short = Duration::from_millis(20);
        assert_eq!(next_listing(short, 10_800, close), short);
    }

    /// The race CI met: a receiver's first listing before the batch clock's first close is
    /// known. Its next listing must come before the first close, not a poll interval later.
    #[tokio::test]
    async fn a_listing_before_the_clock_has_started_still_falls_before_its_first_close() {
        let close = Arc::new(std::sync::atomic::AtomicI64::new(0));
        let (_tx, mut stop) = tokio::sync::watch::channel(false);
        let c = close.clone();
        let read = move || {
            let at = c.load(std::sync::atomic::Ordering::Relaxed);
            (at > 0).then_some((at, 1_000))
        };
        let poll = Duration::from_secs(10);
        let started = std::time::Instant::now();
        let set = close.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            set.store(now_ms() + 400, std::sync::atomic::Ordering::Relaxed);
        });
        until_next_listing(poll, read.clone(), true, &mut stop).await;
        let took = started.elapsed();
        // The clock said its close 100 ms in, for 400 ms later: the listing the lead before,
        // about 450 ms in (a loaded machine may be late, never by the 10 s poll interval).
        assert!(
            took >= Duration::from_millis(400) && took < Duration::from_secs(3),
            "listed after {took:?}"
        );
        // Without listings before closes (in place), the poll interval, the clock or not.
        let (_tx, mut stop) = tokio::sync::watch::channel(false);
        let started = std::time::Instant::now();
        let short = Duration::from_millis(300);
        until_next_listing(short, read, false, &mut stop).await;
        assert!(started.elapsed() >= short, "{:?}", started.elapsed());
    }
}
