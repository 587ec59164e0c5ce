//! `sluice bench swap`: what a hot swap costs the stream (issue #11's goal: the batch at which
//! a swap happens is under 10 ms slower than the batches around it).
//!
//! One `sluice run` child (this binary) runs a generator at a fixed rate over 2 partitions →
//! the plugin `tag` → files sink, 500 ms batches, with the plugin directory watched every
//! 50 ms. `tag` starts as `uppercase`; every 1.5 s the benchmark writes the other of
//! `uppercase` and `identity` over `tag.wasm`. Afterwards it reads the batches' reports and
//! the checkpoint log (which records the version each batch ran) and measures, per swap:
//! - **swap delay**: the processing time of the first batch on the new version, less the
//!   median of the batches around it (3 before, 3 after, none of them a swap's);
//! - **landing to first batch**: from the file's write to the commit of the first batch on
//!   the new version (the watcher's looks, the check and compile, and the batch boundary).
//!
//! Both versions are compiled into the cache before the run (compiling is off the batch path
//! anyway, but a first compile on a busy machine could let one swap overtake another).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::child::{Batch, RunCommand, epoch_ms};
use super::recovery::percentile;
use crate::error::{Error, Result};

const BATCH_MS: u64 = 500;
const SPACING: Duration = Duration::from_millis(1500);

/// What `sluice bench swap` is asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// The plugin directory holding `uppercase.wasm` and `identity.wasm`.
    pub plugins: PathBuf,
    /// The compiled-component cache the child uses, when not the default.
    pub cache_dir: Option<PathBuf>,
    /// Swaps (default 10; 3 with `--quick`).
    pub swaps: usize,
    /// Lines per second of the generator, over its 2 partitions.
    pub rate: u64,
}

/// One swap, measured.
#[derive(Debug, Clone)]
struct Swap {
    batch: u64,
    delay_ms: f64,
    landing_ms: i64,
}

