//! `sluice replay PIPELINE --batches A..B [--plugin NAME=FILE]... --out LOCATION`: recorded
//! batches recomputed from their logged ranges into a separate output, for a backfill or to
//! compare plugin versions on history (issue #11: batch and stream share the code).
//!
//! Each batch is recomputed the way a restart recomputes its unfinished batch
//! ([`crate::driver::recover`]): from exactly the records its checkpoint entry records (the
//! source read again from the batch's first offset up to a fence at its end, or its blocks
//! taken from the write-ahead log), with the plugin versions it recorded (loaded by digest
//! from the copies the compiled-component cache keeps), except the plugins `--plugin` names,
//! which run the given file instead. The steps and the batch job are the pipeline's own.
//!
//! What a replay touches: it reads the checkpoint log (never appends, never fences, so the
//! pipeline may be running) and the source or write-ahead log (read-only); it writes only
//! under `--out`: the pipeline's files-sink format, one object per batch and partition
//! (`<out>/<stream>/batch-<id>-part-<p>.<ext>`, with the same commit records), and the
//! replay's dead letters under `<out>/dead-letters`. The live sinks and dead letters are
//! never written. The module's files: [`out`] (the out location and its checks),
//! [`steps`] (which plugin versions a batch runs), [`recompute`] (one batch).

pub mod out;
pub mod recompute;
pub mod steps;

use std::path::PathBuf;
use std::str::FromStr;

use crate::checkpoint::{CheckpointError, CheckpointLog, Entry};
use crate::plan::Plan;

/// What `sluice replay` was asked.
#[derive(Debug, Clone)]
pub struct Options {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// Which recorded batches.
    pub batches: BatchRange,
    /// `--plugin NAME=FILE`: these plugins run FILE instead of their recorded version.
    pub plugins: Vec<(String, PathBuf)>,
    /// `--out`: a directory or store URL.
    pub out: String,
    /// `--overwrite`: clear a non-empty out location first.
    pub overwrite: bool,
    /// `--plugins`: the plugin directory (overrides the file's `plugins`).
    pub plugin_dir: Option<PathBuf>,
    /// `--cache-dir`: the compiled-component cache (it holds the recorded versions).
    pub cache_dir: Option<PathBuf>,
}

/// A range of batch ids, both ends included: `A..B` (B excluded), `A..=B`, or `N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchRange {
    /// The first batch.
    pub first: u64,
    /// The last batch (included).
    pub last: u64,
}

impl FromStr for BatchRange {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let num = |t: &str| {
            t.trim().parse::<u64>().map_err(|_| {
                format!("{s:?} is not a batch range: give A..B (B excluded), A..=B or N")
            })
        };
        let (first, last) = if let Some((a, b)) = s.split_once("..=") {
            (num(a)?, num(b)?)
        } else if let Some((a, b)) = s.split_once("..") {
            let b = num(b)?;
            let last = b
                .checked_sub(1)
                .ok_or_else(|| format!("{s:?} holds no batch"))?;
            (num(a)?, last)
        } else {
            let n = num(s)?;
            (n, n)
        };
        if first > last {
            return Err(format!("{s:?} holds no batch (it ends before it starts)"));
        }
        Ok(BatchRange { first, last })
    }
}

impl std::fmt::Display for BatchRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}..={}", self.first, self.last)
    }
}

/// A replay could not be done. Each says whose fault it is ([`crate::error`]).
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The pipeline file is wrong.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// An argument is wrong: the range is not in the log, a `--plugin` names no step, the out
    /// location is refused.
    #[error("{0}")]
    Refused(String),
    /// A plugin to run cannot be had: a `--plugin` file refused at load or `init`, or a
    /// recorded version the cache no longer keeps.
    #[error("{0}")]
    Plugin(String),
    /// A batch's records are no longer where its entry says (the source or the write-ahead log
    /// has let them go).
    #[error("{0}")]
    NotRetained(String),
    /// The checkpoint log could not be read.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The write-ahead log could not be read.
    #[error(transparent)]
    Wal(#[from] crate::wal::WalError),
    /// A batch failed.
    #[error(transparent)]
    Job(#[from] crate::scheduler::job::JobError),
    /// The out location's store failed.
    #[error("{0}")]
    Store(String),
}

/// A `Result` with [`ReplayError`].
pub type Result<T> = std::result::Result<T, ReplayError>;

/// What a replay did.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    /// The batches recomputed.
    pub batches: u64,
    /// Records read.
    pub records_in: u64,
    /// Records written (by the out sink).
    pub records_out: u64,
    /// Records dead-lettered (under the out location).
    pub dead_letters: u64,
    /// Where the output went.
    pub out: String,
    /// The stream (the output's directory under `out`).
    pub stream: String,
    /// The plugins run instead of their recorded version: name and sha256.
    pub overrides: Vec<(String, String)>,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "Replayed {} batches: {} records in, {} out, {} dead-lettered.",
            self.batches, self.records_in, self.records_out, self.dead_letters
        )?;
        for (name, digest) in &self.overrides {
            writeln!(f, "Plugin {name} ran sha256 {digest} (--plugin).")?;
        }
        writeln!(f, "Written to {}/{}/", self.out, self.stream)?;
        if self.dead_letters > 0 {
            writeln!(f, "Dead letters in {}/dead-letters/", self.out)?;
        }
        Ok(())
    }
}

