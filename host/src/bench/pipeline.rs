//! `sluice bench pipeline`: whole pipelines at 1 s batches, each with a plugin step and again
//! with the same step in native Rust, alternating in one process on the same generated input.
//!
//! - `uppercase`: generator (100-byte lines, as fast as the budget lets it) → `uppercase`
//!   → counting sink;
//! - `wordcount`: generator → `count-words` (each distinct word of a block once, with its
//!   count) → repartition by key → count by key (`sum-values`) → counting sink.
//!
//! Sustained throughput is the input of the steady batches (the first two and the last are
//! dropped) over the time from the commit before them to the last one's commit: with the
//! generator at full speed, the block manager's budget makes ingestion wait for processing, so
//! this is what the pipeline keeps up with. CPU seconds come from the process's own accounting, peak RSS from sampling
//! `/proc/self/status` during the run.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::batch::{Keys, RecordBatch};
use crate::driver::{self, RunOptions, Shutdown};
use crate::error::{Error, Result};
use crate::plan::{self, NativeStep, StepPlan};

/// The memory budget of the benchmark pipelines: small, to show that throughput does not
/// need a big one.
pub const BUDGET: &str = "64MiB";

/// One measured run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Measure {
    /// Records per second in the steady state.
    pub records_per_s: f64,
    /// CPU seconds (user + system) per million records.
    pub cpu_s_per_million: f64,
    /// The process's peak RSS during the run, bytes.
    pub peak_rss: u64,
    /// The mean processing time of the steady batches.
    pub processing: Duration,
    /// From the start to the first finished batch.
    pub first_batch: Duration,
}

/// ASCII upper case of every value, in the host: the native twin of the `uppercase` plugin.
pub fn native_uppercase(input: &RecordBatch) -> RecordBatch {
    let mut out = RecordBatch {
        values: input.values.clone(),
        keys: input.keys.clone(),
        timestamps: input.timestamps.clone(),
        headers: input.headers.clone(),
    };
    for b in out.values.data.to_mut().iter_mut() {
        *b = b.to_ascii_uppercase();
    }
    out
}

/// Each distinct word of the block once, keyed by itself, its count in decimal as the value:
/// the native twin of `count-words`, the same code (its count map kept per worker thread
/// across calls, as the plugin keeps it across calls).
pub fn native_count_words(input: &RecordBatch) -> RecordBatch {
    thread_local! {
        static COUNTS: std::cell::RefCell<count_words::WordCounts> = Default::default();
    }
    COUNTS.with_borrow_mut(|counts| {
        let counted = counts.count(&input.values.data, &input.values.ends, false);
        let mut out = RecordBatch::with_capacity(counted.len(), counted.len() * 2);
        let mut keys = Keys {
            column: crate::batch::BytesColumn::with_capacity(counted.len(), counted.word_bytes()),
            ..Keys::default()
        };
        let mut num = [0u8; 10];
        for (word, count, origin) in counted.iter() {
            out.values.push(count_words::decimal(count, &mut num));
            keys.push(Some(word));
            if let Some(ts) = input.timestamp(origin as usize) {
                out.timestamps.push(ts);
            }
        }
        out.keys = Some(keys);
        out
    })
}

/// The TOML of `workload`'s pipeline over `partitions` generator partitions under `budget`.
pub fn pipeline_text(workload: &str, partitions: u32, budget: &str) -> String {
    let steps = match workload {
        "uppercase" => "[[transform]]\nplugin = \"uppercase\"\n".to_owned(),
        _ => "[[transform]]\nplugin = \"count-words\"\n\n[[transform]]\nbuiltin = \"repartition-by-key\"\n\n[[transform]]\nbuiltin = \"count-by-key\"\nsum-values = true\n".to_owned(),
    };
    // 14 words of the generator's vocabulary average about 100 bytes a line.
    format!(
        "version = 1\nname = \"bench-{workload}\"\nbatch-interval = \"1s\"\nmemory-budget = \"{budget}\"\n\n[source]\nkind = \"generator\"\npartitions = {partitions}\nrate = 0\nwords-per-line = 14\n\n{steps}\n[[sink]]\nkind = \"count\"\n"
    )
}

/// The CPU seconds (user + system) this process has used so far.
pub fn cpu_seconds() -> f64 {
    cpu_seconds_of("self")
}

