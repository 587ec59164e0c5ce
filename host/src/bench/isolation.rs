//! `sluice bench isolation`: what finding one poison record costs. A 10,000-record block with
//! one marked record goes through poison isolation (`scheduler::isolate`) with each of the
//! panic, memory-hog and infinite-loop fixtures, against the same block without it (one call,
//! the "block call" the ratios divide by).
//!
//! Each poisoned run is split three ways: the whole; without the first call (which fails
//! under the plugin's own limits before anything is known: a loop's whole time budget, a
//! hog's whole memory cap); and without the first call and the confirmations (the record
//! found under a budget derived from the healthy calls, called once more under the plugin's
//! own limits before it is dead-lettered): the bisection itself. Each is measured with the
//! derived budgets and, for comparison, with the plugin's own limits on every sub-call (no
//! healthy cost known: the search as it was first written).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::AtomicU32;
use std::time::{Duration, Instant};

use crate::batch::RecordBatch;
use crate::config::poison::PoisonPolicy;
use crate::error::{Error, Result};
use crate::plugin::limits::{CallCost, Limits};
use crate::plugin::{CallContext, PluginError, PluginRuntime, TransformStage};
use crate::scheduler::isolate::{self, Isolation};
use crate::scheduler::job::{JobError, Lineage, Part};

/// Records per block.
pub const RECORDS: usize = 10_000;
/// The index of the poison record.
const POISON_AT: usize = 4321;
/// The fixtures, each failing on a record whose value starts with `POISON`.
const FIXTURES: [&str; 3] = ["panic", "memory-hog", "infinite-loop"];

/// A block of `line-N` records, with record `poison` (if any) marked `POISON-N`.
fn block(poison: Option<usize>) -> RecordBatch {
    let mut b = RecordBatch::default();
    for i in 0..RECORDS {
        let v = match poison {
            Some(p) if p == i => format!("POISON-{i}"),
            _ => format!("line-{i}"),
        };
        b.push(None, v.as_bytes(), Some(0));
    }
    b
}

/// One isolation run, its calls timed.
#[derive(Debug, Clone, Copy, Default)]
struct Timed {
    /// The whole run.
    total: Duration,
    /// The first call (on the whole block, under the plugin's own limits).
    first: Duration,
    /// The calls on one record under the plugin's own limits after the first: confirmations.
    confirming: Duration,
    /// How many calls.
    calls: u32,
    /// How many records were dead-lettered.
    dead: u32,
}

/// Runs isolation over `records` with `stage`, sub-call budgets derived from `cost`.
fn isolate_with(stage: &TransformStage, cost: &CallCost, records: &RecordBatch) -> Result<Timed> {
    let ctx = CallContext {
        stream: "input".into(),
        partition: 0,
        batch_id: 0,
        batch_time_ms: 0,
        part: 0,
    };
    let full = stage.plugin().info().limits;
    let timed = RefCell::new(Timed::default());
    let call =
        |r: &RecordBatch, l: Lineage, limits: &Limits| -> std::result::Result<Part, JobError> {
            let started = Instant::now();
            let out = stage.transform_within(&ctx, r, limits);
            let took = started.elapsed();
            let mut t = timed.borrow_mut();
            if t.calls == 0 {
                t.first = took;
            } else if r.len() == 1 && *limits == full {
                t.confirming += took;
            }
            t.calls += 1;
            let out = out.map_err(|source| JobError::Plugin { batch: 0, source })?;
            Ok(Part {
                partition: 0,
                records: out.batch,
                lineage: l.follow(out.origins),
            })
        };
    let dead_letter = |_: &RecordBatch, _: usize, _: (u32, u64), _: &PluginError| {
        timed.borrow_mut().dead += 1;
    };
    let found = AtomicU32::new(0);
    let iso = Isolation {
        policy: PoisonPolicy::default(),
        found: &found,
        batch: 0,
        partition: 0,
        limits: full,
        cost,
        call: &call,
        dead_letter: &dead_letter,
    };
    let lineage = Lineage::Range {
        partition: 0,
        start: 0,
    };
    let started = Instant::now();
    let part = isolate::call(&iso, records, lineage).map_err(|e| Error::Usage(e.to_string()))?;
    let total = started.elapsed();
    let t = Timed {
        total,
        ..*timed.borrow()
    };
    if part.records.len() + t.dead as usize != RECORDS {
        return Err(Error::Usage(format!(
            "isolation lost records: {} out and {} dead-lettered of {RECORDS}",
            part.records.len(),
            t.dead
        )));
    }
    Ok(t)
}

