//! Lines in the host's log, tagged with the plugin, partition and batch.
//!
//! Run natively (in tests), the lines go to standard error instead.
//!
//! ```
//! sluice_sdk::log::info("pattern compiled");
//! sluice_sdk::log::warn(&format!("skipped {} empty lines", 3));
//! ```

#[cfg(target_arch = "wasm32")]
use crate::__private::host::{Level, log as host_log};

#[cfg(not(target_arch = "wasm32"))]
#[derive(Debug)]
enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

#[cfg(not(target_arch = "wasm32"))]
fn host_log(level: Level, message: &str) {
    eprintln!("[{level:?}] {message}");
}

/// Logs `message` at trace level.
pub fn trace(message: &str) {
    host_log(Level::Trace, message);
}

/// Logs `message` at debug level.
pub fn debug(message: &str) {
    host_log(Level::Debug, message);
}

/// Logs `message` at info level.
pub fn info(message: &str) {
    host_log(Level::Info, message);
}

/// Logs `message` at warn level.
pub fn warn(message: &str) {
    host_log(Level::Warn, message);
}

/// Logs `message` at error level.
pub fn error(message: &str) {
    host_log(Level::Error, message);
}
