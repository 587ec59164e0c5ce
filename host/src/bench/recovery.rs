//! `sluice bench recovery`: how long a driver killed with SIGKILL takes to commit again, what
//! a checkpoint costs per batch, and what exactly-once output costs in throughput.
//!
//! - **Recovery** (issue #9's goal: under 1 s): each trial starts `sluice run` (this binary) as
//!   a child on a temporary pipeline, generator at a fixed rate over 2 partitions →
//!   `uppercase` → files sink, 1 s batches; waits for 3 batches in its `--report`; SIGKILLs it
//!   at a phase of the next interval that moves from trial to trial; starts the same command
//!   again; and measures from the kill to the first batch the new process commits. The
//!   compiled-component cache is warm (a `sluice validate` runs first). Also measured: start
//!   to first batch of the first process.
//! - **Spark**, with `--spark`: after each sluice trial, one of Spark's, from
//!   `bench/recovery.py` (the DStream job of `bench/` restarted from its checkpoint directory).
//! - **Checkpoint cost**: the reports' `checkpoint_ms` per batch (when the build writes it),
//!   with the checkpoint on local disk, and on Azurite when `SLUICE_AZURITE_CONTAINER` is set
//!   (one more set of trials, `[checkpoint] path = "az://…"`).
//! - **Exactly-once cost**: the same files pipeline with the generator at full speed and a
//!   `limit`, with checkpoints and without (`[checkpoint] enabled = false`), alternating.

mod spark;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

use super::child::{Batch, RunCommand};
pub use spark::default_bench_dir;

/// Batches the first process commits before it is killed.
pub const BATCHES_BEFORE_KILL: usize = 3;

/// How long a process gets to commit the batches a trial waits for.
const BATCH_TIMEOUT: Duration = Duration::from_secs(60);

/// What `sluice bench recovery` is asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// The plugin directory (holding `uppercase.wasm`).
    pub plugins: PathBuf,
    /// The compiled-component cache the children use, when not the default.
    pub cache_dir: Option<PathBuf>,
    /// Kill-and-restart trials (each system, local disk).
    pub trials: u32,
    /// Fewer trials, one exactly-once round, a smaller input.
    pub quick: bool,
    /// Also run Spark's trials, alternating with sluice's.
    pub spark: bool,
    /// The checkout's `bench/` directory (for `--spark`).
    pub bench_dir: PathBuf,
    /// Lines per second of the generator, over all partitions.
    pub rate: u64,
}

/// The measures of one kill-and-restart trial.
#[derive(Debug, Clone, Default)]
pub struct Trial {
    /// From the SIGKILL to the first batch committed by the restarted process, ms.
    pub recovery_ms: f64,
    /// From the first process's start to its first committed batch, ms.
    pub first_batch_ms: f64,
    /// The id of the first batch after the restart (0 when it started over).
    pub resumed_at: Option<u64>,
    /// `checkpoint_ms` of every batch of both processes that reported one.
    pub checkpoint_ms: Vec<f64>,
}

/// Where a pipeline keeps its checkpoint, and whether it keeps one.
#[derive(Debug, Clone)]
struct PipelineSpec {
    /// Generator lines per second per partition; 0 for full speed.
    rate_per_partition: u64,
    /// Generator lines per partition, then it ends.
    limit: Option<u64>,
    /// `[checkpoint] path`.
    checkpoint: String,
    /// `[checkpoint] enabled`, when written.
    checkpoint_enabled: Option<bool>,
}

const PARTITIONS: u64 = 2;

fn pipeline_text(plugins: &Path, spec: &PipelineSpec) -> String {
    let limit = spec
        .limit
        .map_or(String::new(), |l| format!("limit = {l}\n"));
    let enabled = spec
        .checkpoint_enabled
        .map_or(String::new(), |e| format!("enabled = {e}\n"));
    format!(
        "# Written by sluice bench recovery.\nversion = 1\nname = \"bench-recovery\"\nplugins = {plugins:?}\nbatch-interval = \"1s\"\n\n[source]\nkind = \"generator\"\npartitions = {PARTITIONS}\nrate = {rate}\n{limit}\n[[transform]]\nplugin = \"uppercase\"\n\n[[sink]]\nkind = \"files\"\npath = \"out\"\n\n[checkpoint]\npath = {checkpoint:?}\n{enabled}",
        plugins = plugins.display().to_string(),
        rate = spec.rate_per_partition,
        checkpoint = spec.checkpoint,
    )
}