/// The median of `f` over `runs`.
fn median(runs: &[Timed], f: impl Fn(&Timed) -> Duration) -> Duration {
    let mut v: Vec<Duration> = runs.iter().map(f).collect();
    v.sort();
    v[v.len() / 2]
}

/// Runs the benchmark with the fixtures in `components/fixtures` and returns the report.
pub fn run(runtime: &PluginRuntime, components: &Path, quick: bool) -> Result<String> {
    let (clean_runs, poisoned_runs) = if quick { (9, 3) } else { (31, 9) };
    let (clean, poisoned) = (block(None), block(Some(POISON_AT)));
    let tick = runtime.config().epoch_tick;
    let mut report = String::new();
    let _ = writeln!(
        report,
        "sluice bench isolation: a {RECORDS}-record block with one poison record (index {POISON_AT}) against the same block without it; epoch tick {} ms; medians of {poisoned_runs} poisoned and {clean_runs} clean runs",
        tick.as_millis()
    );
    let _ = writeln!(
        report,
        "{:<14} {:<8} {:>9} {:>6} {:>11} {:>9} {:>13} {:>9} {:>12} {:>9}",
        "fixture",
        "budgets",
        "block us",
        "calls",
        "total ms",
        "x block",
        "no first ms",
        "x block",
        "bisect ms",
        "x block"
    );
    for fixture in FIXTURES {
        let file = components.join("fixtures").join(format!("{fixture}.wasm"));
        let plugin = runtime.load_file(&file, &Default::default())?;
        let params = BTreeMap::from([("poison-prefix".to_owned(), "POISON".to_owned())]);
        let stage = plugin.transformer(&params).map_err(Error::Usage)?;
        let limits = plugin.info().limits;
        let healthy = stage.cost();
        let mut block_times = Vec::new();
        for _ in 0..clean_runs + 3 {
            block_times.push(isolate_with(&stage, healthy, &clean)?);
        }
        let block = median(&block_times[3..], |t| t.total);
        // The two ways alternate run by run, so that the machine's noise hits both alike.
        let none = CallCost::default();
        let (mut derived, mut full) = (Vec::new(), Vec::new());
        for _ in 0..poisoned_runs {
            derived.push(isolate_with(&stage, healthy, &poisoned)?);
            full.push(isolate_with(&stage, &none, &poisoned)?);
        }
        for (name, runs) in [("derived", &derived), ("full", &full)] {
            if let Some(bad) = runs.iter().find(|t| t.dead != 1) {
                return Err(Error::Usage(format!(
                    "{fixture}: {} records dead-lettered, not 1",
                    bad.dead
                )));
            }
            write_row(&mut report, (fixture, name), block, runs);
        }
        let _ = writeln!(
            report,
            "{:<14} limits: time {} ms, memory {} MiB; healthy calls leave {:.1} MiB",
            "",
            limits.time.as_millis(),
            limits.memory >> 20,
            healthy.healthy_memory().unwrap_or_default() as f64 / (1 << 20) as f64,
        );
    }
    let _ = writeln!(
        report,
        "total: the whole isolation; no first: without the first call on the whole block; bisect: without the first call and the confirmation under the plugin's own limits. budgets derived: sub-calls under budgets derived from the healthy calls; full: under the plugin's own limits."
    );
    Ok(report)
}

/// The median number of calls of `runs`.
fn median_calls(runs: &[Timed]) -> u32 {
    let mut v: Vec<u32> = runs.iter().map(|t| t.calls).collect();
    v.sort();
    v[v.len() / 2]
}

fn write_row(report: &mut String, names: (&str, &str), block: Duration, runs: &[Timed]) {
    let total = median(runs, |t| t.total);
    let no_first = median(runs, |t| t.total.saturating_sub(t.first));
    let bisect = median(runs, |t| {
        t.total.saturating_sub(t.first).saturating_sub(t.confirming)
    });
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let x = |d: Duration| d.as_secs_f64() / block.as_secs_f64();
    let _ = writeln!(
        report,
        "{:<14} {:<8} {:>9.1} {:>6} {:>11.2} {:>9.1} {:>13.2} {:>9.1} {:>12.2} {:>9.1}",
        names.0,
        names.1,
        block.as_secs_f64() * 1e6,
        median_calls(runs),
        ms(total),
        x(total),
        ms(no_first),
        x(no_first),
        ms(bisect),
        x(bisect)
    );
}
