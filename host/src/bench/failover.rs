//! `sluice bench failover`: what several hosts (`[ha]`) cost and how fast partitions move.
//!
//! Every run uses real `sluice run` children (this binary) on one pipeline file and one local
//! checkpoint directory: files source of 8 partitions → `uppercase` → files sink, 200 ms
//! batches, `claim-interval = "1s"`, `lease-expiry = "3s"` (a deployment's 10 s / 30 s scale
//! the move times by ten). A feeder writes a file of 1,000 lines every 20 ms (50,000 lines/s)
//! the way the files source requires (written under `.tmp`, renamed into place).
//!
//! - **Move after a kill**: hosts `a` and `b` share the partitions (4/4); `a` is SIGKILLed; the
//!   time from the signal to the last of `a`'s partitions having a batch with records
//!   committed by `b` (the partition chain's head link: `b`'s, with a batch), and to `b`
//!   owning them all (the leases).
//! - **A new host takes its share**: `b` alone owns all 8; host `c` starts; the time until `c`
//!   owns its share (4) and until each of them has a batch committed by `c`.
//! - **Scaling**: 1, 2 and 3 hosts, balanced on an empty directory, then a backlog of files is
//!   renamed in at once; wall time until the hosts' reports add up to every line, and the
//!   CPU time each host spent (`/proc/<pid>/stat`). This machine has 2 cores, so wall
//!   throughput cannot grow past 2 hosts: the scaling measure is CPU-seconds per million
//!   records (all hosts together, and per host), which stays flat when sharing costs nothing.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::ha::chain::Chains;
use crate::ha::lease::{Leases, Record};
use crate::store::Location;

use super::child::{Driver, RunCommand, epoch_ms, read_report};

const PARTITIONS: u32 = 8;
const LINES_PER_FILE: usize = 1_000;
const FEED_EVERY: Duration = Duration::from_millis(20);
const TIMEOUT: Duration = Duration::from_secs(60);

/// What `sluice bench failover` is asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// The plugin directory (holding `uppercase.wasm`).
    pub plugins: PathBuf,
    /// The compiled-component cache the children use, when not the default.
    pub cache_dir: Option<PathBuf>,
    /// Kill and join trials.
    pub trials: u32,
    /// Lines of the scaling backlog.
    pub lines: usize,
}

/// One kill-then-join trial, ms after the signal (or the new host's start).
#[derive(Debug, Clone, Default)]
struct Trial {
    kill_leases_ms: f64,
    kill_commit_ms: f64,
    join_leases_ms: f64,
    join_commit_ms: f64,
}

/// One scaling run.
#[derive(Debug, Clone)]
struct Scale {
    hosts: usize,
    wall_s: f64,
    cpu_s: Vec<f64>,
}

/// Runs the benchmark and returns its report (Markdown tables).
pub fn run(opts: &Options) -> Result<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::io("starting a runtime"))?;
    let cmd = RunCommand {
        exe: std::env::current_exe().map_err(Error::io("finding this binary"))?,
        plugins: opts.plugins.clone(),
        cache_dir: opts.cache_dir.clone(),
    };
    let mut trials = Vec::new();
    for i in 0..opts.trials {
        let dir = Bench::new(&rt, &format!("move-{i}"))?;
        trials.push(dir.move_trial(&cmd)?);
    }
    let mut scales = Vec::new();
    for round in 0..opts.trials {
        for hosts in 1..=3 {
            let dir = Bench::new(&rt, &format!("scale-{hosts}-{round}"))?;
            scales.push(dir.scale(&cmd, hosts, opts.lines)?);
        }
    }
    Ok(report(&trials, &scales, opts.lines))
}

/// One trial's directory: the pipeline, its input, checkpoints and output.
struct Bench<'a> {
    rt: &'a tokio::runtime::Runtime,
    dir: Scratch,
    pipeline: PathBuf,
    leases: Leases,
    chains: Chains,
}

