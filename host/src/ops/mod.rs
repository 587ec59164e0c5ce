//! Keyed operators and windows built into the host: the steps that keep state across
//! batches. Their state is written with the checkpoint log by [`crate::state`].

pub mod aggregate;
pub mod event_window;
pub mod plugin_aggregate;
pub mod running;
pub mod window;
