//! Logging: `tracing` events with their fields first and a plain sentence, on stderr.
//!
//! - **Level**: `--log-level LEVEL` (a level, or a filter in `RUST_LOG`'s syntax such as
//!   `info,sluice::ha=debug`) wins; then `-q` (warnings and errors) or `-v`/`-vv` (debug,
//!   trace); then `RUST_LOG`; else `info`. wasmtime and cranelift stay at `warn` unless a
//!   filter names them.
//! - **Colour**: ANSI escape codes only when stderr is a terminal and `NO_COLOR` is unset (or
//!   empty), so a redirected log or `setup.log` holds plain text.
//! - **Durations** in fields are milliseconds rounded to a tenth ([`ms`]), as a person reads
//!   them.

use std::io::IsTerminal;
use std::time::Duration;

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// What the command line asked of the log.
#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    /// `--log-format`.
    pub format: LogFormat,
    /// `--log-level`: a level or a `RUST_LOG`-style filter.
    pub level: Option<String>,
    /// `-q`: warnings and errors only.
    pub quiet: bool,
    /// `-v` count: 1 debug, 2 or more trace.
    pub verbose: u8,
}

/// The filter `opts` asks for, with `rust_log` (the environment's `RUST_LOG`) below the
/// flags and `info` as the default.
pub fn filter_spec(opts: &LogOptions, rust_log: Option<&str>) -> String {
    const QUIET_DEPS: &str = "wasmtime=warn,cranelift=warn";
    let level = match (&opts.level, opts.quiet, opts.verbose) {
        (Some(l), _, _) => return with_deps(l, QUIET_DEPS),
        (None, true, _) => "warn",
        (None, false, 1) => "debug",
        (None, false, v) if v >= 2 => "trace",
        _ => match rust_log.map(str::trim).filter(|s| !s.is_empty()) {
            Some(env) => return env.to_owned(),
            None => "info",
        },
    };
    with_deps(level, QUIET_DEPS)
}

/// `spec` with `deps` added unless it already names them.
fn with_deps(spec: &str, deps: &str) -> String {
    if spec.contains("wasmtime") || spec.contains("cranelift") {
        spec.to_owned()
    } else {
        format!("{spec},{deps}")
    }
}

/// Whether log lines may carry ANSI colour codes: stderr is a terminal and `NO_COLOR` is unset
/// or empty (<https://no-color.org>).
pub fn colour(terminal: bool, no_color: Option<&str>) -> bool {
    terminal && no_color.is_none_or(str::is_empty)
}

/// Starts logging to stderr as `opts` says. A filter that does not parse falls back to `info`
/// with a warning naming it.
pub fn init(opts: &LogOptions) {
    let spec = filter_spec(opts, std::env::var("RUST_LOG").ok().as_deref());
    let (filter, bad) = match EnvFilter::try_new(&spec) {
        Ok(f) => (f, None),
        Err(e) => (EnvFilter::new("info,wasmtime=warn,cranelift=warn"), Some(e)),
    };
    let no_color = std::env::var("NO_COLOR").ok();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour(std::io::stderr().is_terminal(), no_color.as_deref()))
        .with_target(false);
    let _ = match opts.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    if let Some(e) = bad {
        tracing::warn!(filter = %spec, error = %e, "The log filter does not parse; logging at info.");
    }
}

/// `d` in milliseconds, rounded to a tenth: how durations go into log fields.
pub fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e4).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(level: Option<&str>, quiet: bool, verbose: u8) -> LogOptions {
        LogOptions {
            level: level.map(str::to_owned),
            quiet,
            verbose,
            ..LogOptions::default()
        }
    }

    #[test]
    fn the_flags_win_over_rust_log_and_info_is_the_default() {
        let deps = ",wasmtime=warn,cranelift=warn";
        assert_eq!(
            filter_spec(&opts(None, false, 0), None),
            format!("info{deps}")
        );
        assert_eq!(filter_spec(&opts(None, false, 0), Some("debug")), "debug");
        assert_eq!(
            filter_spec(&opts(None, true, 0), Some("debug")),
            format!("warn{deps}")
        );
        assert_eq!(
            filter_spec(&opts(None, false, 1), None),
            format!("debug{deps}")
        );
        assert_eq!(
            filter_spec(&opts(None, false, 3), None),
            format!("trace{deps}")
        );
        assert_eq!(
            filter_spec(&opts(Some("error"), false, 2), Some("debug")),
            format!("error{deps}")
        );
        assert_eq!(
            filter_spec(&opts(Some("info,wasmtime=debug"), false, 0), None),
            "info,wasmtime=debug"
        );
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some("")));
        assert!(!colour(true, Some("1")));
        assert!(!colour(false, None));
    }

    #[test]
    fn durations_are_rounded_to_a_tenth_of_a_millisecond() {
        assert_eq!(ms(Duration::from_nanos(278_518_853)), 278.5);
        assert_eq!(ms(Duration::from_micros(300)), 0.3);
        assert_eq!(
            format!("{}", ms(Duration::from_nanos(278_518_853))),
            "278.5"
        );
    }
}
