//! The window steps' settings: `window`, `count-by-window` and `reduce-by-key-and-window`,
//! Spark Streaming's windowed operations over batch time.
//!
//! A window is `length` long and moves by `slide`; both are multiples of the batch interval,
//! so a window is a whole number of batches, as in Spark (`window(windowDuration,
//! slideDuration)`), and it is computed at the close of every `slide / batch-interval`-th
//! batch.

use std::time::Duration;

use serde::Deserialize;

/// What `reduce-by-key-and-window` computes per key, over the values of the key's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Aggregate {
    /// How many records.
    Count,
    /// The sum of the values (decimal numbers; integers stay exact).
    Sum,
    /// The smallest value.
    Min,
    /// The largest value.
    Max,
    /// The mean of the values.
    Mean,
    /// How many distinct values.
    DistinctCount,
}

impl Aggregate {
    /// Its name in the pipeline file.
    pub fn name(self) -> &'static str {
        match self {
            Aggregate::Count => "count",
            Aggregate::Sum => "sum",
            Aggregate::Min => "min",
            Aggregate::Max => "max",
            Aggregate::Mean => "mean",
            Aggregate::DistinctCount => "distinct-count",
        }
    }

    /// Whether an expired batch can be taken out of the window (Spark's inverse function):
    /// a count, a sum, a mean and a distinct count (counted per value) can; a minimum or a
    /// maximum cannot.
    pub fn invertible(self) -> bool {
        !matches!(self, Aggregate::Min | Aggregate::Max)
    }

    /// Whether it reads the values as numbers.
    pub fn numeric(self) -> bool {
        matches!(
            self,
            Aggregate::Sum | Aggregate::Min | Aggregate::Max | Aggregate::Mean
        )
    }
}

/// A window's length and slide, in batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    /// Batches in a window.
    pub length: u32,
    /// Batches between two windows.
    pub slide: u32,
}

/// What a window step outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// `window`: every record of the window's batches.
    Records,
    /// `count-by-window`: one record, the number of records in the window.
    Count,
    /// `reduce-by-key-and-window`: one record per key, its aggregate over the window.
    ReduceByKey {
        /// What is computed.
        aggregate: Aggregate,
        /// Whether the window is kept incrementally: the new batch added, the expired one taken
        /// out (Spark's `reduceByKeyAndWindow` with `invFunc`), instead of every batch of the
        /// window merged again at each slide.
        inverse: bool,
        /// Output partitions (keys placed by hash); `None`: as many as the source has.
        partitions: Option<u32>,
    },
}

impl WindowKind {
    /// Its `builtin` name.
    pub fn name(self) -> &'static str {
        match self {
            WindowKind::Records => "window",
            WindowKind::Count => "count-by-window",
            WindowKind::ReduceByKey { .. } => "reduce-by-key-and-window",
        }
    }
}

/// What `update-state-by-key` outputs at each batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StateOutput {
    /// The keys the batch updated, with their new state (Spark's `mapWithState`).
    Updated,
    /// Every key's state (Spark's `updateStateByKey`, or `mapWithState(...).stateSnapshots()`).
    All,
}

/// `update-state-by-key`: a running aggregate per key, kept across batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunningSpec {
    /// What is kept per key.
    pub aggregate: Aggregate,
    /// A key not updated for this long (batch time) is dropped, as a `mapWithState` timeout.
    pub timeout: Option<Duration>,
    /// What each batch outputs.
    pub output: StateOutput,
    /// Every this many batches the whole state is written (else only the keys a batch
    /// changed).
    pub snapshot_every: u32,
    /// Output partitions (keys placed by hash); `None`: as many as the source has.
    pub partitions: Option<u32>,
}

/// Where `update-state-by-key` keeps its state: in memory up to `state-memory` bytes, the
/// coldest keys on local disk past it (see [`crate::state::spill`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateMemory {
    /// `state-memory`: bytes of state held in memory. Default [`DEFAULT_STATE_MEMORY`].
    pub budget: u64,
    /// `state-spill-dir`: where the spill files go (relative to the pipeline file's
    /// directory); default the system's temporary directory (`$TMPDIR`).
    pub spill_dir: Option<String>,
}

/// `state-memory`'s default: 256 MiB, about 2 M count keys (a state that fits is never
/// slowed by the disk; past it, memory stays bounded).
pub const DEFAULT_STATE_MEMORY: u64 = 256 << 20;

/// The window of `length` and `slide` (default: the batch interval) in batches of
/// `interval`, or what is wrong with them.
pub fn spec(
    here: &str,
    length: Option<Duration>,
    slide: Option<Duration>,
    interval: Duration,
) -> Result<WindowSpec, String> {
    let length = length.ok_or_else(|| {
        format!("{here}: needs `length`, the window's duration (e.g. length = \"30s\")")
    })?;
    let batches = |key: &str, d: Duration| -> Result<u32, String> {
        let (d_ms, i_ms) = (d.as_millis(), interval.as_millis().max(1));
        if d_ms == 0 || d_ms % i_ms != 0 {
            return Err(format!(
                "{here}: key `{key}` = {} must be a positive multiple of the batch interval ({}), as in Spark",
                humantime::format_duration(d),
                humantime::format_duration(interval)
            ));
        }
        u32::try_from(d_ms / i_ms)
            .ok()
            .filter(|&n| n <= 100_000)
            .ok_or_else(|| format!("{here}: key `{key}`: at most 100,000 batches"))
    };
    let spec = WindowSpec {
        length: batches("length", length)?,
        slide: batches("slide", slide.unwrap_or(interval))?,
    };
    if spec.slide > spec.length {
        return Err(format!(
            "{here}: key `slide` ({}) is longer than `length` ({}): records between two windows would be in none",
            humantime::format_duration(slide.unwrap_or(interval)),
            humantime::format_duration(length)
        ));
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_window_is_a_whole_number_of_batches() {
        assert_eq!(
            spec("w", Some(30 * S), Some(10 * S), 2 * S),
            Ok(WindowSpec {
                length: 15,
                slide: 5
            })
        );
        assert_eq!(
            spec("w", Some(4 * S), None, 2 * S),
            Ok(WindowSpec {
                length: 2,
                slide: 1
            })
        );
    }

    #[test]
    fn a_length_or_slide_off_the_batch_interval_is_refused_by_key() {
        let e = spec("w", Some(25 * S), Some(10 * S), 10 * S).unwrap_err();
        assert!(
            e.contains("`length` = 25s") && e.contains("multiple of the batch interval (10s)"),
            "{e}"
        );
        let e = spec("w", Some(30 * S), Some(15 * S), 10 * S).unwrap_err();
        assert!(e.contains("`slide` = 15s"), "{e}");
        assert!(
            spec("w", None, None, S)
                .unwrap_err()
                .contains("needs `length`")
        );
        assert!(
            spec("w", Some(2 * S), Some(4 * S), S)
                .unwrap_err()
                .contains("longer than")
        );
    }
}
