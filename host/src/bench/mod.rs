//! The benchmarks behind `sluice bench`. Each compares two ways of doing the same work in one
//! run, alternating them, and prints a ratio: these machines are noisy, a ratio less so.

pub mod amqp;
pub mod child;
pub mod failover;
pub mod isolation;
pub mod languages;
pub mod nexmark;
pub mod pipeline;
pub mod plugins;
pub mod recovery;
pub mod swap;
pub mod ui;
