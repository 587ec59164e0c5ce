//! The test services (RabbitMQ and Azurite, from `scripts/services start`) as the tests see
//! them, and what a test does when one it needs does not answer.
//!
//! By default a missing service fails the test, with a message saying how to start it or how
//! to opt into skipping. `SLUICE_SKIP_SERVICES=1` is that opt-in: a skipped test says so on
//! stderr (written past libtest's output capture, so it shows) and appends its name to
//! [`skipped_file`], which `scripts/test` prints at its end. `SLUICE_SERVICES=1`, which
//! `scripts/test` sets, always fails a test whose service is missing, opt-in or not.

use std::io::Write;
use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::time::Duration;

/// What a test does when a service it needs does not answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhenMissing {
    /// The test fails, saying how to start the service or how to opt into skipping.
    Fail,
    /// The test returns early; the skip is printed and recorded in [`skipped_file`].
    Skip,
}

impl WhenMissing {
    /// From the environment: [`WhenMissing::Skip`] only with `SLUICE_SKIP_SERVICES=1` and
    /// without `SLUICE_SERVICES=1`.
    pub fn from_env() -> Self {
        Self::from_vars(
            std::env::var("SLUICE_SERVICES").ok().as_deref(),
            std::env::var("SLUICE_SKIP_SERVICES").ok().as_deref(),
        )
    }

    /// From the values of `SLUICE_SERVICES` and `SLUICE_SKIP_SERVICES`.
    pub fn from_vars(services: Option<&str>, skip: Option<&str>) -> Self {
        if skip == Some("1") && services != Some("1") {
            Self::Skip
        } else {
            Self::Fail
        }
    }
}

/// Where skipped tests are recorded, one `test: reason` line each: `$SLUICE_SKIPPED_FILE`, else
/// `sluice-skipped-tests.txt` in the profile directory the test binary was built in (for
/// `--release`, `$CARGO_TARGET_DIR/release/`).
pub fn skipped_file() -> PathBuf {
    if let Some(file) = std::env::var_os("SLUICE_SKIPPED_FILE") {
        return PathBuf::from(file);
    }
    let exe = std::env::current_exe().expect("the test binary knows its path");
    // target/<profile>/deps/<test binary> -> target/<profile>
    let profile = exe.parent().and_then(|deps| deps.parent());
    profile
        .expect("the test binary is in target/<profile>/deps")
        .join("sluice-skipped-tests.txt")
}

/// The service that `test` needs, described by `what` (which and where), does not answer.
/// `Err`: the failure message. `Ok`: the test is skipped, said on `say` (stderr, for a test)
/// and recorded in `record`.
pub fn missing(
    test: &str,
    what: &str,
    when: WhenMissing,
    record: &std::path::Path,
    say: &mut dyn Write,
) -> Result<(), String> {
    match when {
        WhenMissing::Fail => Err(format!(
            "{test}: {what}. Start the test services with `scripts/services start` and \
             `source \"$(scripts/services env)\"`, or set SLUICE_SKIP_SERVICES=1 to skip the \
             tests that need them (each skip is listed in {}).",
            record.display()
        )),
        WhenMissing::Skip => {
            let line = format!("{test}: {what}");
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(record)
                .map_err(|e| {
                    format!(
                        "{test}: cannot record the skip in {}: {e}",
                        record.display()
                    )
                })?;
            writeln!(file, "{line}").map_err(|e| {
                format!(
                    "{test}: cannot record the skip in {}: {e}",
                    record.display()
                )
            })?;
            let _ = writeln!(say, "\n*** SKIPPED {line} ***");
            Ok(())
        }
    }
}

/// Whether something accepts TCP connections at `addr` (`host:port`) within 2 s.
pub fn answers(addr: &str) -> bool {
    let Ok(addrs) = addr.to_socket_addrs() else {
        return false;
    };
    addrs
        .into_iter()
        .any(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok())
}