/// Runs a replay (see the module doc) and says what it did.
pub fn run(opts: &Options) -> crate::error::Result<Summary> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sluice-io")
        .build()
        .map_err(crate::error::Error::io("starting the async runtime"))?;
    let mut plan = crate::plan::build_with(
        &opts.pipeline,
        opts.plugin_dir.as_deref(),
        opts.cache_dir.as_deref(),
        rt.handle(),
    )
    .map_err(ReplayError::from)?;
    let log = CheckpointLog::new(plan.checkpoint.clone().ok_or_else(|| {
        ReplayError::Refused(format!(
            "{}: `[checkpoint] enabled = false`, so no batch was recorded: there is nothing to replay",
            opts.pipeline.display()
        ))
    })?);
    let entries = rt.block_on(recorded(&log, opts.batches))?;
    let overrides = steps::Overrides::load(&plan, &opts.plugins)?;
    let out = out::prepare(&mut plan, &opts.out, opts.overwrite, rt.handle())?;
    tracing::info!(batches = %opts.batches, out = %out, stream = %plan.stream, "Replaying recorded batches into a separate output; the live sinks are not touched.");
    let done = replay_all(&plan, &rt, &entries, &overrides);
    for sink in &plan.sinks {
        sink.stop(&plan.stream);
    }
    let mut summary = done?;
    summary.out = out.to_string();
    summary.stream = plan.stream.clone();
    summary.overrides = overrides.digests();
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    Ok(summary)
}

/// Recomputes `entries` in order (the first one's predecessor first, when recorded, for where
/// the source stood).
fn replay_all(
    plan: &Plan,
    rt: &tokio::runtime::Runtime,
    entries: &Recorded,
    overrides: &steps::Overrides,
) -> Result<Summary> {
    let mut summary = Summary::default();
    let mut before = entries.before.as_ref();
    let mut source = recompute::Source::new(plan, rt)?;
    for entry in &entries.batches {
        if before.is_none() && entry.batch > 0 {
            recompute::check_positions_known(entry)?;
        }
        let steps = steps::for_batch(plan, entry, overrides)?;
        let closed = source.recompute(entry, before, steps)?;
        tracing::info!(
            batch = entry.batch,
            records_in = closed.records_in,
            records_out = closed.records_out,
            dead_letters = closed.dead_letters,
            "Batch replayed."
        );
        summary.batches += 1;
        summary.records_in += closed.records_in;
        summary.records_out += closed.records_out;
        summary.dead_letters += closed.dead_letters;
        before = Some(entry);
    }
    Ok(summary)
}

/// The entries of the batches to replay, and the entry before the first (if recorded).
#[derive(Debug)]
pub struct Recorded {
    /// The entry of the batch before the range, when the log still has it.
    pub before: Option<Entry>,
    /// The range's entries, in order.
    pub batches: Vec<Entry>,
}

/// Reads the entries of `range` from the log (read-only). A batch the log does not hold is
/// refused, naming what it holds.
pub async fn recorded(log: &CheckpointLog, range: BatchRange) -> Result<Recorded> {
    let held = log.list().await?;
    let (Some(&oldest), Some(&newest)) = (held.first(), held.last()) else {
        return Err(ReplayError::Refused(format!(
            "the checkpoint log at {} holds no batch: there is nothing to replay",
            log.location()
        )));
    };
    let missing: Vec<u64> = (range.first..=range.last)
        .filter(|b| held.binary_search(b).is_err())
        .take(3)
        .collect();
    if !missing.is_empty() {
        let why = if range.first < oldest {
            "older entries were compacted away (the log keeps the batches since the last snapshot, every 64 batches)"
        } else if range.last > newest {
            "it has not recorded them yet"
        } else {
            "entries inside the range are missing (moved aside as damaged?)"
        };
        return Err(ReplayError::Refused(format!(
            "batches {range} are not all in the checkpoint log at {} (batch {} is not): it holds batches {oldest}..={newest}; {why}",
            log.location(),
            missing[0]
        )));
    }
    let mut batches = Vec::new();
    for b in range.first..=range.last {
        batches.push(log.read(b).await.map_err(|e| compacted(e, b, &held))?);
    }
    let before = match range.first.checked_sub(1) {
        Some(b) if held.binary_search(&b).is_ok() => log.read(b).await.ok(),
        _ => None,
    };
    Ok(Recorded { before, batches })
}

/// An entry that was listed and then could not be read: the running driver compacted it.
fn compacted(e: CheckpointError, batch: u64, held: &[u64]) -> ReplayError {
    match e {
        CheckpointError::Store { location, message } if message.contains("not found") => {
            ReplayError::Refused(format!(
                "the entry of batch {batch} ({location}) was deleted while the replay read it: the running pipeline compacted its log; the oldest batches listed were {:?}; replay a newer range",
                held.first()
            ))
        }
        e => e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(s: &str) -> std::result::Result<(u64, u64), String> {
        s.parse::<BatchRange>().map(|r| (r.first, r.last))
    }

    #[test]
    fn a_range_is_exclusive_inclusive_or_one_batch() {
        assert_eq!(range("1..11"), Ok((1, 10)));
        assert_eq!(range("1..=10"), Ok((1, 10)));
        assert_eq!(range("7"), Ok((7, 7)));
        assert_eq!(range(" 3 ..= 4 "), Ok((3, 4)));
    }

    #[test]
    fn an_empty_or_malformed_range_is_refused_with_the_forms_it_takes() {
        assert!(range("5..5").unwrap_err().contains("holds no batch"));
        assert!(range("0..0").unwrap_err().contains("holds no batch"));
        assert!(range("9..=3").unwrap_err().contains("ends before"));
        assert!(range("a..b").unwrap_err().contains("A..=B"));
        assert!(range("1..").unwrap_err().contains("A..B"));
    }
}
