//! The kill harness: runs a pipeline, SIGKILLs it at seeded random points, restarts it, and
//! keeps an [`Ledger`] of every version of every output file it ever saw, so that a replayed
//! batch that replaces its file cannot hide the copies it replaced.
//!
//! Set `SLUICE_KILL_MEASURE=1` to turn the per-trial checks into printed warnings: the trials
//! then all run and the final report shows the whole damage (useful against a broken driver).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use object_store::ObjectStore;
use sha2::{Digest, Sha256};
use sluice_tests::plugins_dir;

use crate::engine::{Ended, Running, sluice_run};

// ---------------------------------------------------------------------------------------------
// The output ledger

/// An output file's content hash.
type Hash = [u8; 32];

/// One version of one output file.
struct Version {
    /// Its lines.
    records: Vec<String>,
}

/// Where the files sink writes: a local directory, or a prefix in a blob container.
#[derive(Clone)]
pub(crate) enum Output {
    /// A directory on the local file system.
    Dir(PathBuf),
    /// A prefix in an object store (Azurite in the tests).
    Blob {
        store: Arc<dyn ObjectStore>,
        prefix: object_store::path::Path,
    },
}

impl From<&Path> for Output {
    fn from(dir: &Path) -> Output {
        Output::Dir(dir.to_owned())
    }
}

impl From<&PathBuf> for Output {
    fn from(dir: &PathBuf) -> Output {
        Output::Dir(dir.clone())
    }
}

impl Output {
    /// Every output object now, by path relative to the root, with its bytes; names (at any
    /// depth) starting with `_` are skipped; an object that vanishes while being read is left
    /// out.
    fn read_all(&self) -> Vec<(PathBuf, Vec<u8>)> {
        match self {
            Output::Dir(root) => output_files(root)
                .into_iter()
                .filter_map(|path| match std::fs::read(&path) {
                    Ok(b) => Some((path.strip_prefix(root).unwrap().to_owned(), b)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                    Err(e) => panic!("reading {}: {e}", path.display()),
                })
                .collect(),
            Output::Blob { store, prefix } => blob_objects(store, prefix),
        }
    }
}

/// Every object under `prefix` with its bytes, skipping `_` names, in name order.
fn blob_objects(
    store: &Arc<dyn ObjectStore>,
    prefix: &object_store::path::Path,
) -> Vec<(PathBuf, Vec<u8>)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let metas: Vec<_> = store.list(Some(prefix)).try_collect().await.unwrap();
        let mut out = Vec::new();
        for meta in metas {
            let rel: Vec<_> = meta.location.prefix_match(prefix).unwrap().collect();
            if rel.iter().any(|p| p.as_ref().starts_with('_')) {
                continue;
            }
            let rel: PathBuf = rel.iter().map(|p| p.as_ref()).collect();
            match store.get(&meta.location).await {
                Ok(got) => out.push((rel, got.bytes().await.unwrap().to_vec())),
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => panic!("reading {}: {e}", meta.location),
            }
        }
        out.sort();
        out
    })
}

/// Every distinct (path, content) version of the files sink's output ever seen, and the state
/// of the last snapshot. Names starting with `_` (`_staging/`, `_commits/`) are not output.
pub(crate) struct Ledger {
    root: Output,
    versions: BTreeMap<PathBuf, BTreeMap<Hash, Version>>,
    current: BTreeMap<PathBuf, Hash>,
    stray: Vec<PathBuf>,
}

/// What one snapshot found.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Snapshot {
    /// Output files present.
    pub(crate) files: usize,
    /// Records in them.
    pub(crate) records: usize,
    /// Versions not seen before (new files, or files whose content changed).
    pub(crate) new_versions: usize,
}

/// Where an output file belongs: its stream, batch id and partition.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct PartFile {
    pub(crate) stream: String,
    pub(crate) batch: u64,
    pub(crate) partition: u32,
}

/// Parses `<stream>/batch-<id:010>-part-<partition:05>.txt` (relative to the sink's path).
pub(crate) fn part_file(rel: &Path) -> Option<PartFile> {
    let mut parts = rel.iter();
    let stream = parts.next()?.to_str()?.to_owned();
    let name = parts.next()?.to_str()?;
    if parts.next().is_some() {
        return None;
    }
    let (b, p) = name
        .strip_prefix("batch-")?
        .strip_suffix(".txt")?
        .split_once("-part-")?;
    if b.len() != 10 || p.len() != 5 || !(b.bytes().chain(p.bytes())).all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some(PartFile {
        stream,
        batch: b.parse().ok()?,
        partition: p.parse().ok()?,
    })
}