fn write_pipeline(dir: &Path, text: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(Error::io("creating a bench directory"))?;
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, text).map_err(Error::io("writing a bench pipeline"))?;
    Ok(path)
}

/// One sluice trial in `dir`: run, SIGKILL `phase` after the third committed batch, restart.
fn sluice_trial(cmd: &RunCommand, dir: &Path, text: &str, phase: Duration) -> Result<Trial> {
    let pipeline = write_pipeline(dir, text)?;
    let mut first = cmd.start(&pipeline, &dir.join("r1.jsonl"), &dir.join("run1.log"))?;
    first.wait_batches(BATCHES_BEFORE_KILL, BATCH_TIMEOUT)?;
    std::thread::sleep(phase);
    let killed_ms = first.kill()?;
    let before = first.batches();
    let mut second = cmd.start(&pipeline, &dir.join("r2.jsonl"), &dir.join("run2.log"))?;
    second.wait_batches(1, BATCH_TIMEOUT)?;
    second.kill()?;
    let after = second.batches();
    Ok(Trial {
        recovery_ms: (after[0].done_ms - killed_ms) as f64,
        first_batch_ms: (before[0].done_ms - first.started_ms) as f64,
        resumed_at: Some(after[0].id),
        checkpoint_ms: before
            .iter()
            .chain(&after)
            .filter_map(|b| b.checkpoint_ms)
            .collect(),
    })
}

/// The kill phase of trial `i` of `n`: spread over one batch interval.
fn phase(i: u32, n: u32) -> Duration {
    Duration::from_millis(1000 * u64::from(i) / u64::from(n.max(1)))
}

/// The trials of one configuration (`label`), in order.
#[derive(Debug, Default)]
struct TrialSet {
    label: String,
    trials: Vec<Trial>,
}

impl TrialSet {
    fn values(&self, f: impl Fn(&Trial) -> f64) -> Vec<f64> {
        self.trials.iter().map(f).collect()
    }

    fn checkpoint_ms(&self) -> Vec<f64> {
        self.trials
            .iter()
            .flat_map(|t| t.checkpoint_ms.iter().copied())
            .collect()
    }
}

/// The `p`th percentile of `values` (linear between ranks); none when empty.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let k = (v.len() - 1) as f64 * p / 100.0;
    let (lo, hi) = (k.floor() as usize, k.ceil() as usize);
    Some(v[lo] + (v[hi] - v[lo]) * (k - lo as f64))
}

/// Records per second of a run that ended by itself: every record over the time from the
/// process's start to the commit of its last batch with records. Start-up is in it, the same
/// for both arms; the batches' own times are not, because the generator outruns the sink and
/// the first batch takes whatever a second of it made.
pub fn run_rate(batches: &[Batch], started_ms: i64) -> Option<f64> {
    let last = batches.iter().rev().find(|b| b.records_in > 0)?;
    let records: u64 = batches.iter().map(|b| b.records_in).sum();
    let span_ms = last.done_ms - started_ms;
    (span_ms > 0).then(|| records as f64 * 1e3 / span_ms as f64)
}

/// Records per second of processing: every record over the sum of the `processing_ms` of the
/// batches with records (which includes each batch's commit and checkpoint write). With the
/// generator outrunning the sink the batches run back to back, so this is the throughput, free
/// of the up-to-one-interval rounding of a wall-clock measure over a short run.
pub fn processing_rate(batches: &[Batch]) -> Option<f64> {
    let busy: Vec<&Batch> = batches.iter().filter(|b| b.records_in > 0).collect();
    let records: u64 = busy.iter().map(|b| b.records_in).sum();
    let ms: f64 = busy.iter().map(|b| b.processing_ms).sum();
    (ms > 0.0).then(|| records as f64 * 1e3 / ms)
}