/// The `host:port` of a URL such as `amqp://guest:guest@127.0.0.1:5672/x`; `default_port`
/// when it names none.
pub fn host_port(url: &str, default_port: u16) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or_default();
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    if host
        .rsplit_once(':')
        .is_some_and(|(_, port)| port.parse::<u16>().is_ok())
    {
        host.to_owned()
    } else {
        format!("{host}:{default_port}")
    }
}

/// Applies [`missing`] as the environment says: `false` when `test` is to be skipped, a panic
/// with the message when it is to fail.
pub fn skip_or_fail(test: &str, what: &str) -> bool {
    // `std::io::stderr()` itself, not `eprintln!`, whose output libtest captures and hides.
    let stderr = &mut std::io::stderr();
    match missing(test, what, WhenMissing::from_env(), &skipped_file(), stderr) {
        Ok(()) => false,
        Err(message) if std::env::var("SLUICE_SERVICES").is_ok_and(|v| v == "1") => panic!(
            "{message} (SLUICE_SERVICES=1 is set, as scripts/test sets it: then a missing \
             service fails, whatever else is set)"
        ),
        Err(message) => panic!("{message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A port on 127.0.0.1 that nothing listens on.
    fn closed_port() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        addr
    }

    #[test]
    fn a_missing_service_fails_by_default_saying_how_to_start_it_or_skip() {
        let tmp = tempfile::tempdir().unwrap();
        let record = tmp.path().join("skipped.txt");
        let addr = closed_port();
        assert!(!answers(&addr), "nothing listens on {addr}");
        let what = format!("RabbitMQ does not answer at {addr}");
        let mut said = Vec::new();
        let err = missing("t", &what, WhenMissing::Fail, &record, &mut said).unwrap_err();
        for needle in [
            addr.as_str(),
            "scripts/services start",
            "SLUICE_SKIP_SERVICES=1",
        ] {
            assert!(err.contains(needle), "{needle:?} is not in {err:?}");
        }
        assert!(!record.exists(), "a failure is not recorded as a skip");
        assert!(said.is_empty(), "a failure says nothing more");
    }

    #[test]
    fn with_the_opt_in_each_skip_is_recorded() {
        let tmp = tempfile::tempdir().unwrap();
        let record = tmp.path().join("skipped.txt");
        let mut said = Vec::new();
        missing(
            "first_test",
            "RabbitMQ is down",
            WhenMissing::Skip,
            &record,
            &mut said,
        )
        .unwrap();
        missing(
            "second_test",
            "Azurite is down",
            WhenMissing::Skip,
            &record,
            &mut said,
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(&record).unwrap(),
            "first_test: RabbitMQ is down\nsecond_test: Azurite is down\n"
        );
        assert_eq!(
            String::from_utf8(said).unwrap(),
            "\n*** SKIPPED first_test: RabbitMQ is down ***\n\n*** SKIPPED second_test: Azurite is down ***\n"
        );
    }

    #[test]
    fn only_the_opt_in_skips_and_sluice_services_overrides_it() {
        use WhenMissing::*;
        assert_eq!(WhenMissing::from_vars(None, None), Fail);
        assert_eq!(WhenMissing::from_vars(None, Some("0")), Fail);
        assert_eq!(WhenMissing::from_vars(None, Some("1")), Skip);
        assert_eq!(WhenMissing::from_vars(Some("1"), Some("1")), Fail);
        assert_eq!(WhenMissing::from_vars(Some("1"), None), Fail);
    }

    #[test]
    fn the_broker_address_comes_from_its_url() {
        assert_eq!(
            host_port("amqp://guest:guest@127.0.0.1:5672", 5672),
            "127.0.0.1:5672"
        );
        assert_eq!(host_port("amqp://127.0.0.1:1/vhost", 5672), "127.0.0.1:1");
        assert_eq!(host_port("http://127.0.0.1:10000", 80), "127.0.0.1:10000");
        assert_eq!(host_port("amqp://localhost", 5672), "localhost:5672");
    }
}
