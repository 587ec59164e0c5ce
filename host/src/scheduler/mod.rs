//! The scheduler: the batch clock and tracker ([`tracker`]) and the job ([`job`]): how a batch
//! runs. The lifecycle around them (recover, the batch loop, commit, stop) is the driver's
//! (`crate::driver`).
//!
//! - Blocks reach the batch loop as they are cut; [`job::run_blocks`] runs the pipeline's
//!   narrow steps and sink writes on them at once, one task per partition on a pool of
//!   `workers` threads, and gives their bytes back to the budget.
//! - Every batch interval the clock closes batch N. After every block of N, [`job::finish`]
//!   runs what needs the whole batch (a count by key: from counts combined block by block) and
//!   [`job::commit`] commits every sink once the driver recorded the batch.
//! - The pieces: [`job`] (the two parts above), `open` (the open batch and the shape of the
//!   steps), `part` (a partition's records between steps, and `JobError`), `call` (a plugin
//!   step's calls: retries, poison isolation in [`isolate`], the shadow's candidate),
//!   [`combine`] (count and repartition), [`shadow`] (shadow runs' comparison), `keyed`
//!   (plugin steps' keyed state in a batch: opened, migrated, closed).
//! - A slow runner makes blocks and closes wait in the channel, while the budget stops the
//!   receivers: the scheduling delay grows and is shown.

mod call;
pub mod combine;
pub mod isolate;
pub mod job;
mod keyed;
mod open;
mod part;
mod plugin_window;
pub mod shadow;
pub mod tracker;

/// The largest block: a partition's share of a sixteenth of the budget, between 256 KiB and
/// 2 MiB. Many blocks per partition fit in the budget, so receivers rarely wait for one to be
/// processed; and a block is one plugin call of a size that keeps the plugin's memory (which
/// an instance keeps at its high-water mark) and the host's copies small, at a call overhead
/// of a few per cent (measured with `sluice bench pipeline`).
pub fn max_block_bytes(budget: u64, partitions: u32) -> u64 {
    (budget / 16 / partitions.max(1) as u64).clamp(256 << 10, 2 << 20)
}
