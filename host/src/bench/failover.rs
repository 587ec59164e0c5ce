//! `sluice bench failover`: several `sluice run` hosts of one `[ha]` pipeline (files ->
//! uppercase -> files, 8 partitions, claim interval 1s, lease expiry 3s) on this machine.
//!
//! - the time from a SIGKILL of one of 3 hosts until each of its partitions has a batch
//!   committed by its new owner (a chain link written after the kill by another member);
//! - the time for a newly started host to own its share (`floor(8/3)` = 2 partitions);
//! - CPU-seconds per million records, for 1, 2 and 3 hosts reading the same input (the machine
//!   has few cores, so CPU per record, not wall time, is the scaling measure).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::ha::chain::Chains;
use crate::ha::lease::Leases;
use crate::store::Location;

const PARTITIONS: u32 = 8;

/// What the benchmark is given.
#[derive(Debug, Clone)]
pub struct Options {
    /// The sluice binary.
    pub exe: PathBuf,
    /// The plugin directory (uppercase.wasm).
    pub plugins: PathBuf,
    /// A scratch directory.
    pub dir: PathBuf,
    /// Smaller input.
    pub quick: bool,
}

/// A host process, killed when dropped.
struct Host {
    child: Child,
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Host {
    fn start(opts: &Options, pipeline: &Path, name: &str) -> Result<Host> {
        let log = std::fs::File::create(pipeline.with_file_name(format!("{name}.log")))
            .map_err(Error::io("creating a host log"))?;
        let child = Command::new(&opts.exe)
            .args(["--log-format", "json", "run"])
            .arg(pipeline)
            .arg("--plugins")
            .arg(&opts.plugins)
            .args(["--owner", name])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(Error::io("starting sluice run"))?;
        Ok(Host { child })
    }

    /// The process's CPU seconds so far (user + system).
    fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let after = stat.rsplit(')').next().unwrap_or_default();
        let f: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        (ticks(11) + ticks(12)) / 100.0
    }
}

fn pipeline(dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir.join("in")).map_err(Error::io("creating the input directory"))?;
    let path = dir.join("pipeline.toml");
    let text = format!(
        "version = 1\nbatch-interval = \"300ms\"\nblock-interval = \"100ms\"\n\n[source]\nkind = \"files\"\npath = \"in\"\npartitions = {PARTITIONS}\npoll-interval = \"100ms\"\n\n[[transform]]\nplugin = \"uppercase\"\n\n[[sink]]\nkind = \"files\"\npath = \"out\"\n\n[checkpoint]\npath = \"checkpoints\"\n\n[ha]\nclaim-interval = \"1s\"\nlease-expiry = \"3s\"\n"
    );
    std::fs::write(&path, text).map_err(Error::io("writing the pipeline"))?;
    Ok(path)
}

fn drop_input(dir: &Path, i: usize, lines: usize) -> Result<()> {
    let text: String = (0..lines)
        .map(|j| format!("file {i:05} line {j:06} the quick brown fox\n"))
        .collect();
    let tmp = dir.join(format!("in/f-{i:05}.tmp"));
    std::fs::write(&tmp, text).map_err(Error::io("writing an input file"))?;
    std::fs::rename(&tmp, dir.join(format!("in/f-{i:05}.txt")))
        .map_err(Error::io("renaming an input file"))
}

/// Every partition's live owner's host name (the member id without its random suffix).
fn owners(rt: &tokio::runtime::Runtime, leases: &Leases) -> Vec<Option<String>> {
    let now = crate::clock::now_ms();
    rt.block_on(leases.read())
        .unwrap_or_default()
        .into_iter()
        .map(|r| {
            r.filter(|r| r.live(now)).map(|r| {
                r.owner
                    .rsplit_once('-')
                    .map_or(r.owner.clone(), |(h, _)| h.to_owned())
            })
        })
        .collect()
}

fn wait(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Result<Duration> {
    let t = Instant::now();
    while !f() {
        if t.elapsed() > timeout {
            return Err(Error::Usage(format!("{what}: not within {timeout:?}")));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(t.elapsed())
}

/// Output lines committed so far, every member's.
fn output_lines(out: &Path) -> usize {
    fn walk(dir: &Path, n: &mut usize) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().starts_with('_') {
                continue;
            }
            let p = e.path();
            if p.is_dir() {
                walk(&p, n);
            } else if let Ok(b) = std::fs::read(&p) {
                *n += b.iter().filter(|&&c| c == b'\n').count();
            }
        }
    }
    let mut n = 0;
    walk(out, &mut n);
    n
}

fn store_at(dir: &Path) -> Result<Location> {
    Location::resolve(
        dir.to_str().unwrap_or_default(),
        "checkpoint.path",
        dir,
        true,
    )
    .map_err(Error::Usage)
}

/// Runs the benchmark; the report as text (a Markdown table).
pub fn run(opts: &Options) -> Result<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::io("starting a runtime"))?;
    let mut report = String::from("| measure | value |\n|---|---|\n");
    let (kill_ms, join_ms) = failover(opts, &rt)?;
    report.push_str(&format!(
        "| SIGKILL of 1 of 3 hosts -> each of its partitions committed by a new owner | {kill_ms} ms (lease expiry 3 s, claim interval 1 s) |\n| a new host starts -> it owns its share (2 of 8) | {join_ms} ms (from process start) |\n"
    ));
    for n in 1..=3 {
        let (records, cpu, wall) = scaling(opts, n)?;
        report.push_str(&format!(
            "| {n} host(s): {records} records | {:.2} CPU-s per million records in all, {:.2} per host; {:.1} s wall |\n",
            cpu / (records as f64 / 1e6),
            cpu / n as f64 / (records as f64 / 1e6),
            wall.as_secs_f64()
        ));
    }
    Ok(report)
}