/// Runs the whole benchmark and returns its report.
pub fn run(opts: &Options) -> Result<String> {
    let started = Instant::now();
    let exe = std::env::current_exe().map_err(Error::io("finding the sluice binary"))?;
    let cmd = RunCommand {
        exe,
        plugins: std::path::absolute(&opts.plugins)
            .map_err(Error::io("resolving the plugin directory"))?,
        cache_dir: opts.cache_dir.clone(),
    };
    let root = std::env::temp_dir().join(format!("sluice-bench-recovery-{}", std::process::id()));
    let report = measure(opts, &cmd, &root)?;
    // Kept on failure: the error names the logs inside.
    let _ = std::fs::remove_dir_all(&root);
    Ok(format!(
        "{report}(ran {:.0} s)\n",
        started.elapsed().as_secs_f64()
    ))
}

/// What [`measure`] found, for the report.
#[derive(Debug, Default)]
struct Found {
    sets: Vec<TrialSet>,
    spark_version: Option<String>,
    exactly_once: Option<ExactlyOnce>,
}

fn measure(opts: &Options, cmd: &RunCommand, root: &Path) -> Result<String> {
    let spark = match opts.spark {
        true => Some(spark::Spark::prepare(&opts.bench_dir, opts.rate)?),
        false => None,
    };
    let local = PipelineSpec {
        rate_per_partition: opts.rate / PARTITIONS,
        limit: None,
        checkpoint: "checkpoints".to_owned(),
        checkpoint_enabled: None,
    };
    let text = pipeline_text(&cmd.plugins, &local);
    // Compiles the plugin into the cache, so that every start below finds it warm.
    let probe = write_pipeline(&root.join("warm"), &text)?;
    if let Err(why) = cmd.validate(&probe)? {
        return Err(Error::Usage(format!(
            "the benchmark pipeline {} is refused: {why}",
            probe.display()
        )));
    }
    let mut found = Found {
        spark_version: spark.as_ref().map(|s| s.version.clone()),
        ..Found::default()
    };
    let (ours, theirs) = local_trials(opts, cmd, root, &text, spark.as_ref())?;
    found.sets.push(ours);
    found.sets.extend(theirs);
    if let Ok(container) = std::env::var("SLUICE_AZURITE_CONTAINER") {
        found
            .sets
            .push(azurite_trials(opts, cmd, root, &local, &container)?);
    }
    found.exactly_once = Some(exactly_once(opts, cmd, root)?);
    Ok(format_report(opts, &found))
}

/// The local-disk trials, each sluice trial followed by a Spark one when asked.
fn local_trials(
    opts: &Options,
    cmd: &RunCommand,
    root: &Path,
    text: &str,
    spark: Option<&spark::Spark>,
) -> Result<(TrialSet, Option<TrialSet>)> {
    let mut ours = TrialSet {
        label: "sluice".to_owned(),
        ..TrialSet::default()
    };
    let mut theirs = spark.map(|_| TrialSet {
        label: "Spark".to_owned(),
        ..TrialSet::default()
    });
    for i in 0..opts.trials {
        let at = phase(i, opts.trials);
        let dir = root.join(format!("local-{i}"));
        let t = sluice_trial(cmd, &dir, text, at)?;
        tracing::info!(trial = i, recovery_ms = t.recovery_ms, first_batch_ms = t.first_batch_ms, resumed_at = ?t.resumed_at, "A sluice recovery trial finished.");
        ours.trials.push(t);
        let _ = std::fs::remove_dir_all(&dir);
        if let (Some(s), Some(set)) = (spark, theirs.as_mut()) {
            let t = s.trial(&root.join(format!("spark-{i}")), at.as_millis() as u64)?;
            tracing::info!(
                trial = i,
                recovery_ms = t.recovery_ms,
                first_batch_ms = t.first_batch_ms,
                "A Spark recovery trial finished."
            );
            set.trials.push(t);
        }
    }
    Ok((ours, theirs))
}

