//! A transform step's poison policy: what happens to a record on which the plugin traps, runs
//! past its time budget or hits its memory cap when called alone (`on-poison`,
//! `max-poison-per-batch` on `[[transform]]`).

use serde::Deserialize;

/// `on-poison`: what a step does with a poison record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnPoison {
    /// `"dead-letter"` (the default): the block is retried in halves on fresh instances until
    /// the records that fail alone are found; those go to the dead letters, the rest goes on.
    #[default]
    DeadLetter,
    /// `"stop"`: the pipeline stops on the first such failure, as it did before isolation.
    Stop,
}

/// The default of `max-poison-per-batch`.
pub const DEFAULT_MAX_POISON_PER_BATCH: u32 = 100;

/// A step's poison policy, once checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoisonPolicy {
    /// `on-poison`. Default `"dead-letter"`.
    pub on_poison: OnPoison,
    /// `max-poison-per-batch`: how many records of one batch this step may dead-letter as
    /// poison; one more stops the pipeline (a plugin that fails on everything is broken, not
    /// poisoned). Default [`DEFAULT_MAX_POISON_PER_BATCH`].
    pub max_per_batch: u32,
}

impl Default for PoisonPolicy {
    fn default() -> Self {
        PoisonPolicy {
            on_poison: OnPoison::DeadLetter,
            max_per_batch: DEFAULT_MAX_POISON_PER_BATCH,
        }
    }
}
