//! `sluice bench ui`: what the web UI and `/metrics` cost a running pipeline. The pipeline of
//! `sluice bench pipeline` (generator at full speed under a 64 MiB budget, 1 s batches) runs
//! alternately with the HTTP server off (`[admin] enabled = false`: nothing listens) and on,
//! with a client on a thread of its own fetching what a browser tab on the UI and a Prometheus
//! scraper fetch: [`ROUTES`], every [`POLL_EVERY`]. The figure is the ratio of the median
//! sustained throughputs, on over off; the runs alternate (and swap their order every round)
//! so that a machine getting busier or quieter weighs on both sides alike.
//!
//! The monitor itself is fed in both modes (one lock per batch); what the ratio measures is
//! the server and what answering its readers costs the pipeline.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::pipeline::{self, BUDGET, Measure};
use crate::error::{Error, Result};
use crate::plan;

/// What the polling client fetches each round: the UI's pages (overview, batches table,
/// receivers, plugins) and Prometheus's scrape.
pub const ROUTES: [&str; 5] = [
    "/api/v1/overview",
    "/api/v1/batches?limit=300",
    "/api/v1/receivers",
    "/api/v1/plugins",
    "/metrics",
];

/// How often the client polls (the UI's refresh; a Prometheus scrape is rarer still).
pub const POLL_EVERY: Duration = Duration::from_millis(500);

/// The server off or on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Off,
    On,
}

/// One run's figures.
#[derive(Debug, Clone, Copy)]
struct Run {
    mode: Mode,
    measure: Measure,
    polled: Polled,
}

/// What the client saw during one run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Polled {
    /// Rounds that fetched every route with 200.
    pub rounds: u64,
    /// Requests answered 200.
    pub answered: u64,
    /// Requests that failed once the server had answered a first one.
    pub failed: u64,
    /// Bytes of the answers (bodies and headers).
    pub bytes: u64,
    /// The slowest round (all routes), from its first request to its last answer.
    pub slowest_round: Duration,
}

/// The client: a thread polling `address` until stopped.
struct Poller {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Polled>,
}

impl Poller {
    fn start(address: SocketAddr) -> Poller {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || poll(address, &flag));
        Poller { stop, thread }
    }

    fn finish(self) -> Polled {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// Fetches [`ROUTES`] every [`POLL_EVERY`] until `stop`. Failures before the server's first
/// answer (it starts once the plan is built and recovered) and in the last round (the run may
/// have ended, and its server with it, before `stop`) are not counted.
fn poll(address: SocketAddr, stop: &AtomicBool) -> Polled {
    let mut polled = Polled::default();
    let mut failed_last_round = 0;
    while !stop.load(Ordering::Relaxed) {
        polled.failed += std::mem::take(&mut failed_last_round);
        let round = Instant::now();
        let mut all = true;
        for route in ROUTES {
            match get(address, route) {
                Ok(n) => {
                    polled.answered += 1;
                    polled.bytes += n as u64;
                }
                Err(_) if polled.answered == 0 => all = false,
                Err(_) => {
                    failed_last_round += 1;
                    all = false;
                }
            }
        }
        if all {
            polled.rounds += 1;
            polled.slowest_round = polled.slowest_round.max(round.elapsed());
        }
        // Paced by the clock, not by the answers, as a browser's timer is.
        while round.elapsed() < POLL_EVERY && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20).min(POLL_EVERY - round.elapsed()));
        }
    }
    polled
}

/// One `GET` (HTTP/1.1, a connection of its own): the answer's length when it is 200.
pub fn get(address: SocketAddr, path: &str) -> std::io::Result<usize> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    if answer.starts_with(b"HTTP/1.1 200") {
        Ok(answer.len())
    } else {
        let line = answer.split(|&b| b == b'\r').next().unwrap_or_default();
        Err(std::io::Error::other(format!(
            "GET {path}: {}",
            String::from_utf8_lossy(line)
        )))
    }
}

/// A free loopback port now (bound, read, let go).
fn free_port() -> Result<SocketAddr> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(Error::io("finding a free loopback port"))
}

/// One run of `workload` in `mode`.
fn run_once(
    dir: &Path,
    plugins: &Path,
    workload: &str,
    mode: Mode,
    batches: u64,
    rt: &tokio::runtime::Runtime,
) -> Result<Run> {
    let address = free_port()?;
    let admin = match mode {
        Mode::Off => "\n[admin]\nenabled = false\n".to_owned(),
        Mode::On => format!("\n[admin]\nlisten = \"{address}\"\n"),
    };
    let file = dir.join(format!("{workload}-ui.toml"));
    let text = pipeline::pipeline_text(workload, 2, BUDGET) + &admin;
    std::fs::write(&file, text).map_err(Error::io("writing a bench pipeline"))?;
    let plan = plan::build(&file, Some(plugins), rt.handle())?;
    let poller = (mode == Mode::On).then(|| Poller::start(address));
    let measured = pipeline::measure_plan(&plan, batches, rt);
    let polled = poller.map(Poller::finish).unwrap_or_default();
    Ok(Run {
        mode,
        measure: measured?,
        polled,
    })
}

/// The median and the range of `v` (not empty).
fn median_range(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let median = match n % 2 {
        1 => s[n / 2],
        _ => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    };
    (median, s[0], s[n - 1])
}

