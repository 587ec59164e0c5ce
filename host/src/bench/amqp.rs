//! `sluice bench amqp`: messages per second from the broker into a counting sink, through
//! sluice in plain mode, in reliable mode with the write-ahead log on local disk and (when
//! Azurite is configured) on Azure Blob, next to a bare `fe2o3-amqp` consumer on the same
//! broker; alternating, in one process, each on a fresh queue of the same messages.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::driver::{self, RunOptions, Shutdown};
use crate::error::{Error, Result};
use crate::plan;
use crate::receiver::amqp::bench;
use crate::receiver::amqp::config::AmqpEndpoint;

/// The ways the messages are taken in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Bare,
    Plain,
    WalLocal,
    WalAzurite,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::Bare => "bare fe2o3-amqp consumer",
            Mode::Plain => "sluice, plain",
            Mode::WalLocal => "sluice, reliable (WAL on local disk)",
            Mode::WalAzurite => "sluice, reliable (WAL on Azurite)",
        }
    }
}

const CREDIT: u32 = 2000;

/// A pipeline from `queue` into a counting sink, with the WAL under `checkpoint` if given.
fn pipeline_text(url: &str, queue: &str, checkpoint: Option<&str>) -> String {
    let (wal, cp) = match checkpoint {
        Some(path) => (
            "wal = true\n".to_owned(),
            format!("\n[checkpoint]\npath = \"{path}\"\n"),
        ),
        None => (String::new(), String::new()),
    };
    format!(
        "version = 1\nname = \"bench-amqp\"\nbatch-interval = \"1s\"\n\n[source]\nkind = \"amqp\"\nurl = \"{url}\"\nqueues = [\"{queue}\"]\ncredit = {CREDIT}\n{wal}\n[[sink]]\nkind = \"count\"\n{cp}"
    )
}

/// Takes in `n` messages from `queue` through a sluice pipeline and returns messages per
/// second from the first counted to the last.
fn through_sluice(
    dir: &Path,
    url: &str,
    queue: &str,
    checkpoint: Option<&str>,
    n: u64,
    rt: &tokio::runtime::Runtime,
) -> Result<f64> {
    let file = dir.join("pipeline.toml");
    std::fs::write(&file, pipeline_text(url, queue, checkpoint))
        .map_err(Error::io("writing a bench pipeline"))?;
    let plan = plan::build(&file, None, rt.handle())?;
    let counter = plan
        .counters
        .first()
        .cloned()
        .ok_or_else(|| Error::Usage("the bench pipeline has no counting sink".to_owned()))?;
    let stop = Shutdown::default();
    // The clock runs from the first message a receiver took in, as the bare consumer's runs
    // from its first delivery, to the commit that made the count reach `n`.
    let mut done = None;
    let summary = std::thread::scope(|s| -> Result<driver::RunSummary> {
        let runner = s.spawn(|| driver::run(&plan, rt, &RunOptions::default(), &stop));
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let got = counter.records.load(std::sync::atomic::Ordering::Relaxed);
            if got >= n {
                done = Some(Instant::now());
                break;
            }
            if runner.is_finished() || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        stop.request();
        match runner.join() {
            Ok(r) => Ok(r?),
            Err(_) => Err(Error::Usage("the bench pipeline panicked".to_owned())),
        }
    })?;
    let took = done.zip(summary.first_record).map(|(d, f)| d - f);
    let took = took.ok_or_else(|| {
        Error::Usage(format!(
            "the pipeline took in {} of {n} messages",
            counter.records.load(std::sync::atomic::Ordering::Relaxed)
        ))
    })?;
    Ok(n as f64 / took.as_secs_f64().max(1e-9))
}

/// Runs every mode `rounds` times, alternating, and returns the report.
pub fn run(url: &str, n: u64, rounds: u32) -> Result<String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::io("starting the async runtime"))?;
    let endpoint = AmqpEndpoint::parse(url, "--url").map_err(Error::Usage)?;
    let azurite = std::env::var("SLUICE_AZURITE_CONTAINER").ok();
    let mut modes = vec![Mode::Bare, Mode::Plain, Mode::WalLocal];
    if azurite.is_some() {
        modes.push(Mode::WalAzurite);
    }
    let pid = std::process::id();
    let mut best: Vec<f64> = vec![0.0; modes.len()];
    let started = Instant::now();
    for round in 0..rounds {
        for (i, &mode) in modes.iter().enumerate() {
            let dir = std::env::temp_dir().join(format!("sluice-bench-amqp-{pid}-{round}-{i}"));
            std::fs::create_dir_all(&dir).map_err(Error::io("creating a bench directory"))?;
            let queue = format!("/queue/sluice-bench-{pid}-{round}-{i}");
            rt.block_on(bench::publish(&endpoint, &queue, "b", n, 100, 1000))
                .map_err(Error::Usage)?;
            let local = dir.join("checkpoints");
            let local = local.to_string_lossy();
            let remote = azurite
                .as_ref()
                .map(|c| format!("az://{c}/bench-amqp-{pid}-{round}"));
            let rate = match mode {
                Mode::Bare => rt
                    .block_on(bench::consume(&endpoint, &queue, n, CREDIT, 500))
                    .map_err(Error::Usage)?
                    .per_second(),
                Mode::Plain => through_sluice(&dir, url, &queue, None, n, &rt)?,
                Mode::WalLocal => through_sluice(&dir, url, &queue, Some(&local), n, &rt)?,
                Mode::WalAzurite => through_sluice(&dir, url, &queue, remote.as_deref(), n, &rt)?,
            };
            best[i] = best[i].max(rate);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    let mut report = String::new();
    let _ = writeln!(
        report,
        "sluice bench amqp: {n} messages of 100 bytes a run, credit {CREDIT}, {rounds} round(s) alternating; best of the rounds"
    );
    let _ = writeln!(report, "{:<40} {:>12}", "mode", "messages/s");
    for (i, mode) in modes.iter().enumerate() {
        let _ = writeln!(report, "{:<40} {:>12.0}", mode.label(), best[i]);
    }
    let at = |m: Mode| modes.iter().position(|&x| x == m).map(|i| best[i]);
    if let (Some(p), Some(b)) = (at(Mode::Plain), at(Mode::Bare)) {
        let _ = writeln!(
            report,
            "plain / bare ratio: {:.2} (goal 0.9)",
            p / b.max(1.0)
        );
    }
    if let (Some(w), Some(p)) = (at(Mode::WalLocal), at(Mode::Plain)) {
        let _ = writeln!(
            report,
            "reliable (local) / plain ratio: {:.2} (goal 0.8)",
            w / p.max(1.0)
        );
    }
    if let (Some(w), Some(p)) = (at(Mode::WalAzurite), at(Mode::Plain)) {
        let _ = writeln!(
            report,
            "reliable (Azurite) / plain ratio: {:.2} (goal 0.8)",
            w / p.max(1.0)
        );
    }
    let _ = writeln!(report, "(ran {:.0} s)", started.elapsed().as_secs_f64());
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(report)
}
