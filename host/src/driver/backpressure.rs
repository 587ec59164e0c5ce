//! One warning, at most every [`EVERY`], when the memory budget held the source back: a
//! receiver waited for room ([`crate::block::BlockManager::backpressure_waits`] grew, or a
//! partition's held time in its [`crate::block::Intake`] did). It names the budget, how long
//! and which partitions were held since the last warning, and the slowest plugin over the
//! last [`RECENT`] batches (its call time per batch, from the deltas of
//! [`crate::plugin::PluginMetrics::call_nanos`]; a plugin sink counts as a step), and says
//! what to do. Read once per committed batch, off the record path.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::block::BlockManager;
use crate::monitor::Monitor;
use crate::plan::Plan;
use crate::plugin::PluginKind;

/// The least time between two warnings.
pub(crate) const EVERY: Duration = Duration::from_secs(30);
/// How many batches the slowest step is judged over.
pub(crate) const RECENT: usize = 10;

/// What one look after a batch read.
#[derive(Debug, Clone, Default)]
pub(crate) struct Look {
    /// [`BlockManager::backpressure_waits`].
    pub waits: u64,
    /// Per partition, the seconds its receiver was held since the start.
    pub held_s: Vec<f64>,
    /// Per plugin the run calls now: its label (`step \`name\`` or `sink \`name\``) and its
    /// call time since the start, nanoseconds.
    pub calls: Vec<(String, u64)>,
    /// The batch's processing time.
    pub processing: Duration,
}

/// What a warning says.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Warning {
    /// Seconds the receivers were held since the last warning (summed over partitions).
    pub held_s: f64,
    /// The partitions held, ascending.
    pub partitions: Vec<u32>,
    /// Batches with backpressure since the last warning.
    pub batches: u64,
    /// Seconds since the last warning (or the start).
    pub over_s: f64,
    /// It is the run's first.
    pub first: bool,
    /// The slowest plugin and its mean call time per batch, ms, over the recent batches.
    pub slowest: Option<(String, f64)>,
    /// The recent batches' mean processing time, ms.
    pub processing_ms: f64,
    /// How many recent batches `slowest` and `processing_ms` are over.
    pub recent: usize,
}

/// The warning's memory between batches.
#[derive(Debug)]
pub(crate) struct Backpressure {
    last: Look,
    /// Per partition, seconds held since the last warning.
    held_since: Vec<f64>,
    batches_since: u64,
    /// Per recent batch, each plugin's call time in it, ns, and the batch's processing time.
    recent: VecDeque<(BTreeMap<String, u64>, Duration)>,
    started: Instant,
    warned: Option<Instant>,
}

impl Backpressure {
    /// Called when the batch loop starts, at `now`.
    pub(crate) fn new(now: Instant) -> Backpressure {
        Backpressure {
            last: Look::default(),
            held_since: Vec::new(),
            batches_since: 0,
            recent: VecDeque::new(),
            started: now,
            warned: None,
        }
    }

    /// Called by the batch loop after every committed batch: reads the receivers' held time
    /// and the plugins' call time, and logs the warning when one is due.
    pub(crate) fn batch_done(
        &mut self,
        plan: &Plan,
        blocks: &BlockManager,
        monitor: &Monitor,
        processing: Duration,
    ) {
        let look = Look {
            waits: blocks.backpressure_waits(),
            held_s: (0..plan.partitions)
                .map(|p| blocks.intake(p).map_or(0.0, |i| i.held_seconds()))
                .collect(),
            calls: monitor
                .plugins()
                .iter()
                .map(|p| {
                    let kind = match p.info().kind {
                        PluginKind::Sink => "sink",
                        _ => "step",
                    };
                    let nanos = p
                        .metrics()
                        .call_nanos
                        .load(std::sync::atomic::Ordering::Relaxed);
                    (format!("{kind} `{}`", p.name()), nanos)
                })
                .collect(),
            processing,
        };
        if let Some(w) = self.observe(look, Instant::now()) {
            warn(plan, &w);
        }
    }

    /// Takes one look; the warning when the batch saw backpressure and none was logged in
    /// the last [`EVERY`].
    pub(crate) fn observe(&mut self, look: Look, now: Instant) -> Option<Warning> {
        let mut steps = BTreeMap::new();
        for (label, nanos) in &look.calls {
            let before = self.last.calls.iter().find(|(l, _)| l == label);
            // A swapped plugin's new version starts its own count.
            let delta = nanos
                .checked_sub(before.map_or(0, |b| b.1))
                .unwrap_or(*nanos);
            steps.insert(label.clone(), delta);
        }
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back((steps, look.processing));
        self.held_since.resize(look.held_s.len(), 0.0);
        let mut held_now = false;
        for (p, s) in look.held_s.iter().enumerate() {
            let delta = (s - self.last.held_s.get(p).copied().unwrap_or(0.0)).max(0.0);
            self.held_since[p] += delta;
            held_now |= delta > 0.0;
        }
        held_now |= look.waits > self.last.waits;
        self.last = look;
        if !held_now {
            return None;
        }
        self.batches_since += 1;
        if self.warned.is_some_and(|w| now.duration_since(w) < EVERY) {
            return None;
        }
        let since = self.warned.unwrap_or(self.started);
        self.warned = Some(now);
        let warning = Warning {
            held_s: self.held_since.iter().sum(),
            partitions: (0u32..)
                .zip(&self.held_since)
                .filter(|(_, s)| **s > 0.0)
                .map(|(p, _)| p)
                .collect(),
            batches: std::mem::take(&mut self.batches_since),
            over_s: now.duration_since(since).as_secs_f64(),
            first: since == self.started,
            slowest: self.slowest(),
            processing_ms: self.recent.iter().map(|r| r.1.as_secs_f64()).sum::<f64>() * 1e3
                / self.recent.len() as f64,
            recent: self.recent.len(),
        };
        self.held_since.iter_mut().for_each(|s| *s = 0.0);
        Some(warning)
    }

