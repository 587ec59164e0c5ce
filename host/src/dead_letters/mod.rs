//! `sluice dead-letters list | show | replay`: a pipeline's dead letters read back, and chosen
//! ones sent through the pipeline's current steps again after a fix (a fixed plugin, a swap).
//!
//! The layout under `[dead-letter] path` (default `dead-letters`), on any store:
//!
//! - `<stream>/batch-<id>.jsonl`: one batch's letters, one JSON object a line, as written by
//!   [`crate::sink::dead_letter`];
//! - `<stream>/replay-<n>/batch-<id>.jsonl`: the letters that failed again in replay `n` (its
//!   batch ids are the replay's own, counted from 0);
//! - `<stream>/_replays/replay-<n>.json`: what replay `n` took; creating it (create-if-absent)
//!   is what gives a replay its number;
//! - `<stream>/_replayed/<file>/<letter>.json`: one marker per replayed letter, created if
//!   absent before the letter is sent, so no two replays send the same letter (unless
//!   `--again`).
//!
//! The rooms: [`read`] (parsing the letters, the store and its markers), [`show`] (`list` and
//! `show`), [`replay`].

pub mod read;
pub mod replay;
pub mod show;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use crate::config::{ConfigError, PipelineFile};
use crate::error::Error;
use crate::scheduler::job::JobError;
use crate::store::Location;
use read::{Letter, LetterFile, Store};

/// Reading or replaying dead letters failed.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    /// A line of a dead-letter file is not a dead letter: the user's to look at (the file was
    /// changed by hand or written by something else).
    #[error("{file} line {line}: not a dead letter: {message}")]
    Malformed {
        /// The file, as the store names it.
        file: String,
        /// The line, from 1.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The store failed; trying again may help.
    #[error("dead letters {location}: {message}")]
    Store {
        /// The object or prefix.
        location: String,
        /// What failed.
        message: String,
    },
    /// The replay was refused (nothing to replay, all chosen letters replayed before).
    #[error("{0}")]
    Refused(String),
    /// The pipeline file is wrong, or its plugins or stores cannot be had.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A replayed batch failed (a plugin that fails on everything, a sink).
    #[error("{replay}: {source}")]
    Job {
        /// The replay, and what of it was committed before.
        replay: String,
        /// The batch's error.
        source: JobError,
    },
}

/// `Result` with [`DeadLetterError`].
pub type Result<T> = std::result::Result<T, DeadLetterError>;

/// Which letters a command takes: every letter matching all the given fields, in file order
/// (files by name, then lines), at most `limit` of them.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Filter {
    /// Only letters of this batch (their `batch` field).
    #[arg(long)]
    pub batch: Option<u64>,
    /// Only letters rejected by this step: its plugin's name (`plugin`), or `source` for
    /// letters of the source (no plugin).
    #[arg(long)]
    pub step: Option<String>,
    /// Only letters of this partition.
    #[arg(long)]
    pub partition: Option<u32>,
    /// At most this many letters.
    #[arg(long)]
    pub limit: Option<usize>,
}

impl Filter {
    /// Whether `letter` matches (the limit aside).
    pub fn matches(&self, letter: &Letter) -> bool {
        self.batch.is_none_or(|b| letter.batch == b)
            && self.partition.is_none_or(|p| letter.partition == p)
            && self.step.as_deref().is_none_or(|s| letter.step_name() == s)
    }

    /// The matching letters of `files`, in order, at most `limit`.
    pub fn select<'a>(&self, files: &'a [LetterFile]) -> Vec<&'a Letter> {
        files
            .iter()
            .flat_map(|f| &f.letters)
            .filter(|l| self.matches(l))
            .take(self.limit.unwrap_or(usize::MAX))
            .collect()
    }
}

/// `sluice dead-letters …`.
#[derive(Debug, clap::Subcommand)]
pub enum DeadLettersCommand {
    /// One line per dead-letter file (its batch, letters, how many were replayed, counts by
    /// step and reason), then the total.
    List {
        /// The pipeline file (its `[dead-letter] path` and stream are read).
        pipeline: PathBuf,
        /// Print JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// The chosen letters whole: file and line, batch, partition and offset, step, plugin and
    /// digest, reason, key, timestamp, whether replayed, and the value (text when it is UTF-8,
    /// else its bytes escaped and in base64).
    Show {
        /// The pipeline file.
        pipeline: PathBuf,
        /// Which letters.
        #[command(flatten)]
        filter: Filter,
        /// Print JSON (an array of the letters as written, with `file`, `line`, `replayed_by`).
        #[arg(long)]
        json: bool,
    },
    /// Sends the chosen letters through the pipeline's current steps (from the step that
    /// rejected each) into its sinks, as replay N: output under `<stream>/replay-N/` of each
    /// files sink, letters failing again under `<stream>/replay-N/` of the dead letters. A
    /// letter already replayed is skipped; when all are, the replay is refused (exit 2).
    Replay {
        /// The pipeline file.
        pipeline: PathBuf,
        /// Which letters.
        #[command(flatten)]
        filter: Filter,
        /// Say what would be replayed, and replay nothing.
        #[arg(long)]
        dry_run: bool,
        /// Replay letters that were replayed before too.
        #[arg(long)]
        again: bool,
        /// The plugin directory (overrides the file's `plugins`).
        #[arg(long)]
        plugins: Option<PathBuf>,
    },
}

/// Runs a `sluice dead-letters` command, printing to stdout; `cache_dir` is `--cache-dir`.
pub fn run(cmd: DeadLettersCommand, cache_dir: Option<PathBuf>) -> crate::error::Result<()> {
    match cmd {
        DeadLettersCommand::List { pipeline, json } => {
            print!("{}", show::list(&pipeline, json)?);
        }
        DeadLettersCommand::Show {
            pipeline,
            filter,
            json,
        } => print!("{}", show::show(&pipeline, &filter, json)?),
        DeadLettersCommand::Replay {
            pipeline,
            filter,
            dry_run,
            again,
            plugins,
        } => {
            let opts = replay::Options {
                filter,
                dry_run,
                again,
                plugins,
                cache_dir,
            };
            print!("{}", replay::run(&pipeline, &opts)?);
        }
    }
    Ok(())
}

/// The dead letters of the pipeline file at `pipeline`, located as a run locates them (its
/// `[dead-letter] path`, relative to the file); `None` when that is a local directory that
/// does not exist (nothing was ever dead-lettered there).
fn locate(pipeline: &Path) -> std::result::Result<Option<Store>, Error> {
    let file = PipelineFile::load(pipeline)?;
    let base = pipeline
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let base = std::fs::canonicalize(base).unwrap_or_else(|_| base.to_owned());
    let spec = file
        .dead_letter
        .as_ref()
        .map_or("dead-letters", |d| d.path.as_str());
    if !spec.contains("://") && !base.join(spec).exists() {
        return Ok(None);
    }
    let at = Location::resolve(spec, "dead-letter.path", &base, false).map_err(Error::Usage)?;
    Ok(Some(Store::new(at, file.source.name())))
}

/// A runtime for the store's calls.
fn io_runtime() -> std::result::Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(Error::io("starting the async runtime"))
}