/// Every file under `dir`, recursively, skipping names that start with `_`.
fn output_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return files;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with('_') {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            files.extend(output_files(&path));
        } else {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The records of every output file under `root` now (no ledger): for polling a live run.
pub(crate) fn output_now(root: impl Into<Output>) -> Vec<String> {
    root.into()
        .read_all()
        .into_iter()
        .filter(|(rel, _)| part_file(rel).is_some())
        .flat_map(|(_, b)| {
            (String::from_utf8_lossy(&b).lines())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

impl Ledger {
    /// An empty ledger of the files sink writing under `root`.
    pub(crate) fn new(root: impl Into<Output>) -> Ledger {
        Ledger {
            root: root.into(),
            versions: BTreeMap::new(),
            current: BTreeMap::new(),
            stray: Vec::new(),
        }
    }

    /// Walks the output, hashes every file, and keeps each version not seen before.
    pub(crate) fn snapshot(&mut self) -> Snapshot {
        let (mut current, mut stray) = (BTreeMap::new(), Vec::new());
        let (mut records, mut new_versions) = (0, 0);
        for (rel, bytes) in self.root.read_all() {
            if part_file(&rel).is_none() {
                stray.push(rel);
                continue;
            }
            let hash: Hash = Sha256::digest(&bytes).into();
            let version = self
                .versions
                .entry(rel.clone())
                .or_default()
                .entry(hash)
                .or_insert_with(|| {
                    new_versions += 1;
                    Version {
                        records: String::from_utf8_lossy(&bytes)
                            .lines()
                            .map(str::to_owned)
                            .collect(),
                    }
                });
            records += version.records.len();
            current.insert(rel, hash);
        }
        let files = current.len();
        (self.current, self.stray) = (current, stray);
        Snapshot {
            files,
            records,
            new_versions,
        }
    }

    /// The records of the last snapshot, files in name order (batch, then partition).
    pub(crate) fn final_records(&self) -> Vec<String> {
        self.current_files()
            .into_values()
            .flat_map(|r| r.iter().cloned())
            .collect()
    }

    /// The last snapshot's records of `stream`, per partition, batches in order.
    pub(crate) fn by_partition(&self, stream: &str) -> BTreeMap<u32, Vec<String>> {
        let mut parts: BTreeMap<u32, Vec<String>> = BTreeMap::new();
        for (file, records) in self.current_files() {
            if file.stream == stream {
                parts
                    .entry(file.partition)
                    .or_default()
                    .extend(records.iter().cloned());
            }
        }
        parts
    }

    fn current_files(&self) -> BTreeMap<PartFile, &[String]> {
        self.current
            .iter()
            .map(|(rel, hash)| {
                let records = &self.versions[rel][hash].records;
                (part_file(rel).unwrap(), records.as_slice())
            })
            .collect()
    }

    /// Counts the ledger against the records that were expected (a multiset).
    pub(crate) fn report(&self, expected: &[String]) -> Report {
        let mut want: HashMap<&str, usize> = HashMap::new();
        for r in expected {
            *want.entry(r.as_str()).or_default() += 1;
        }
        let mut ever: HashMap<&str, usize> = HashMap::new();
        for version in self.versions.values().flat_map(BTreeMap::values) {
            for r in &version.records {
                *ever.entry(r.as_str()).or_default() += 1;
            }
        }
        let mut now: HashMap<&str, usize> = HashMap::new();
        for (rel, hash) in &self.current {
            for r in &self.versions[rel][hash].records {
                *now.entry(r.as_str()).or_default() += 1;
            }
        }
        let mut report = Report {
            expected: expected.len(),
            final_records: now.values().sum(),
            replaced_files: self.versions.values().filter(|v| v.len() > 1).count(),
            removed_files: (self.versions.keys())
                .filter(|p| !self.current.contains_key(*p))
                .count(),
            stray_files: self.stray.clone(),
            ..Report::default()
        };
        for (&r, &n) in &want {
            let (seen, kept) = (
                ever.get(r).copied().unwrap_or(0),
                now.get(r).copied().unwrap_or(0),
            );
            let never = n.saturating_sub(seen);
            let overwritten = n.saturating_sub(kept).saturating_sub(never);
            report.lost_never_committed += never;
            report.lost_overwritten += overwritten;
            report.duplicated += seen.saturating_sub(n);
            note(&mut report.sample_lost, r, never + overwritten);
            note(&mut report.sample_duplicated, r, seen.saturating_sub(n));
        }
        for (&r, &n) in &ever {
            if !want.contains_key(r) {
                report.unexpected += n;
                note(&mut report.sample_unexpected, r, n);
            }
        }
        report
    }
}

fn note(samples: &mut Vec<String>, record: &str, count: usize) {
    if count > 0 && samples.len() < 3 {
        samples.push(record.to_owned());
    }
}

/// The ledger counted against the expected records.
#[derive(Debug, Default)]
pub(crate) struct Report {
    /// Records expected.
    pub(crate) expected: usize,
    /// Records in the final state.
    pub(crate) final_records: usize,
    /// Expected records never in any version of any file.
    pub(crate) lost_never_committed: usize,
    /// Expected records seen in an earlier version, absent from the final state.
    pub(crate) lost_overwritten: usize,
    /// Copies beyond the expected count, over every version ever seen.
    pub(crate) duplicated: usize,
    /// Records nobody expected (every copy, over every version).
    pub(crate) unexpected: usize,
    /// Paths seen with more than one content.
    pub(crate) replaced_files: usize,
    /// Paths seen once and absent from the final state.
    pub(crate) removed_files: usize,
    /// Files in the final state that are not `<stream>/batch-…-part-….txt`.
    pub(crate) stray_files: Vec<PathBuf>,
    sample_lost: Vec<String>,
    sample_duplicated: Vec<String>,
    sample_unexpected: Vec<String>,
}

impl Report {
    /// Lost, of both kinds.
    pub(crate) fn lost(&self) -> usize {
        self.lost_never_committed + self.lost_overwritten
    }

    /// Whether the output is exactly the expected records, with no file replaced or removed.
    pub(crate) fn exact(&self) -> bool {
        self.lost() == 0
            && self.duplicated == 0
            && self.unexpected == 0
            && self.replaced_files == 0
            && self.removed_files == 0
            && self.stray_files.is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "expected {} records, final output {}; lost {} ({} never committed, {} committed then overwritten/removed); duplicated {}; unexpected {}; files replaced {}, removed {}; stray files {:?}",
            self.expected,
            self.final_records,
            self.lost(),
            self.lost_never_committed,
            self.lost_overwritten,
            self.duplicated,
            self.unexpected,
            self.replaced_files,
            self.removed_files,
            self.stray_files.iter().take(5).collect::<Vec<_>>(),
        )?;
        for (what, s) in [
            ("lost", &self.sample_lost),
            ("duplicated", &self.sample_duplicated),
            ("unexpected", &self.sample_unexpected),
        ] {
            if !s.is_empty() {
                write!(f, "; e.g. {what}: {s:?}")?;
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Checks, timing, kill points

/// Whether `SLUICE_KILL_MEASURE=1`: per-trial checks print instead of failing.
fn measuring() -> bool {
    std::env::var("SLUICE_KILL_MEASURE").is_ok_and(|v| v == "1")
}

/// A per-trial check: fails the test, or with `SLUICE_KILL_MEASURE=1` only says so.
pub(crate) fn check(ok: bool, what: impl FnOnce() -> String) {
    if ok {
        return;
    }
    let what = what();
    assert!(measuring(), "{what}");
    eprintln!("!!! WOULD FAIL (SLUICE_KILL_MEASURE=1): {what}");
}

/// Prints how long a test took when it ends, passed or failed.
pub(crate) struct Timer(pub(crate) &'static str, pub(crate) Instant);

impl Timer {
    /// Starts timing test `tag`.
    pub(crate) fn start(tag: &'static str) -> Timer {
        eprintln!("[{tag}] started");
        Timer(tag, Instant::now())
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        let how = if std::thread::panicking() {
            "FAILED"
        } else {
            "passed"
        };
        eprintln!(
            "[{}] {how} in {:.1} s",
            self.0,
            self.1.elapsed().as_secs_f64()
        );
    }
}

/// Seeded kill points, so a failing trial can be replayed: 150 to 1,500 ms into a run, and
/// every sixth trial (from the fourth) during start-up, 30 to 150 ms in.
pub(crate) struct KillPoints(u64);

impl KillPoints {
    /// The kill points of `seed`.
    pub(crate) fn new(seed: u64) -> KillPoints {
        KillPoints(seed)
    }

    /// The kill point of trial `n` (from 0), in ms after the start.
    pub(crate) fn next(&mut self, n: usize) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let r = self.0 >> 33;
        if n % 6 == 3 {
            30 + r % 120
        } else {
            150 + r % 1350
        }
    }
}

/// The `replayed_records` values in a log (text `replayed_records=N` or JSON
/// `"replayed_records":N`).
pub(crate) fn replayed_records(log: &str) -> Vec<u64> {
    log_values(log, "replayed_records")
}

/// The values of the numeric log field `field` in a log (text `field=N` or JSON
/// `"field":N`).
pub(crate) fn log_values(log: &str, field: &str) -> Vec<u64> {
    let mut found = Vec::new();
    for pat in [format!("{field}="), format!("\"{field}\":")] {
        let pat = pat.as_str();
        let mut rest = log;
        while let Some(at) = rest.find(pat) {
            rest = &rest[at + pat.len()..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            if let Ok(n) = digits.parse() {
                found.push(n);
            }
        }
    }
    found
}

// ---------------------------------------------------------------------------------------------
// Trials

/// With `SLUICE_KILL_LOGS=<dir>`, writes a run's log to `<dir>/<tag>/<name>.log`, to read
/// what each killed run did after a failure.
pub(crate) fn keep_log(tag: &str, name: &str, log: &str) {
    let Some(dir) = std::env::var_os("SLUICE_KILL_LOGS") else {
        return;
    };
    let dir = PathBuf::from(dir).join(tag.replace([' ', '/'], "-"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.log")), log).unwrap();
}

/// What one trial did.
pub(crate) struct Trial {
    /// Its number, from 1.
    pub(crate) n: usize,
    /// When it was to be killed, ms after its start.
    pub(crate) kill_ms: u64,
    /// How it ended when it ended by itself before the kill.
    pub(crate) exited: Option<ExitStatus>,
    /// Its log.
    pub(crate) log: String,
    /// The output after it.
    pub(crate) snapshot: Snapshot,
}

/// A pipeline under test: where it runs, and the ledger of its files sink.
pub(crate) struct Harness<'a> {
    tag: &'a str,
    dir: &'a Path,
    pipeline: &'a Path,
    plugins: PathBuf,
    /// The ledger of the sink's output.
    pub(crate) ledger: Ledger,
    /// Environment variables of every run.
    env: Vec<(String, String)>,
    /// A directory whose new files kill every fourth trial ([`Harness::kill_on_new_file_in`]).
    watch: Option<PathBuf>,
}

impl<'a> Harness<'a> {
    /// The harness of `pipeline` (in `dir`) whose files sink writes under `out`.
    pub(crate) fn new(
        tag: &'a str,
        dir: &'a Path,
        pipeline: &'a Path,
        out: impl Into<Output>,
    ) -> Self {
        Harness {
            tag,
            dir,
            pipeline,
            plugins: plugins_dir(),
            ledger: Ledger::new(out),
            env: Vec::new(),
            watch: None,
        }
    }

    /// Starts `sluice run` on the pipeline.
    pub(crate) fn start(&self) -> Running {
        let mut command = sluice_run(self.dir, self.pipeline, &self.plugins);
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        Running::start(command)
    }

    /// Sets an environment variable of every run (a fault injection, say).
    pub(crate) fn with_env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Kills the 2nd, 6th, 10th... trial as soon as a file appears in `dir` that was not there
    /// at its start (a write-ahead-log segment, say), rather than at a seeded point: a kill
    /// between that write and what follows it (the batch's commit), however fast the run is.
    pub(crate) fn kill_on_new_file_in(mut self, dir: PathBuf) -> Self {
        self.watch = Some(dir);
        self
    }

    /// Runs `kills` trials: start, SIGKILL at the seeded point (unless it ended by itself, which
    /// must be a success), snapshot the ledger, print one line, then `after` (the test's
    /// per-trial checks).
    pub(crate) fn kill_trials(
        &mut self,
        kills: usize,
        seed: u64,
        mut after: impl FnMut(&Trial, &Ledger),
    ) -> Vec<Trial> {
        let mut points = KillPoints::new(seed);
        let mut trials = Vec::new();
        for i in 0..kills {
            let mut kill_ms = points.next(i);
            let watch = self.watch.as_deref().filter(|_| i % 4 == 1);
            // Whole files only: a name with `#` is staged, not written yet.
            let names = |d: &Path| -> HashSet<String> {
                let entries = std::fs::read_dir(d).into_iter().flatten().flatten();
                let names = entries.filter_map(|e| e.file_name().into_string().ok());
                names.filter(|n| !n.contains('#')).collect()
            };
            let before = watch.map(names).unwrap_or_default();
            if watch.is_some() {
                // The new file, not the seeded point, ends it (unless none comes in 10 s).
                kill_ms = 10_000;
            }
            let mut sluice = self.start();
            let exited = loop {
                if let Some(status) = sluice.try_status() {
                    break Some(status);
                }
                if sluice.age() >= Duration::from_millis(kill_ms) {
                    break None;
                }
                if watch.is_some_and(|d| !names(d).is_subset(&before)) {
                    kill_ms = sluice.age().as_millis() as u64;
                    break None;
                }
                std::thread::sleep(Duration::from_millis(5));
            };
            let log = match exited {
                Some(status) => {
                    let ended = sluice.wait(Duration::from_secs(5));
                    assert!(
                        status.success(),
                        "[{}] trial {}: sluice ended by itself ({status}) before its kill at {kill_ms} ms; its log:\n{}",
                        self.tag,
                        i + 1,
                        ended.stderr
                    );
                    ended.stderr
                }
                None => sluice.kill_hard(),
            };
            assert!(
                !log.contains("panicked"),
                "[{}] trial {}: sluice panicked:\n{log}",
                self.tag,
                i + 1
            );
            keep_log(self.tag, &format!("trial-{:02}", i + 1), &log);
            let snapshot = self.ledger.snapshot();
            let trial = Trial {
                n: i + 1,
                kill_ms,
                exited,
                log,
                snapshot,
            };
            eprintln!("[{}] {}", self.tag, trial.line(kills));
            after(&trial, &self.ledger);
            trials.push(trial);
        }
        trials
    }

    /// Polls `done` (every 250 ms) until it holds and the run is at least 1.5 s old (past its
    /// start-up, so a stop that follows tests the batch loop's), the run exits, or `timeout`
    /// passes; says which, and how long it took.
    pub(crate) fn wait_until(
        &self,
        sluice: &mut Running,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut() -> bool,
    ) -> bool {
        let t0 = Instant::now();
        loop {
            if done() && sluice.age() >= Duration::from_millis(1500) {
                eprintln!(
                    "[{}] final run: {what} after {:.1} s",
                    self.tag,
                    t0.elapsed().as_secs_f64()
                );
                return true;
            }
            if let Some(status) = sluice.try_status() {
                eprintln!("[{}] final run ended ({status}) before {what}", self.tag);
                return false;
            }
            if t0.elapsed() >= timeout {
                eprintln!("[{}] final run: no {what} within {timeout:?}", self.tag);
                return false;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Stops a run with SIGTERM and says how it ended (see [`assert_stopped`]).
    pub(crate) fn terminate(&self, sluice: Running) -> Ended {
        sluice.terminate();
        let ended = sluice.wait(Duration::from_secs(30));
        eprintln!("[{}] SIGTERM: sluice ended with {}", self.tag, ended.status);
        ended
    }
}

/// Asserts that a run stopped by SIGTERM exited with 0.
pub(crate) fn assert_stopped(tag: &str, ended: &Ended) {
    assert_eq!(
        ended.status.code(),
        Some(0),
        "[{tag}] SIGTERM must stop sluice with exit 0, it ended with {}; the end of its log:\n{}",
        ended.status,
        tail(&ended.stderr, 20)
    );
}

/// The last `n` lines of `log`.
pub(crate) fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Trial {
    /// One line for the CI log.
    fn line(&self, of: usize) -> String {
        let how = match self.exited {
            Some(s) => format!(
                "ended by itself ({s}) before the kill at {} ms",
                self.kill_ms
            ),
            None => format!("SIGKILL at {:>4} ms", self.kill_ms),
        };
        let replayed = replayed_records(&self.log);
        format!(
            "trial {:>2}/{of}: {how}; output now {} files, {} records ({} new versions){}",
            self.n,
            self.snapshot.files,
            self.snapshot.records,
            self.snapshot.new_versions,
            if replayed.is_empty() {
                String::new()
            } else {
                format!("; replayed_records={replayed:?}")
            }
        )
    }
}

// ---------------------------------------------------------------------------------------------
// The ledger's own tests

fn write(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn the_ledger_counts_a_replaced_files_old_records_even_when_the_final_state_looks_clean() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write(root, "s/batch-0000000000-part-00000.txt", "a\nb\n");
    write(root, "s/batch-0000000000-part-00001.txt", "c\n");
    let mut ledger = Ledger::new(root);
    let s = ledger.snapshot();
    assert_eq!((s.files, s.records, s.new_versions), (2, 3, 2));
    // A restart recomputes batch 0 from other records and replaces its file: a and b vanish.
    write(root, "s/batch-0000000000-part-00000.txt", "d\n");
    write(root, "s/batch-0000000001-part-00000.txt", "c\ne\n");
    let s = ledger.snapshot();
    assert_eq!((s.files, s.records, s.new_versions), (3, 4, 2));
    let r = ledger.report(&strings(&["a", "b", "c", "d", "e", "f"]));
    assert_eq!(r.lost_never_committed, 1, "f: {r}");
    assert_eq!(r.lost_overwritten, 2, "a and b: {r}");
    assert_eq!(r.duplicated, 1, "c twice: {r}");
    assert_eq!((r.replaced_files, r.removed_files), (1, 0), "{r}");
    assert_eq!(r.final_records, 4);
    assert!(!r.exact());
    // A snapshot that sees nothing new changes no count.
    assert_eq!(ledger.snapshot().new_versions, 0);
    assert_eq!(
        ledger
            .report(&strings(&["a", "b", "c", "d", "e", "f"]))
            .duplicated,
        1
    );
}

#[test]
fn the_ledger_counts_a_removed_file_and_a_record_twice_in_one_file() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write(root, "s/batch-0000000000-part-00000.txt", "a\n");
    write(root, "s/batch-0000000001-part-00000.txt", "b\nb\n");
    let mut ledger = Ledger::new(root);
    ledger.snapshot();
    std::fs::remove_file(root.join("s/batch-0000000000-part-00000.txt")).unwrap();
    ledger.snapshot();
    let r = ledger.report(&strings(&["a", "b"]));
    assert_eq!(
        (r.lost_overwritten, r.duplicated, r.removed_files),
        (1, 1, 1),
        "{r}"
    );
    assert_eq!(ledger.final_records(), ["b", "b"]);
}

#[test]
fn the_ledger_skips_underscore_names_and_reports_stray_files() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write(root, "s/batch-0000000003-part-00001.txt", "x\n");
    write(root, "s/batch-0000000002-part-00001.txt", "w\n");
    write(root, "_staging/s/batch-0000000004-part-00000.txt", "y\n");
    write(root, "_commits/0000000004", "{}");
    write(root, "s/batch-0000000004-part-00000.txt#3", "y\n");
    let mut ledger = Ledger::new(root);
    let s = ledger.snapshot();
    assert_eq!((s.files, s.records), (2, 2));
    let r = ledger.report(&strings(&["w", "x"]));
    assert_eq!(
        r.stray_files,
        [PathBuf::from("s/batch-0000000004-part-00000.txt#3")]
    );
    assert!(!r.exact(), "a stray file is not exact output");
    assert_eq!(
        ledger.by_partition("s"),
        BTreeMap::from([(1, strings(&["w", "x"]))])
    );
}

#[test]
fn replayed_records_are_read_from_text_and_json_logs() {
    let log = "INFO Reliable mode: resuming replayed_records=12 next_batch=3\n{\"fields\":{\"replayed_records\":0}}";
    assert_eq!(replayed_records(log), [12, 0]);
}
