//! `sluice run --supervise`: a light supervisor process that runs the driver as a child (this
//! same binary, the same arguments minus `--supervise`), passes SIGTERM and SIGINT on to it,
//! and restarts it when it crashes.
//!
//! What the child's exit means ([`Restarts::after`]): 0, the pipeline ended or stopped
//! gracefully: the supervisor exits 0. 2 (the user's fault) or 3 (fenced): restarting cannot
//! help, so the supervisor exits with that code. Anything else (killed by a signal, 70, 75, …):
//! a restart after a backoff that starts at 100 ms (recovery should be fast), doubles up to 10 s
//! and starts over once a child has run 30 s. After 5 crashes in a row, each within 10 s of its
//! start, the supervisor gives up and exits 70.
//!
//! The supervisor never builds the plan (no plugin runtime, no stores): it only checks that the
//! pipeline file parses, so that a bad file exits 2 at once instead of being restarted.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::config::PipelineFile;
use crate::error::{EXIT_FENCED, EXIT_INTERNAL, EXIT_OK, EXIT_USER, Error, Result};

/// When the supervisor restarts a crashed driver, and when it gives up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The wait before the first restart.
    pub first_backoff: Duration,
    /// The longest wait; each restart in a row doubles the wait up to this.
    pub max_backoff: Duration,
    /// A driver that ran this long before it ended was healthy: the backoff starts over.
    pub healthy_after: Duration,
    /// A driver that ended sooner than this after its start crashed at start.
    pub crash_at_start: Duration,
    /// How many crashes at start in a row make the supervisor give up.
    pub give_up_after: u32,
}

impl Default for Policy {
    /// 100 ms doubling to 10 s, reset after 30 s of running; give up after 5 crashes in a row,
    /// each within 10 s of its start.
    fn default() -> Self {
        Policy {
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            healthy_after: Duration::from_secs(30),
            crash_at_start: Duration::from_secs(10),
            give_up_after: 5,
        }
    }
}

/// How a driver process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
}

impl From<ExitStatus> for Exit {
    fn from(status: ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => Exit::Code(code),
            (None, Some(signal)) => Exit::Signal(signal),
            (None, None) => Exit::Code(i32::from(EXIT_INTERNAL)),
        }
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Code(code) => write!(f, "exited with code {code}"),
            Exit::Signal(signal) => {
                write!(f, "was killed by signal {signal}{}", signal_name(*signal))
            }
        }
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGKILL => " (SIGKILL)",
        libc::SIGTERM => " (SIGTERM)",
        libc::SIGINT => " (SIGINT)",
        libc::SIGABRT => " (SIGABRT)",
        libc::SIGSEGV => " (SIGSEGV)",
        libc::SIGBUS => " (SIGBUS)",
        _ => "",
    }
}

impl Exit {
    /// The code the supervisor exits with when it does not restart after this exit: the
    /// child's code, or 128 + the signal, as shells report it.
    pub fn code(self) -> u8 {
        match self {
            Exit::Code(code) => u8::try_from(code).unwrap_or(EXIT_INTERNAL),
            Exit::Signal(signal) => u8::try_from(128 + signal).unwrap_or(EXIT_INTERNAL),
        }
    }
}

/// What the supervisor does after a driver ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Exit with this code, without restarting.
    Exit(u8),
    /// Start the driver again after this wait.
    Restart(Duration),
    /// Too many crashes at start in a row: give up.
    GiveUp {
        /// How many crashes at start in a row.
        crashes: u32,
    },
}

/// The restart decision and its memory (the backoff, the crashes at start in a row). Pure: the
/// caller says how long the driver ran, so it is tested without a clock.
#[derive(Debug, Clone)]
pub struct Restarts {
    policy: Policy,
    backoff: Duration,
    crashes_at_start: u32,
}

impl Restarts {
    /// No restart yet.
    pub fn new(policy: Policy) -> Self {
        Restarts {
            policy,
            backoff: policy.first_backoff,
            crashes_at_start: 0,
        }
    }

    /// Called when a driver ended with `exit` after running `ran`; `stopping` is whether a
    /// stop was asked of the supervisor (then it never restarts).
    pub fn after(&mut self, exit: Exit, ran: Duration, stopping: bool) -> Next {
        match exit {
            Exit::Code(0) => return Next::Exit(EXIT_OK),
            Exit::Code(code) if code == i32::from(EXIT_USER) || code == i32::from(EXIT_FENCED) => {
                return Next::Exit(exit.code());
            }
            _ if stopping => return Next::Exit(exit.code()),
            _ => {}
        }
        if ran >= self.policy.healthy_after {
            self.backoff = self.policy.first_backoff;
        }
        if ran < self.policy.crash_at_start {
            self.crashes_at_start += 1;
        } else {
            self.crashes_at_start = 0;
        }
        if self.crashes_at_start >= self.policy.give_up_after {
            return Next::GiveUp {
                crashes: self.crashes_at_start,
            };
        }
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(self.policy.max_backoff);
        Next::Restart(wait)
    }
}