fn failover(opts: &Options, rt: &tokio::runtime::Runtime) -> Result<(i64, u128)> {
    let dir = opts.dir.join("failover");
    let _ = std::fs::remove_dir_all(&dir);
    let p = pipeline(&dir)?;
    let leases = Leases::new(store_at(&dir.join("checkpoints"))?, PARTITIONS);
    let chains = Chains::new(store_at(&dir.join("checkpoints"))?);
    let hosts: Vec<Host> = ["h0", "h1", "h2"]
        .iter()
        .map(|n| Host::start(opts, &p, n))
        .collect::<Result<_>>()?;
    wait("3 hosts balanced", Duration::from_secs(60), || {
        let o = owners(rt, &leases);
        o.iter().all(Option::is_some) && {
            let c = |h: &str| o.iter().flatten().filter(|x| *x == h).count();
            let mut v = vec![c("h0"), c("h1"), c("h2")];
            v.sort();
            v == vec![2, 3, 3]
        }
    })?;
    let stop = Arc::new(AtomicBool::new(false));
    let feeder = {
        let (d, s) = (dir.clone(), stop.clone());
        std::thread::spawn(move || {
            for i in 0.. {
                if s.load(Ordering::Relaxed) || drop_input(&d, i, 200).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(40));
            }
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    let victims: Vec<u32> = owners(rt, &leases)
        .iter()
        .enumerate()
        .filter(|(_, o)| o.as_deref() == Some("h2"))
        .map(|(p, _)| p as u32)
        .collect();
    let mut hosts = hosts;
    let killed = hosts.pop().expect("three hosts");
    drop(killed);
    let t0 = crate::clock::now_ms();
    let mut done: Vec<Option<i64>> = vec![None; victims.len()];
    let result = wait(
        "the killed host's partitions committed elsewhere",
        Duration::from_secs(60),
        || {
            for (i, &p) in victims.iter().enumerate() {
                if done[i].is_some() {
                    continue;
                }
                let Ok(seqs) = rt.block_on(chains.list(p)) else {
                    continue;
                };
                for &s in seqs.iter().rev().take(4) {
                    if let Ok(l) = rt.block_on(chains.read(p, s))
                        && l.batch.is_some()
                        && !l.member.starts_with("h2-")
                        && l.written_ms >= t0
                    {
                        done[i] = Some(l.written_ms - t0);
                    }
                }
            }
            done.iter().all(Option::is_some)
        },
    );
    let kill_ms = result.map(|_| done.iter().flatten().copied().max().unwrap_or(0));
    let joined = Instant::now();
    let newcomer = Host::start(opts, &p, "h3");
    let join = newcomer.and_then(|_h| {
        wait(
            "a new host owning its share",
            Duration::from_secs(60),
            || {
                owners(rt, &leases)
                    .iter()
                    .flatten()
                    .filter(|o| *o == "h3")
                    .count()
                    >= 2
            },
        )
        .map(|_| joined.elapsed().as_millis())
    });
    stop.store(true, Ordering::Relaxed);
    let _ = feeder.join();
    drop(hosts);
    Ok((kill_ms?, join?))
}

/// `n` hosts read the same input to its end; the records, the CPU seconds of all hosts, and
/// the wall time from the first host's start.
fn scaling(opts: &Options, n: usize) -> Result<(usize, f64, Duration)> {
    let dir = opts.dir.join(format!("scaling-{n}"));
    let _ = std::fs::remove_dir_all(&dir);
    let p = pipeline(&dir)?;
    let (files, lines) = if opts.quick {
        (16, 10_000)
    } else {
        (32, 25_000)
    };
    for i in 0..files {
        drop_input(&dir, i, lines)?;
    }
    let t = Instant::now();
    let hosts: Vec<Host> = (0..n)
        .map(|i| Host::start(opts, &p, &format!("h{i}")))
        .collect::<Result<_>>()?;
    let total = files * lines;
    wait(
        "the whole input committed",
        Duration::from_secs(300),
        || output_lines(&dir.join("out")) >= total,
    )?;
    let wall = t.elapsed();
    let cpu: f64 = hosts.iter().map(Host::cpu_seconds).sum();
    Ok((total, cpu, wall))
}