/// The CPU seconds (user + system) process `pid` (a number, or `self`) has used so far; 0
/// when it cannot be read.
pub fn cpu_seconds_of(pid: &str) -> f64 {
    // utime and stime, fields 14 and 15 of /proc/<pid>/stat, in clock ticks (100 per second).
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or_default();
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// The process's resident set size now, bytes.
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// Runs one workload, with the plugin or (`native`) its native twin, for `batches` batches.
pub fn measure(
    dir: &Path,
    plugins: &Path,
    workload: &str,
    native: bool,
    batches: u64,
    rt: &tokio::runtime::Runtime,
) -> Result<Measure> {
    let file = dir.join(format!("{workload}.toml"));
    std::fs::write(&file, pipeline_text(workload, 2, BUDGET))
        .map_err(Error::io("writing a bench pipeline"))?;
    let mut plan = plan::build(&file, Some(plugins), rt.handle())?;
    if native {
        let step = match workload {
            "uppercase" => NativeStep {
                name: "native-uppercase",
                f: native_uppercase,
            },
            _ => NativeStep {
                name: "native-count-words",
                f: native_count_words,
            },
        };
        std::sync::Arc::make_mut(&mut plan.steps)[0] = StepPlan::Native(step);
    }
    measure_plan(&plan, batches, rt)
}

/// Runs `plan` (a generator at full speed) for `batches` batches and measures it.
pub fn measure_plan(
    plan: &plan::Plan,
    batches: u64,
    rt: &tokio::runtime::Runtime,
) -> Result<Measure> {
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(rss_bytes()));
    let sampler = {
        let (done, peak) = (done.clone(), peak.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss_bytes(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let cpu0 = cpu_seconds();
    let start_ms = crate::clock::now_ms();
    let summary = driver::run(
        plan,
        rt,
        &RunOptions {
            from_scratch: true,
            max_batches: Some(batches),
            progress: false,
            report: None,
            ha: None,
            ui: Default::default(),
        },
        &Shutdown::default(),
    )?;
    let cpu = cpu_seconds() - cpu0;
    done.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let steady: Vec<_> = summary
        .reports
        .iter()
        .skip(2)
        .take(summary.reports.len().saturating_sub(3))
        .collect();
    let steady = if steady.is_empty() {
        summary.reports.iter().collect()
    } else {
        steady
    };
    // Records of the steady batches over the time from the commit before the first of them
    // to the commit of the last: what the pipeline sustained, whatever the batch sizes.
    let records: u64 = steady.iter().map(|r| r.records_in).sum();
    let first = steady.first().map_or(0, |r| r.id as usize);
    let from_ms = first
        .checked_sub(1)
        .and_then(|i| summary.reports.get(i))
        .map_or(start_ms, |r| r.done_ms);
    let to_ms = steady.last().map_or(from_ms, |r| r.done_ms);
    let secs = ((to_ms - from_ms) as f64 / 1e3).max(1e-3);
    let all: u64 = summary.records_in.max(1);
    Ok(Measure {
        records_per_s: records as f64 / secs,
        cpu_s_per_million: cpu / (all as f64 / 1e6),
        peak_rss: peak.load(Ordering::Relaxed),
        processing: steady.iter().map(|r| r.processing).sum::<Duration>()
            / steady.len().max(1) as u32,
        first_batch: summary.first_batch.unwrap_or_default(),
    })
}

/// Runs every workload both ways and returns the report.
pub fn run(plugins: &Path, quick: bool, only: Option<&str>) -> Result<String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::io("starting the async runtime"))?;
    let dir = std::env::temp_dir().join(format!("sluice-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(Error::io("creating a bench directory"))?;
    let batches = if quick { 5 } else { 12 };
    let rounds = if quick { 1 } else { 2 };
    let mut report = String::new();
    let _ = writeln!(
        report,
        "sluice bench pipeline: generator (2 partitions, 100-byte lines, full speed) at 1 s batches, {batches} batches a run, {rounds} round(s), plugin and native alternating; steady state drops the first 2 and the last batch"
    );
    let _ = writeln!(
        report,
        "{:<22} {:>14} {:>12} {:>12} {:>14} {:>12}",
        "workload", "records/s", "CPU-s/M rec", "peak RSS MiB", "processing ms", "1st batch ms"
    );
    let started = Instant::now();
    let idle_rss = rss_bytes();
    let _ = writeln!(
        report,
        "(the process's RSS before any pipeline: {:.1} MiB; memory budget {BUDGET})",
        idle_rss as f64 / (1 << 20) as f64
    );
    for workload in ["uppercase", "wordcount"] {
        if only.is_some_and(|o| o != workload) {
            continue;
        }
        let mut wasm = Vec::new();
        let mut native = Vec::new();
        for _ in 0..rounds {
            wasm.push(measure(&dir, plugins, workload, false, batches, &rt)?);
            native.push(measure(&dir, plugins, workload, true, batches, &rt)?);
        }
        let best = |v: &[Measure]| {
            v.iter()
                .copied()
                .max_by(|a, b| a.records_per_s.total_cmp(&b.records_per_s))
                .unwrap_or_default()
        };
        let (w, n) = (best(&wasm), best(&native));
        for (label, m) in [
            (format!("{workload} (wasm)"), w),
            (format!("{workload} (native)"), n),
        ] {
            let _ = writeln!(
                report,
                "{:<22} {:>14.0} {:>12.3} {:>12.1} {:>14.1} {:>12.0}",
                label,
                m.records_per_s,
                m.cpu_s_per_million,
                m.peak_rss as f64 / (1 << 20) as f64,
                m.processing.as_secs_f64() * 1e3,
                m.first_batch.as_secs_f64() * 1e3
            );
        }
        let _ = writeln!(
            report,
            "{workload} ratio wasm/native throughput: {:.2}",
            w.records_per_s / n.records_per_s.max(1.0)
        );
    }
    let _ = writeln!(report, "(ran {:.0} s)", started.elapsed().as_secs_f64());
    let _ = std::fs::remove_dir_all(&dir);
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(report)
}