/// Why the supervisor stopped with an error of its own.
#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    /// The driver could not be started at all.
    #[error("supervisor: cannot start the driver {}: {source}", exe.display())]
    Spawn {
        /// The binary.
        exe: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The driver crashed at start too many times in a row.
    #[error(
        "supervisor: the driver crashed {crashes} times in a row, each within {} of its start \
         (the last {last}); giving up (its errors are in the log above)",
        humantime::format_duration(*within)
    )]
    GaveUp {
        /// How many crashes in a row.
        crashes: u32,
        /// The time from start within which each crashed.
        within: Duration,
        /// How the last one ended.
        last: Exit,
    },
}

/// Runs `sluice run --supervise PIPELINE`: checks that the pipeline file parses, then runs and
/// restarts the driver until it ends, cannot be helped by a restart, or crashes too often.
/// Returns the code to exit with.
pub fn run(pipeline: &Path) -> Result<u8> {
    PipelineFile::load(pipeline)?;
    let exe = std::env::current_exe().map_err(Error::io("finding the sluice binary"))?;
    let args = driver_args(std::env::args_os().skip(1));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::io("starting the supervisor's runtime"))?;
    rt.block_on(supervise(&exe, &args, Policy::default()))
}

/// The driver's arguments: the supervisor's own, minus `--supervise` (before any `--`).
pub fn driver_args(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut past_options = false;
    args.into_iter()
        .filter(|a| {
            past_options |= a == "--";
            past_options || a != "--supervise"
        })
        .collect()
}

/// The signals the supervisor waits on: SIGTERM and SIGINT (stop requests), SIGCHLD (the
/// driver exited). Listening on SIGCHLD instead of waiting in a thread keeps the supervisor to
/// one thread, which matters: a driver's parent-death signal is sent once per thread of its
/// parent that exits, and a second SIGTERM would cut its drain short.
struct Signals {
    stops: Stops,
    child: Signal,
}

/// SIGTERM and SIGINT.
struct Stops {
    term: Signal,
    int: Signal,
}

impl Signals {
    fn listen() -> Result<Self> {
        let listen = |kind| signal(kind).map_err(Error::io("listening for signals"));
        Ok(Signals {
            stops: Stops {
                term: listen(SignalKind::terminate())?,
                int: listen(SignalKind::interrupt())?,
            },
            child: listen(SignalKind::child())?,
        })
    }
}

impl Stops {
    /// The next stop signal's number.
    async fn next(&mut self) -> i32 {
        tokio::select! {
            _ = self.term.recv() => libc::SIGTERM,
            _ = self.int.recv() => libc::SIGINT,
        }
    }
}

/// Starts the driver, waits for it while passing stop signals on, and decides with [`Restarts`]
/// what comes next, until it is not a restart.
async fn supervise(exe: &Path, args: &[OsString], policy: Policy) -> Result<u8> {
    let mut signals = Signals::listen()?;
    let mut restarts = Restarts::new(policy);
    let mut stopping = false;
    let mut start = 0u32;
    loop {
        start += 1;
        // `--from-scratch` starts over once: a restart resumes from what the first start
        // committed, never clears it again.
        let restart_args: Vec<OsString>;
        let args = if start == 1 {
            args
        } else {
            restart_args = args
                .iter()
                .filter(|a| *a != "--from-scratch")
                .cloned()
                .collect();
            &restart_args[..]
        };
        let child = start_driver(exe, args)?;
        let pid = child.id();
        tracing::info!(pid, start, "The driver started.");
        let started = Instant::now();
        let exit = wait_forwarding(child, &mut signals, &mut stopping).await;
        let ran = started.elapsed();
        let backoff = match restarts.after(exit, ran, stopping) {
            Next::Exit(code) => {
                tracing::info!(
                    pid,
                    code,
                    "The driver {exit}; the supervisor exits with its code."
                );
                return Ok(code);
            }
            Next::GiveUp { crashes } => {
                return Err(Error::Supervise(SuperviseError::GaveUp {
                    crashes,
                    within: policy.crash_at_start,
                    last: exit,
                }));
            }
            Next::Restart(backoff) => backoff,
        };
        let (ran_ms, backoff_ms) = (ran.as_millis() as u64, backoff.as_millis() as u64);
        tracing::warn!(
            pid,
            exit = %exit,
            ran_ms,
            backoff_ms,
            "Restarting the driver in {backoff_ms} ms: it {exit} after {ran_ms} ms."
        );
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            signal = signals.stops.next() => {
                tracing::info!(signal, "Stop requested while no driver runs; the supervisor exits.");
                return Ok(EXIT_OK);
            }
        }
    }
}

/// Starts the driver in its own process group (so a Ctrl-C in a terminal reaches only the
/// supervisor, which passes it on once), set to get SIGTERM if the supervisor dies.
fn start_driver(exe: &Path, args: &[OsString]) -> Result<Child> {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(exe);
    cmd.args(args).process_group(0);
    stop_with_supervisor(&mut cmd);
    cmd.spawn().map_err(|source| {
        Error::Supervise(SuperviseError::Spawn {
            exe: exe.to_owned(),
            source,
        })
    })
}