/// Runs `workload` (`uppercase` or `wordcount`) with the server off and on, alternating,
/// and returns the report; `quick`: one run each of 5 batches.
pub fn run(plugins: &Path, quick: bool, workload: &str) -> Result<String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::io("starting the async runtime"))?;
    let dir = std::env::temp_dir().join(format!("sluice-bench-ui-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(Error::io("creating a bench directory"))?;
    let batches = if quick { 5 } else { 12 };
    let rounds = if quick { 1 } else { 5 };
    let started = Instant::now();
    let mut report = String::new();
    let _ = writeln!(
        report,
        "sluice bench ui: the `{workload}` pipeline of `sluice bench pipeline` (generator, 2 partitions, full speed, budget {BUDGET}, 1 s batches), {batches} batches a run, {rounds} run(s) each way, alternating: server off ([admin] enabled = false) and on with a client fetching {} every {} ms; steady state drops the first 2 and the last batch",
        ROUTES.join(", "),
        POLL_EVERY.as_millis()
    );
    let _ = writeln!(
        report,
        "{:<5} {:<4} {:>12} {:>12} {:>14} {:>8} {:>10} {:>9} {:>14}",
        "round",
        "ui",
        "records/s",
        "CPU-s/M rec",
        "processing ms",
        "polls",
        "answers",
        "failures",
        "slowest poll ms"
    );
    let mut runs = Vec::new();
    for round in 0..rounds {
        let order = match round % 2 {
            0 => [Mode::Off, Mode::On],
            _ => [Mode::On, Mode::Off],
        };
        for mode in order {
            let r = run_once(&dir, plugins, workload, mode, batches, &rt)?;
            let p = r.polled;
            let _ = writeln!(
                report,
                "{:<5} {:<4} {:>12.0} {:>12.3} {:>14.1} {:>8} {:>10} {:>9} {:>14.1}",
                round + 1,
                if mode == Mode::On { "on" } else { "off" },
                r.measure.records_per_s,
                r.measure.cpu_s_per_million,
                r.measure.processing.as_secs_f64() * 1e3,
                p.rounds,
                p.answered,
                p.failed,
                p.slowest_round.as_secs_f64() * 1e3
            );
            runs.push(r);
        }
    }
    let figures = |mode: Mode, f: fn(&Run) -> f64| -> Vec<f64> {
        runs.iter().filter(|r| r.mode == mode).map(f).collect()
    };
    let rate = |r: &Run| r.measure.records_per_s;
    let cpu = |r: &Run| r.measure.cpu_s_per_million;
    let (off, off_lo, off_hi) = median_range(&figures(Mode::Off, rate));
    let (on, on_lo, on_hi) = median_range(&figures(Mode::On, rate));
    let (cpu_off, _, _) = median_range(&figures(Mode::Off, cpu));
    let (cpu_on, _, _) = median_range(&figures(Mode::On, cpu));
    let failed: u64 = runs.iter().map(|r| r.polled.failed).sum();
    let answered: u64 = runs.iter().map(|r| r.polled.answered).sum();
    let bytes: u64 = runs.iter().map(|r| r.polled.bytes).sum();
    let _ = writeln!(
        report,
        "server off: median {off:.0} records/s (range {off_lo:.0}-{off_hi:.0}), {cpu_off:.3} CPU-s per million records"
    );
    let _ = writeln!(
        report,
        "server on:  median {on:.0} records/s (range {on_lo:.0}-{on_hi:.0}), {cpu_on:.3} CPU-s per million records; {answered} answers ({:.1} KiB a round of {} routes), {failed} failed",
        bytes as f64 / 1024.0 / (answered.max(1) as f64 / ROUTES.len() as f64),
        ROUTES.len()
    );
    // Each round's two runs side by side, which cancels a drift of the machine's load.
    let paired: Vec<f64> = runs
        .chunks(2)
        .filter_map(|pair| {
            let of = |m: Mode| pair.iter().find(|r| r.mode == m).map(rate);
            Some(of(Mode::On)? / of(Mode::Off)?.max(1.0))
        })
        .collect();
    let (pair_median, pair_lo, pair_hi) = median_range(&paired);
    let ratio = on / off.max(1.0);
    let _ = writeln!(
        report,
        "ratio on/off: {ratio:.3} of the medians (goal at least 0.97: {}); per round: median {pair_median:.3}, range {pair_lo:.3}-{pair_hi:.3}",
        if ratio >= 0.97 { "met" } else { "NOT met" }
    );
    let _ = writeln!(report, "(ran {:.0} s)", started.elapsed().as_secs_f64());
    let _ = std::fs::remove_dir_all(&dir);
    rt.shutdown_timeout(Duration::from_secs(1));
    if failed > 0
        || runs
            .iter()
            .any(|r| r.mode == Mode::On && r.polled.rounds == 0)
    {
        return Err(Error::Io {
            what: "polling the UI server".to_owned(),
            source: std::io::Error::other(format!(
                "it did not answer every poll ({failed} failed):\n{report}"
            )),
        });
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(median_range(&[3.0, 1.0, 2.0]), (2.0, 1.0, 3.0));
        assert_eq!(median_range(&[4.0, 1.0, 3.0, 2.0]), (2.5, 1.0, 4.0));
    }
}