    /// The plugin with the most call time per batch over the recent batches.
    fn slowest(&self) -> Option<(String, f64)> {
        let mut total: BTreeMap<&str, u64> = BTreeMap::new();
        for (steps, _) in &self.recent {
            for (label, nanos) in steps {
                *total.entry(label).or_default() += nanos;
            }
        }
        let (label, nanos) = total.into_iter().max_by_key(|(_, n)| *n)?;
        Some((
            label.to_owned(),
            nanos as f64 / 1e6 / self.recent.len() as f64,
        ))
    }
}

/// Logs `w`.
fn warn(plan: &Plan, w: &Warning) {
    let budget_mib = plan.file.memory_budget >> 20;
    let queue_ms = plan.file.queue_target.as_millis();
    let (slowest, slowest_ms) = match &w.slowest {
        Some((label, ms)) => (label.clone(), *ms),
        None => ("none timed (no plugin step or sink)".to_owned(), 0.0),
    };
    let lighten = match &w.slowest {
        Some((label, _)) => format!("lighten {label}"),
        None => "lighten the steps".to_owned(),
    };
    tracing::warn!(
        memory_budget_mib = budget_mib,
        queue_target_ms = queue_ms as u64,
        held_s = round1(w.held_s),
        over_s = w.over_s.round(),
        batches = w.batches,
        partitions = ?w.partitions,
        slowest_step = %slowest,
        slowest_step_ms_per_batch = round1(slowest_ms),
        processing_ms = round1(w.processing_ms),
        workers = plan.workers,
        "Backpressure: the source was held back for {:.1} s {} (partitions {:?}, summed) by the memory budget (`memory-budget` = {budget_mib} MiB) or the queue target (`queue-target` = {queue_ms} ms of processing queued per partition); the slowest step over the last {} batch(es) is {slowest} ({slowest_ms:.0} ms of calls per batch, summed over the workers; a batch takes {:.0} ms). The pipeline processes more slowly than its source delivers: raise `memory-budget` (for bursts), add `workers` (now {}), or {lighten}. This warning repeats at most once every {} s.",
        w.held_s,
        match w.first {
            true => format!("in the first {:.0} s", w.over_s),
            false => format!("over the last {:.0} s", w.over_s),
        },
        w.partitions,
        w.recent,
        w.processing_ms,
        plan.workers,
        EVERY.as_secs()
    );
}

/// `x` rounded to a tenth, for a log field.
fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn look(waits: u64, held: f64, sink_ms: u64) -> Look {
        Look {
            waits,
            held_s: vec![held, 0.0],
            calls: vec![
                ("step `identity`".to_owned(), sink_ms * 100_000),
                ("sink `slow-sink`".to_owned(), sink_ms * 1_000_000),
            ],
            processing: Duration::from_millis(900),
        }
    }

    #[test]
    fn backpressure_warns_once_then_not_again_within_thirty_seconds_then_again() {
        let t0 = Instant::now();
        let mut b = Backpressure::new(t0);
        assert_eq!(b.observe(look(0, 0.0, 0), t0), None, "no wait, no warning");
        let w = b
            .observe(look(3, 1.5, 800), t0 + Duration::from_secs(1))
            .expect("the first batch held back warns");
        assert_eq!(w.partitions, vec![0]);
        assert_eq!(w.batches, 1);
        assert!(w.first);
        assert!((w.held_s - 1.5).abs() < 1e-9);
        let (label, ms) = w.slowest.unwrap();
        assert_eq!(label, "sink `slow-sink`");
        assert!((ms - 400.0).abs() < 1e-6, "800 ms over 2 batches: {ms}");
        for s in 2..31 {
            let l = look(3 + s, 1.5 * s as f64, 800 * s);
            assert_eq!(b.observe(l, t0 + Duration::from_secs(s)), None, "{s} s");
        }
        let w = b
            .observe(look(40, 50.0, 25_000), t0 + Duration::from_secs(31))
            .expect("30 s after the first, a second");
        assert_eq!(w.batches, 30);
        assert!(!w.first);
        assert!((w.held_s - 48.5).abs() < 1e-9, "{}", w.held_s);
        assert!((w.over_s - 30.0).abs() < 1e-9);
    }

    #[test]
    fn no_plugin_means_no_slowest_step() {
        let mut b = Backpressure::new(Instant::now());
        let l = Look {
            waits: 1,
            held_s: vec![0.0],
            ..Look::default()
        };
        let w = b.observe(l, Instant::now()).unwrap();
        assert_eq!(w.slowest, None);
    }
}
