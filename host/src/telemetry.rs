//! Logging and metric names.
//!
//! Log lines are `tracing` events with their fields first and a plain sentence. Metric names
//! are constants here; counters end in `_total`.

use tracing_subscriber::EnvFilter;

/// Records that entered a batch.
pub const RECORDS_IN_TOTAL: &str = "sluice_records_in_total";
/// Records a stage output.
pub const RECORDS_OUT_TOTAL: &str = "sluice_records_out_total";
/// Records sent to the dead-letter sink.
pub const DEAD_LETTERS_TOTAL: &str = "sluice_dead_letters_total";
/// Plugin calls that trapped.
pub const PLUGIN_TRAPS_TOTAL: &str = "sluice_plugin_traps_total";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Starts logging to stderr. `RUST_LOG` overrides the default level (`info`).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,wasmtime=warn,cranelift=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