impl<'a> Bench<'a> {
    fn new(rt: &'a tokio::runtime::Runtime, name: &str) -> Result<Self> {
        let dir = Scratch(std::env::temp_dir().join(format!(
            "sluice-bench-failover-{name}-{}",
            std::process::id()
        )));
        let _ = std::fs::remove_dir_all(dir.path());
        let path = dir.path();
        for sub in ["in", "backlog", "checkpoints"] {
            std::fs::create_dir_all(path.join(sub)).map_err(Error::io("making a directory"))?;
        }
        let pipeline = path.join("pipeline.toml");
        std::fs::write(&pipeline, PIPELINE).map_err(Error::io("writing the pipeline file"))?;
        let at = Location::resolve(
            &path.join("checkpoints").to_string_lossy(),
            "checkpoint.path",
            path,
            true,
        )
        .map_err(Error::Usage)?;
        Ok(Bench {
            rt,
            pipeline,
            leases: Leases::new(at.clone(), PARTITIONS),
            chains: Chains::new(at),
            dir,
        })
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    fn host(&self, cmd: &RunCommand, name: &str) -> Result<Driver> {
        cmd.start_as(
            &self.pipeline,
            &self.path(&format!("{name}.report.jsonl")),
            &self.path(&format!("{name}.log")),
            name,
        )
    }

    /// Every partition's live owner's name (the member id up to its last `-`), now.
    fn owners(&self) -> Result<Vec<Option<String>>> {
        let now = epoch_ms();
        let records = self
            .rt
            .block_on(self.leases.read())
            .map_err(|e| Error::Usage(e.to_string()))?;
        Ok(records
            .into_iter()
            .map(|r: Option<Record>| r.filter(|r| r.live(now)).map(|r| name_of(&r.owner)))
            .collect())
    }

    /// The partitions `name` owns.
    fn owned_by(&self, name: &str) -> Result<Vec<u32>> {
        Ok(self
            .owners()?
            .iter()
            .enumerate()
            .filter(|(_, o)| o.as_deref() == Some(name))
            .map(|(p, _)| p as u32)
            .collect())
    }

    /// Whether the head link of `partition` is a batch committed by host `name`, and when
    /// it was written.
    fn committed_by(&self, partition: u32, name: &str) -> Result<Option<i64>> {
        let head = self
            .rt
            .block_on(self.chains.head(partition))
            .map_err(|e| Error::Usage(e.to_string()))?;
        Ok(head
            .link
            .filter(|l| l.batch.is_some() && name_of(&l.member) == name)
            .map(|l| l.written_ms))
    }

    /// Waits until `ok` holds, polling every 10 ms; an error naming `what` after [`TIMEOUT`].
    fn wait(&self, what: &str, mut ok: impl FnMut() -> Result<bool>) -> Result<()> {
        let deadline = Instant::now() + TIMEOUT;
        while !ok()? {
            if Instant::now() > deadline {
                return Err(Error::Usage(format!(
                    "bench failover: {what} did not happen within {TIMEOUT:?} (logs in {})",
                    self.dir.path().display()
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Hosts a and b share the feed; a is killed; then c joins b.
    fn move_trial(&self, cmd: &RunCommand) -> Result<Trial> {
        let feeder = Feeder::start(self.path("in"));
        let mut a = self.host(cmd, "a")?;
        let _b = self.host(cmd, "b")?;
        self.wait("a and b sharing the partitions 4/4", || {
            Ok(self.owned_by("a")?.len() == 4 && self.owned_by("b")?.len() == 4)
        })?;
        let lost = self.owned_by("a")?;
        self.wait("a committing each of its partitions", || {
            Ok(lost
                .iter()
                .all(|&p| self.committed_by(p, "a").ok().flatten().is_some()))
        })?;
        let killed = a.kill()?;
        let (leases, commits) = self.moved(&lost, "b", killed)?;
        let mut trial = Trial {
            kill_leases_ms: leases,
            kill_commit_ms: commits,
            ..Trial::default()
        };
        let started = epoch_ms();
        let _c = self.host(cmd, "c")?;
        self.wait("c owning its share", || Ok(self.owned_by("c")?.len() == 4))?;
        trial.join_leases_ms = (epoch_ms() - started) as f64;
        let share = self.owned_by("c")?;
        let (_, commits) = self.moved(&share, "c", started)?;
        trial.join_commit_ms = commits;
        feeder.stop();
        Ok(trial)
    }

    /// Waits until `to` owns `partitions` and has committed a batch of each; ms after `since`
    /// for both.
    fn moved(&self, partitions: &[u32], to: &str, since: i64) -> Result<(f64, f64)> {
        let mut leases = None;
        let mut last_commit = vec![None; partitions.len()];
        self.wait(
            &format!("partitions {partitions:?} committing on {to}"),
            || {
                if leases.is_none() {
                    let owners = self.owners()?;
                    if partitions
                        .iter()
                        .all(|&p| owners[p as usize].as_deref() == Some(to))
                    {
                        leases = Some(epoch_ms());
                    }
                }
                for (i, &p) in partitions.iter().enumerate() {
                    if last_commit[i].is_none() {
                        last_commit[i] = self.committed_by(p, to)?;
                    }
                }
                Ok(leases.is_some() && last_commit.iter().all(Option::is_some))
            },
        )?;
        let commit = last_commit.iter().flatten().max().copied().unwrap_or(since);
        Ok((
            (leases.unwrap_or(since) - since) as f64,
            (commit - since) as f64,
        ))
    }

    /// `hosts` hosts balanced on an empty input, then `lines` lines renamed in at once.
    fn scale(&self, cmd: &RunCommand, hosts: usize, lines: usize) -> Result<Scale> {
        let names: Vec<String> = (0..hosts).map(|i| format!("h{i}")).collect();
        let drivers: Vec<Driver> = names
            .iter()
            .map(|n| self.host(cmd, n))
            .collect::<Result<_>>()?;
        let share = PARTITIONS as usize / hosts;
        self.wait(&format!("{hosts} hosts sharing the partitions"), || {
            let owners = self.owners()?;
            Ok(owners.iter().all(Option::is_some)
                && names.iter().all(|n| {
                    let k = owners.iter().filter(|o| o.as_deref() == Some(n)).count();
                    k == share || k == share + 1
                }))
        })?;
        let files = lines.div_ceil(LINES_PER_FILE);
        for i in 0..files {
            write_file(&self.path("backlog"), i)?;
        }
        let cpu_before: Vec<f64> = drivers.iter().map(|d| cpu_seconds(d.pid())).collect();
        let started = Instant::now();
        for i in 0..files {
            let name = format!("f-{i:06}.txt");
            std::fs::rename(
                self.path("backlog").join(&name),
                self.path("in").join(&name),
            )
            .map_err(Error::io("moving a backlog file in"))?;
        }
        let want = (files * LINES_PER_FILE) as u64;
        self.wait(&format!("{hosts} hosts committing {want} lines"), || {
            let done: u64 = names
                .iter()
                .flat_map(|n| read_report(&self.path(&format!("{n}.report.jsonl"))))
                .map(|b| b.records_in)
                .sum();
            Ok(done >= want)
        })?;
        let wall_s = started.elapsed().as_secs_f64();
        let cpu_s = drivers
            .iter()
            .zip(&cpu_before)
            .map(|(d, before)| cpu_seconds(d.pid()) - before)
            .collect();
        Ok(Scale {
            hosts,
            wall_s,
            cpu_s,
        })
    }
}

/// A benchmark's own directory, removed when dropped (a failed wait names it first, and
/// `SLUICE_BENCH_KEEP=1` keeps it).
struct Scratch(PathBuf);

impl Scratch {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::env::var_os("SLUICE_BENCH_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A host's name from its member id (`<name>-<random>`).
fn name_of(member: &str) -> String {
    member
        .rsplit_once('-')
        .map_or(member, |(name, _)| name)
        .to_owned()
}

/// Writes input file `i` into `dir` under `.tmp`, renamed into place.
fn write_file(dir: &Path, i: usize) -> Result<()> {
    let mut text = String::with_capacity(LINES_PER_FILE * 40);
    for j in 0..LINES_PER_FILE {
        let _ = writeln!(text, "file {i:06} line {j:04} the quick brown fox");
    }
    let tmp = dir.join(format!("f-{i:06}.tmp"));
    std::fs::write(&tmp, text).map_err(Error::io("writing an input file"))?;
    std::fs::rename(&tmp, dir.join(format!("f-{i:06}.txt")))
        .map_err(Error::io("renaming an input file"))
}

fn cpu_seconds(pid: u32) -> f64 {
    super::pipeline::cpu_seconds_of(&pid.to_string())
}

/// Writes a file into the input directory every [`FEED_EVERY`] until stopped.
struct Feeder {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Feeder {
    fn start(dir: PathBuf) -> Feeder {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut i = 0;
            while !flag.load(Ordering::Relaxed) {
                if write_file(&dir, i).is_err() {
                    return;
                }
                i += 1;
                std::thread::sleep(FEED_EVERY);
            }
        });
        Feeder {
            stop,
            thread: Some(thread),
        }
    }

    fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        self.halt();
    }
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

/// A row of the move table: its name and the trial's measure.
type Row = (&'static str, fn(&Trial) -> f64);

fn runs_of(scales: &[Scale]) -> usize {
    scales.iter().filter(|s| s.hosts == 1).count()
}

fn report(trials: &[Trial], scales: &[Scale], lines: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Failover, {} trials (claim-interval 1s, lease-expiry 3s, 200 ms batches, 50,000 lines/s fed): median (min–max), ms\n",
        trials.len()
    );
    let _ = writeln!(out, "| measure | median | range |\n|---|---|---|");
    let rows: [Row; 4] = [
        ("SIGKILL → its partitions' leases on the survivor", |t| {
            t.kill_leases_ms
        }),
        (
            "SIGKILL → each of them committed a batch on the survivor",
            |t| t.kill_commit_ms,
        ),
        ("new host started → owns its share (4 of 8)", |t| {
            t.join_leases_ms
        }),
        ("new host started → committed a batch of each", |t| {
            t.join_commit_ms
        }),
    ];
    for (name, f) in rows {
        let (m, lo, hi) = median(trials.iter().map(f).collect());
        let _ = writeln!(out, "| {name} | {m:.0} | {lo:.0}–{hi:.0} |");
    }
    let _ = writeln!(
        out,
        "\nScaling: {lines} lines (files → uppercase → files) renamed in at once, hosts already balanced\n"
    );
    let _ = writeln!(
        out,
        "| hosts | wall s | lines/s | CPU-s per M lines, all hosts | CPU-s per M lines per host |\n|---|---|---|---|---|"
    );
    let millions = lines as f64 / 1e6;
    for hosts in 1..=3 {
        let runs: Vec<&Scale> = scales.iter().filter(|s| s.hosts == hosts).collect();
        let (wall, wall_lo, wall_hi) = median(runs.iter().map(|s| s.wall_s).collect());
        let (cpu, cpu_lo, cpu_hi) = median(
            runs.iter()
                .map(|s| s.cpu_s.iter().sum::<f64>() / millions)
                .collect(),
        );
        let _ = writeln!(
            out,
            "| {hosts} | {wall:.2} ({wall_lo:.2}–{wall_hi:.2}) | {:.0} | {cpu:.2} ({cpu_lo:.2}–{cpu_hi:.2}) | {:.2} |",
            lines as f64 / wall.max(1e-9),
            cpu / hosts as f64
        );
    }
    let _ = writeln!(
        out,
        "\n{} rounds, hosts 1, 2, 3 alternating; median (min–max). This machine has 2 cores: wall throughput cannot scale past 2 hosts, CPU-seconds per million lines is the scaling measure (flat = sharing costs nothing).",
        runs_of(scales)
    );
    out
}

const PIPELINE: &str = r#"version = 1
batch-interval = "200ms"
block-interval = "100ms"

[source]
kind = "files"
path = "in"
partitions = 8
poll-interval = "50ms"

[[transform]]
plugin = "uppercase"

[[sink]]
kind = "files"
path = "out"

[checkpoint]
path = "checkpoints"

[ha]
claim-interval = "1s"
lease-expiry = "3s"
"#;
