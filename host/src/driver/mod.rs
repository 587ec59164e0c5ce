//! The lifecycle of a pipeline run.

pub mod supervise;