/// The trials with the checkpoint on Azurite, each under its own prefix.
fn azurite_trials(
    opts: &Options,
    cmd: &RunCommand,
    root: &Path,
    local: &PipelineSpec,
    container: &str,
) -> Result<TrialSet> {
    let n = if opts.quick { 1 } else { opts.trials };
    let mut set = TrialSet {
        label: "sluice, checkpoint on Azurite".to_owned(),
        ..TrialSet::default()
    };
    for i in 0..n {
        let spec = PipelineSpec {
            checkpoint: format!("az://{container}/bench-recovery-{}-{i}", std::process::id()),
            ..local.clone()
        };
        let dir = root.join(format!("azurite-{i}"));
        let t = sluice_trial(cmd, &dir, &pipeline_text(&cmd.plugins, &spec), phase(i, n))?;
        tracing::info!(
            trial = i,
            recovery_ms = t.recovery_ms,
            "A sluice recovery trial with the checkpoint on Azurite finished."
        );
        set.trials.push(t);
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(set)
}

/// The throughput of the exactly-once files pipeline with and without checkpoints.
#[derive(Debug, Default)]
struct ExactlyOnce {
    /// Lines per partition of each run.
    limit: u64,
    /// With checkpoints, one per round.
    on: Vec<Rate>,
    /// Without, one per round.
    off: Vec<Rate>,
    /// Why "without" could not be asked for (this build refuses `[checkpoint] enabled`).
    off_refused: Option<String>,
}

/// The two throughputs of one run, records per second.
#[derive(Debug, Clone, Copy, Default)]
struct Rate {
    /// Over the batches' processing time ([`processing_rate`]).
    processing: f64,
    /// Over the wall clock from the start ([`run_rate`]).
    wall: f64,
}

fn exactly_once(opts: &Options, cmd: &RunCommand, root: &Path) -> Result<ExactlyOnce> {
    let limit = if opts.quick { 3_000_000 } else { 8_000_000 };
    let rounds = if opts.quick { 1 } else { 3 };
    let spec = |enabled| PipelineSpec {
        rate_per_partition: 0,
        limit: Some(limit),
        checkpoint: "checkpoints".to_owned(),
        checkpoint_enabled: enabled,
    };
    let on = pipeline_text(&cmd.plugins, &spec(None));
    let mut off = pipeline_text(&cmd.plugins, &spec(Some(false)));
    let probe = write_pipeline(&root.join("off-probe"), &off)?;
    let off_refused = cmd.validate(&probe)?.err();
    if off_refused.is_some() {
        off = on.clone();
    }
    let mut found = ExactlyOnce {
        limit,
        off_refused,
        ..ExactlyOnce::default()
    };
    for r in 0..rounds {
        found
            .on
            .push(throughput(cmd, &root.join(format!("on-{r}")), &on)?);
        found
            .off
            .push(throughput(cmd, &root.join(format!("off-{r}")), &off)?);
        tracing::info!(
            round = r,
            on = found.on[r].processing,
            off = found.off[r].processing,
            "An exactly-once cost round finished."
        );
    }
    Ok(found)
}

fn throughput(cmd: &RunCommand, dir: &Path, text: &str) -> Result<Rate> {
    let pipeline = write_pipeline(dir, text)?;
    let mut run = cmd.start(&pipeline, &dir.join("r.jsonl"), &dir.join("run.log"))?;
    let batches = run.wait_end(Duration::from_secs(300))?;
    let rate = processing_rate(&batches)
        .zip(run_rate(&batches, run.started_ms))
        .ok_or_else(|| {
            Error::Usage(format!(
                "the exactly-once run in {} committed no records",
                dir.display()
            ))
        })?;
    let _ = std::fs::remove_dir_all(dir);
    Ok(Rate {
        processing: rate.0,
        wall: rate.1,
    })
}

fn format_report(opts: &Options, found: &Found) -> String {
    let mut out = String::new();
    let spark = found.spark_version.as_ref().map_or(String::new(), |v| {
        format!(", alternating with Spark {v} (DStream job of bench/, local[2], receiver WAL, restarted from its checkpoint directory)")
    });
    let _ = writeln!(
        out,
        "sluice bench recovery: generator {} lines/s ({PARTITIONS} partitions) -> uppercase -> files sink, 1 s batches; SIGKILL 0-1000 ms after the {BATCHES_BEFORE_KILL}rd committed batch, then the same command again; {} trial(s){spark}",
        opts.rate, opts.trials
    );
    let _ = writeln!(
        out,
        "{:<66} {:>9} {:>9} {:>9}",
        "measure, ms", "min", "median", "max"
    );
    for set in &found.sets {
        spread_line(
            &mut out,
            &format!("{}: SIGKILL -> first batch after restart", set.label),
            &set.values(|t| t.recovery_ms),
        );
        spread_line(
            &mut out,
            &format!("{}: start -> first batch", set.label),
            &set.values(|t| t.first_batch_ms),
        );
    }
    for set in found.sets.iter().filter(|s| s.label.starts_with("sluice")) {
        let ids: Vec<String> = set
            .trials
            .iter()
            .map(|t| t.resumed_at.map_or("?".to_owned(), |i| i.to_string()))
            .collect();
        let _ = writeln!(
            out,
            "{}: id of the first batch after each restart: {} (0: started over, not resumed)",
            set.label,
            ids.join(" ")
        );
    }
    checkpoint_lines(&mut out, found);
    summary_lines(&mut out, found);
    if let Some(eo) = &found.exactly_once {
        exactly_once_lines(&mut out, eo, opts.quick);
    }
    out
}

fn spread_line(out: &mut String, label: &str, values: &[f64]) {
    let at = |p| percentile(values, p).map_or("-".to_owned(), |v| format!("{v:.0}"));
    let _ = writeln!(
        out,
        "{label:<66} {:>9} {:>9} {:>9}",
        at(0.0),
        at(50.0),
        at(100.0)
    );
}

fn checkpoint_lines(out: &mut String, found: &Found) {
    for (set, place) in found.sets.iter().filter_map(|s| match s.label.as_str() {
        "sluice" => Some((s, "local disk")),
        l if l.ends_with("Azurite") => Some((s, "Azurite")),
        _ => None,
    }) {
        let ms = set.checkpoint_ms();
        match (percentile(&ms, 50.0), percentile(&ms, 99.0)) {
            (Some(_), Some(p99)) => {
                let mean = ms.iter().sum::<f64>() / ms.len() as f64;
                let _ = writeln!(
                    out,
                    "checkpoint cost per batch ({place}): mean {mean:.2} ms, p99 {p99:.2} ms over {} batches",
                    ms.len()
                );
            }
            _ => {
                let _ = writeln!(
                    out,
                    "checkpoint cost per batch ({place}): not measured (the reports have no checkpoint_ms)"
                );
            }
        }
    }
}

fn summary_lines(out: &mut String, found: &Found) {
    let median = |label: &str| {
        found
            .sets
            .iter()
            .find(|s| s.label == label)
            .and_then(|s| percentile(&s.values(|t| t.recovery_ms), 50.0))
    };
    let ours = median("sluice");
    if let Some(m) = ours {
        let verdict = if m < 1000.0 { "met" } else { "missed" };
        let _ = writeln!(
            out,
            "sluice recovery median: {m:.0} ms (goal under 1000 ms: {verdict})"
        );
    }
    if let Some(m) = median("Spark") {
        let _ = writeln!(out, "Spark recovery median: {m:.0} ms");
        if let Some(o) = ours {
            let _ = writeln!(
                out,
                "ratio Spark/sluice recovery (medians): {:.1}",
                m / o.max(1.0)
            );
        }
    }
}

fn exactly_once_lines(out: &mut String, eo: &ExactlyOnce, quick: bool) {
    let _ = writeln!(
        out,
        "exactly-once files pipeline (generator at full speed, {PARTITIONS} x {} lines, uppercase, files sink), {} round(s) alternating, medians:",
        eo.limit,
        eo.on.len()
    );
    let processing = |r: &Rate| r.processing;
    let wall = |r: &Rate| r.wall;
    for (what, f) in [
        ("records/s of processing", processing as fn(&Rate) -> f64),
        ("records/s, start to last commit", wall),
    ] {
        let on = percentile(&eo.on.iter().map(f).collect::<Vec<_>>(), 50.0).unwrap_or(0.0);
        let off = percentile(&eo.off.iter().map(f).collect::<Vec<_>>(), 50.0).unwrap_or(0.0);
        let _ = writeln!(
            out,
            "  {what:<32} checkpoints on {on:>10.0}, off {off:>10.0}, median of the rounds' on/off {:.2}",
            round_ratio(eo, f)
        );
    }
    // Each round's two runs ran back to back: their ratio is freer of the machine's drift
    // than a ratio of medians.
    let ratio = round_ratio(eo, processing);
    let verdict = match (quick, ratio >= 0.9) {
        (true, _) => "no verdict from one small --quick round",
        (false, true) => "met",
        (false, false) => "missed",
    };
    let _ = writeln!(
        out,
        "exactly-once throughput ratio on/off: {ratio:.2} (goal 0.9: {verdict})"
    );
    if let Some(why) = &eo.off_refused {
        let _ = writeln!(
            out,
            "  (this build refuses `[checkpoint] enabled = false`, so both arms ran with checkpoints: {why})"
        );
    }
}

/// The median over the rounds of on/off, each by `f`.
fn round_ratio(eo: &ExactlyOnce, f: fn(&Rate) -> f64) -> f64 {
    let ratios: Vec<f64> = eo
        .on
        .iter()
        .zip(&eo.off)
        .map(|(on, off)| f(on) / f(off).max(1.0))
        .collect();
    percentile(&ratios, 50.0).unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(id: u64, done_ms: i64, records_in: u64) -> Batch {
        Batch {
            id,
            done_ms,
            records_in,
            processing_ms: 0.0,
            checkpoint_ms: None,
        }
    }

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(percentile(&[4.0, 1.0, 3.0, 2.0], 50.0), Some(2.5));
        assert_eq!(percentile(&[5.0, 1.0, 3.0], 0.0), Some(1.0));
        assert_eq!(percentile(&[5.0, 1.0, 3.0], 100.0), Some(5.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn the_run_rate_counts_from_the_start_to_the_last_batch_with_records() {
        let b = [
            batch(0, 1_500, 3_000),
            batch(1, 2_500, 1_000),
            batch(2, 3_500, 0),
        ];
        assert_eq!(run_rate(&b, 500), Some(2_000.0));
        assert_eq!(run_rate(&b[2..], 500), None);
    }

    #[test]
    fn the_processing_rate_leaves_out_the_time_of_empty_batches() {
        let mut b = [batch(0, 0, 3_000), batch(1, 0, 1_000), batch(2, 0, 0)];
        b[0].processing_ms = 1_000.0;
        b[1].processing_ms = 1_000.0;
        b[2].processing_ms = 500.0;
        assert_eq!(processing_rate(&b), Some(2_000.0));
        assert_eq!(processing_rate(&b[2..]), None);
    }

    #[test]
    fn a_pipeline_without_checkpoints_says_so_in_its_checkpoint_table() {
        let spec = PipelineSpec {
            rate_per_partition: 0,
            limit: Some(10),
            checkpoint: "az://c/p".to_owned(),
            checkpoint_enabled: Some(false),
        };
        let text = pipeline_text(Path::new("/p"), &spec);
        let file: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(file["checkpoint"]["enabled"].as_bool(), Some(false));
        assert_eq!(file["checkpoint"]["path"].as_str(), Some("az://c/p"));
        assert_eq!(file["source"]["limit"].as_integer(), Some(10));
    }
}
