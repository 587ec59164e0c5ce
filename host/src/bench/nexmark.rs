//! `sluice bench nexmark`: the Nexmark queries on the `nexmark` source at full speed, in this
//! process, one after the other.
//!
//! Each query runs as a pipeline: `nexmark` source (2 partitions, `rate = 0`: as fast as the
//! memory budget lets it) → `nexmark-query` plugin → counting sink, 1 s batches, no checkpoint
//! log, for a fixed number of batches. Events per core is the events taken in over the CPU
//! seconds the process used meanwhile (user + system, from `/proc/self/stat`: the generator,
//! the plugin, the engine, everything); wall-time events/s is the events over the run's time.
//! Plugin compilation happens before the measurement starts.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::driver::{self, RunOptions, Shutdown};
use crate::error::{Error, Result};
use crate::plan;

/// One query of the benchmark: its name and the pipeline steps that compute it.
#[derive(Debug, Clone, Copy)]
pub struct Query {
    /// `q0`, `q1`, …
    pub name: &'static str,
    /// What it computes, for the report.
    pub what: &'static str,
    /// The `[[transform]]` tables of its pipeline.
    pub steps: &'static str,
}

/// The queries, in the order they run. q5 (hot items: bids counted per auction in sliding
/// windows of event time, the top auction(s) of each kept) and q7 (the highest bid's auction
/// and price per tumbling window) run the plugin for the per-record part and the host's
/// `event-window` step for the window, as `examples/nexmark/q5.toml` and `q7.toml` do.
pub const QUERIES: &[Query] = &[
    Query {
        name: "q0",
        what: "pass-through",
        steps: "[[transform]]\nplugin = \"nexmark-query\"\nparams = { query = \"q0\" }\n",
    },
    Query {
        name: "q1",
        what: "currency conversion",
        steps: "[[transform]]\nplugin = \"nexmark-query\"\nparams = { query = \"q1\" }\n",
    },
    Query {
        name: "q2",
        what: "selection",
        steps: "[[transform]]\nplugin = \"nexmark-query\"\nparams = { query = \"q2\" }\n",
    },
    Query {
        name: "q5",
        what: "hot items, sliding 10 s / 2 s event-time windows",
        steps: "[[transform]]\nplugin = \"nexmark-query\"\nparams = { query = \"q5\" }\n\n[[transform]]\nbuiltin = \"event-window\"\nwindow = \"sliding\"\nlength = \"10s\"\nslide = \"2s\"\naggregate = \"count\"\nallowed-lateness = \"4s\"\ntop = 1\n",
    },
    Query {
        name: "q7",
        what: "highest bid, tumbling 10 s event-time windows",
        steps: "[[transform]]\nplugin = \"nexmark-query\"\nparams = { query = \"q7\" }\n\n[[transform]]\nbuiltin = \"event-window\"\nwindow = \"tumbling\"\nlength = \"10s\"\naggregate = \"max\"\nallowed-lateness = \"4s\"\ntop = 1\n",
    },
];

/// The source's partitions in every run.
const PARTITIONS: u32 = 2;

/// What one query's run measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct Measure {
    /// Events taken in.
    pub events: u64,
    /// Records that reached the sink.
    pub out: u64,
    /// CPU seconds (user + system) of the process during the run.
    pub cpu_s: f64,
    /// The run's wall time.
    pub wall: Duration,
}

impl Measure {
    /// Events per CPU second.
    pub fn per_core(&self) -> f64 {
        self.events as f64 / self.cpu_s.max(1e-3)
    }

    /// Events per wall-clock second.
    pub fn per_second(&self) -> f64 {
        self.events as f64 / self.wall.as_secs_f64().max(1e-3)
    }
}

/// The pipeline file of `query`.
pub fn pipeline_text(query: &Query) -> String {
    format!(
        "version = 1\nname = \"bench-nexmark-{}\"\nbatch-interval = \"1s\"\nmemory-budget = \"{}\"\n\n[source]\nkind = \"nexmark\"\npartitions = {PARTITIONS}\nrate = 0\n\n{}\n[[sink]]\nkind = \"count\"\n\n[checkpoint]\nenabled = false\n",
        query.name,
        super::pipeline::BUDGET,
        query.steps
    )
}

/// Runs `query` for `batches` batches and measures it.
pub fn measure(
    dir: &Path,
    plugins: &Path,
    query: &Query,
    batches: u64,
    rt: &tokio::runtime::Runtime,
) -> Result<Measure> {
    let file = dir.join(format!("{}.toml", query.name));
    std::fs::write(&file, pipeline_text(query)).map_err(Error::io("writing a bench pipeline"))?;
    let plan = plan::build(&file, Some(plugins), rt.handle())?;
    let cpu0 = super::pipeline::cpu_seconds();
    let t0 = Instant::now();
    let summary = driver::run(
        &plan,
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
    Ok(Measure {
        events: summary.records_in,
        out: summary.records_out,
        cpu_s: super::pipeline::cpu_seconds() - cpu0,
        wall: t0.elapsed(),
    })
}

/// Runs every query and returns the report: one line per query.
pub fn run(plugins: &Path, quick: bool) -> Result<String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::io("starting the async runtime"))?;
    let dir = std::env::temp_dir().join(format!("sluice-bench-nexmark-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(Error::io("creating a bench directory"))?;
    let batches = if quick { 3 } else { 10 };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut report = String::new();
    let _ = writeln!(
        report,
        "sluice bench nexmark: nexmark source ({PARTITIONS} partitions, full speed) -> nexmark-query -> count, 1 s batches, {batches} batches a query, {cores} cores; per core = events / CPU seconds (user + system of this process, /proc/self/stat)"
    );
    let started = Instant::now();
    for query in QUERIES {
        let m = measure(&dir, plugins, query, batches, &rt)?;
        let _ = writeln!(
            report,
            "{}: {:.0} events/s/core, {:.0} events/s wall ({}: {} events in, {} out, {:.2} CPU-s, {:.2} s)",
            query.name,
            m.per_core(),
            m.per_second(),
            query.what,
            m.events,
            m.out,
            m.cpu_s,
            m.wall.as_secs_f64()
        );
    }
    let _ = writeln!(report, "(ran {:.0} s)", started.elapsed().as_secs_f64());
    let _ = std::fs::remove_dir_all(&dir);
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(report)
}