/// Waits for `child` to exit, passing every stop signal on to it.
async fn wait_forwarding(mut child: Child, signals: &mut Signals, stopping: &mut bool) -> Exit {
    let pid = child.id();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Exit::from(status),
            Ok(None) => {}
            // The child cannot be waited for (it is gone): as a crash.
            Err(_) => return Exit::Code(i32::from(EXIT_INTERNAL)),
        }
        tokio::select! {
            _ = signals.child.recv() => {}
            // SIGCHLDs can merge; a look now and then costs nothing.
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            signal = signals.stops.next() => {
                *stopping = true;
                tracing::info!(pid, signal, "Passing the stop signal on to the driver.");
                send_signal(pid, signal);
            }
        }
    }
}

/// Sends `signal` to the driver `pid`.
#[allow(unsafe_code)]
fn send_signal(pid: u32, signal: i32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) takes plain integers and touches no memory of this process. `pid` is our
    // child, not yet reaped (only `wait_forwarding`'s `try_wait` reaps it, and it saw it
    // running), so the pid names no other process.
    let rc = unsafe { libc::kill(pid, signal) };
    if rc != 0 {
        let error = std::io::Error::last_os_error();
        tracing::warn!(pid, signal, %error, "The stop signal could not be passed on to the driver.");
    }
}

/// Makes the child get SIGTERM when the thread that started it (the supervisor's main thread,
/// which lives as long as the supervisor) ends: a supervisor killed with SIGKILL leaves a
/// driver that drains and stops, not an orphan.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn stop_with_supervisor(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    let supervisor = libc::pid_t::try_from(std::process::id()).unwrap_or(0);
    // SAFETY: the closure runs in the child between fork and exec, where only async-signal-safe
    // calls are allowed: prctl(2) and getppid(2) are plain system calls, and nothing allocates.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The supervisor died before the line above: do not run unsupervised.
            if libc::getppid() != supervisor {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn stop_with_supervisor(_cmd: &mut Command) {}

#[cfg(test)]
mod tests {
    use super::*;

    const KILLED: Exit = Exit::Signal(libc::SIGKILL);
    const SOON: Duration = Duration::from_millis(500);

    #[test]
    fn a_user_fault_or_a_fence_is_never_restarted_and_keeps_its_exit_code() {
        let mut r = Restarts::new(Policy::default());
        assert_eq!(r.after(Exit::Code(2), SOON, false), Next::Exit(2));
        assert_eq!(r.after(Exit::Code(3), SOON, false), Next::Exit(3));
        assert_eq!(r.after(Exit::Code(0), SOON, false), Next::Exit(0));
    }

    #[test]
    fn a_crash_is_restarted_after_a_backoff_that_doubles_up_to_ten_seconds() {
        let policy = Policy {
            give_up_after: 100,
            ..Policy::default()
        };
        let mut r = Restarts::new(policy);
        let waits: Vec<Duration> = (0..10)
            .map(|_| match r.after(Exit::Code(75), SOON, false) {
                Next::Restart(wait) => wait,
                other => panic!("a crash restarts, not {other:?}"),
            })
            .collect();
        let ms: Vec<u128> = waits.iter().map(Duration::as_millis).collect();
        assert_eq!(
            ms,
            [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000, 10_000]
        );
    }

    #[test]
    fn a_driver_that_ran_thirty_seconds_is_restarted_after_the_first_backoff_again() {
        let mut r = Restarts::new(Policy::default());
        r.after(KILLED, SOON, false);
        r.after(KILLED, SOON, false);
        assert_eq!(
            r.after(KILLED, Duration::from_secs(31), false),
            Next::Restart(Duration::from_millis(100))
        );
    }

    #[test]
    fn five_crashes_at_start_in_a_row_give_up_and_a_long_run_between_them_does_not() {
        let mut r = Restarts::new(Policy::default());
        for _ in 0..4 {
            assert!(matches!(r.after(KILLED, SOON, false), Next::Restart(_)));
        }
        // A run past 10 s breaks the row.
        assert!(matches!(
            r.after(KILLED, Duration::from_secs(11), false),
            Next::Restart(_)
        ));
        for _ in 0..4 {
            assert!(matches!(
                r.after(Exit::Code(70), SOON, false),
                Next::Restart(_)
            ));
        }
        assert_eq!(
            r.after(Exit::Code(70), SOON, false),
            Next::GiveUp { crashes: 5 }
        );
    }

    #[test]
    fn a_driver_asked_to_stop_is_not_restarted_whatever_its_exit() {
        let mut r = Restarts::new(Policy::default());
        assert_eq!(r.after(Exit::Code(75), SOON, true), Next::Exit(75));
        assert_eq!(
            r.after(Exit::Signal(libc::SIGTERM), SOON, true),
            Next::Exit(143)
        );
    }

    #[test]
    fn the_driver_gets_every_argument_but_supervise() {
        let args = [
            "--log-format",
            "json",
            "run",
            "--supervise",
            "p.toml",
            "--",
            "--supervise",
        ];
        let driver = driver_args(args.map(OsString::from));
        assert_eq!(
            driver,
            ["--log-format", "json", "run", "p.toml", "--", "--supervise"].map(OsString::from)
        );
    }
}
