//! Counters and gauges the host keeps per plugin.
//!
//! Run natively (in tests), these do nothing.
//!
//! ```
//! sluice_sdk::metrics::counter_add("matches_total", 12);
//! sluice_sdk::metrics::gauge_set("open_files", 3.0);
//! ```

/// Adds `delta` to the counter `name`. Names should end in `_total`.
pub fn counter_add(name: &str, delta: u64) {
    #[cfg(target_arch = "wasm32")]
    crate::__private::host::counter_add(name, delta);
    #[cfg(not(target_arch = "wasm32"))]
    let _ = (name, delta);
}

/// Sets the gauge `name` to `value`.
pub fn gauge_set(name: &str, value: f64) {
    #[cfg(target_arch = "wasm32")]
    crate::__private::host::gauge_set(name, value);
    #[cfg(not(target_arch = "wasm32"))]
    let _ = (name, value);
}