/// Runs the benchmark; the report to print.
pub fn run(opts: &Options) -> Result<String> {
    let root = std::env::temp_dir().join(format!("sluice-bench-swap-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let report = swap_trials(opts, &root);
    let _ = std::fs::remove_dir_all(&root);
    report
}

fn swap_trials(opts: &Options, root: &Path) -> Result<String> {
    let read = |name: &str| {
        let path = opts.plugins.join(format!("{name}.wasm"));
        std::fs::read(&path).map_err(Error::io(format!("reading {}", path.display())))
    };
    let versions = [read("uppercase")?, read("identity")?];
    let dir = root.join("plugins");
    let write = |path: PathBuf, bytes: &[u8]| {
        std::fs::write(&path, bytes).map_err(Error::io(format!("writing {}", path.display())))
    };
    std::fs::create_dir_all(&dir).map_err(Error::io("making the plugin directory"))?;
    write(
        dir.join("tag.toml"),
        b"version = 1\nname = \"tag\"\nplugin-version = \"1\"\n",
    )?;
    write(dir.join("tag.wasm"), &versions[0])?;
    let pipeline = root.join("pipeline.toml");
    write(pipeline.clone(), pipeline_text(opts.rate).as_bytes())?;
    let cmd = RunCommand {
        exe: std::env::current_exe().map_err(Error::io("finding this binary"))?,
        plugins: dir.clone(),
        cache_dir: opts.cache_dir.clone(),
    };
    // Both versions compiled into the cache first (`sluice validate` compiles the pipeline's
    // plugins): a first compile takes seconds on a busy machine, and a swap that waits for it
    // could be overtaken by the next one.
    for bytes in versions.iter().rev() {
        write(dir.join("tag.wasm"), bytes)?;
        cmd.validate(&pipeline)?.map_err(Error::Usage)?;
    }
    let report = root.join("report.jsonl");
    let mut driver = cmd.start(&pipeline, &report, &root.join("run.log"))?;
    driver.wait_batches(3, Duration::from_secs(60))?;
    let mut landed = Vec::new();
    for i in 0..opts.swaps {
        std::thread::sleep(SPACING);
        landed.push(epoch_ms());
        write(dir.join("tag.wasm"), &versions[(i + 1) % 2])?;
    }
    std::thread::sleep(SPACING);
    let batches = driver.batches();
    driver.kill()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::io("starting the async runtime"))?;
    let switched: BTreeSet<u64> = crate::checkpoint::show::history(&rt, &pipeline)?
        .into_iter()
        .filter(|c| c.plugin == "tag")
        .map(|c| c.batch)
        .collect();
    let swaps = measure_swaps(&batches, &switched, &landed);
    Ok(format_report(opts, &batches, &swaps))
}

fn pipeline_text(rate: u64) -> String {
    format!(
        "version = 1\nbatch-interval = \"{BATCH_MS}ms\"\nblock-interval = \"100ms\"\n\n[source]\nkind = \"generator\"\npartitions = 2\nrate = {}\n\n[[transform]]\nplugin = \"tag\"\n\n[[sink]]\nkind = \"files\"\npath = \"out\"\n\n[swap]\npoll-interval = \"50ms\"\n",
        rate / 2
    )
}

/// Each batch in `switched` (the first on a new version, from the checkpoint log), measured
/// against its neighbours and against the landing of the swap before it.
fn measure_swaps(batches: &[Batch], switched: &BTreeSet<u64>, landed: &[i64]) -> Vec<Swap> {
    let switched = |id: u64| switched.contains(&id);
    let by_id: BTreeMap<u64, &Batch> = batches.iter().map(|b| (b.id, b)).collect();
    let mut swaps = Vec::new();
    for b in batches.iter().filter(|b| switched(b.id)) {
        let around: Vec<f64> = (b.id.saturating_sub(3)..=b.id + 3)
            .filter(|&id| id != b.id && !switched(id))
            .filter_map(|id| by_id.get(&id).map(|n| n.processing_ms))
            .collect();
        let Some(median) = percentile(&around, 50.0) else {
            continue;
        };
        let landing = landed.iter().rev().find(|&&t| t <= b.done_ms);
        swaps.push(Swap {
            batch: b.id,
            delay_ms: b.processing_ms - median,
            landing_ms: landing.map_or(-1, |t| b.done_ms - t),
        });
    }
    swaps
}

fn format_report(opts: &Options, batches: &[Batch], swaps: &[Swap]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "sluice bench swap: generator {} lines/s over 2 partitions -> tag (uppercase <-> identity) -> files, {BATCH_MS} ms batches; {} swaps 1.5 s apart, {} batches",
        opts.rate,
        opts.swaps,
        batches.len()
    );
    let _ = writeln!(
        out,
        "{:>6}  {:>14}  {:>22}",
        "batch", "extra delay ms", "landing to batch ms"
    );
    for s in swaps {
        let _ = writeln!(
            out,
            "{:>6}  {:>14.2}  {:>22}",
            s.batch, s.delay_ms, s.landing_ms
        );
    }
    let delays: Vec<f64> = swaps.iter().map(|s| s.delay_ms).collect();
    let landings: Vec<f64> = swaps.iter().map(|s| s.landing_ms as f64).collect();
    let all: Vec<f64> = batches.iter().map(|b| b.processing_ms).collect();
    let show = |v: Option<f64>| v.map_or("n/a".to_owned(), |x| format!("{x:.2}"));
    let _ = writeln!(
        out,
        "batch processing ms, all batches: median {}, p90 {}",
        show(percentile(&all, 50.0)),
        show(percentile(&all, 90.0))
    );
    let _ = writeln!(
        out,
        "swaps seen in the checkpoint log: {} of {}",
        swaps.len(),
        opts.swaps
    );
    let _ = writeln!(
        out,
        "swap delay: {} ms (median over the swaps; max {}; goal < 10 ms)",
        show(percentile(&delays, 50.0)),
        show(percentile(&delays, 100.0))
    );
    let _ = writeln!(
        out,
        "landing to first batch: {} ms median, max {}",
        show(percentile(&landings, 50.0)),
        show(percentile(&landings, 100.0))
    );
    out
}
