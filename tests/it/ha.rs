//! Several hosts (`[ha]`): real `sluice run` processes on one pipeline file and one local
//! checkpoint directory share a files source's 8 partitions through ownership leases. Balance,
//! a SIGKILLed host's partitions moving, and a host paused with SIGSTOP past its lease whose
//! late commits the fence refuses; the output (every member's committed parts) must be exactly
//! the input upper-cased, each line once.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sluice_tests::plugins_dir;

use crate::engine::{Running, sluice_run, write_pipeline};
use crate::kill::output_now;

const PARTITIONS: usize = 8;
const CLAIM: Duration = Duration::from_secs(1);
const EXPIRY: Duration = Duration::from_secs(3);
const LINES: usize = 200;

fn pipeline(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir.join("in")).unwrap();
    write_pipeline(
        dir,
        &format!(
            r#"version = 1
batch-interval = "300ms"
block-interval = "100ms"

[source]
kind = "files"
path = "in"
partitions = {PARTITIONS}
poll-interval = "100ms"

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
"#
        ),
    )
}

/// Starts host `name` (its member id starts with it).
fn host(dir: &Path, pipeline: &Path, name: &str) -> Running {
    let mut cmd = sluice_run(dir, pipeline, &plugins_dir());
    cmd.args(["--owner", name]);
    Running::start(cmd)
}

/// Starts host `name` with its web UI at `ui`.
fn host_with_ui(dir: &Path, pipeline: &Path, name: &str, ui: &str) -> Running {
    let mut cmd = sluice_run(dir, pipeline, &plugins_dir());
    cmd.args(["--owner", name, "--ui", ui]);
    Running::start(cmd)
}

/// A free loopback address now.
fn free_address() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// `GET path` from the web UI at `address`, as JSON.
fn get_json(address: &str, path: &str) -> serde_json::Value {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(address).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "GET {path}: {answer}");
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// The partitions whose live lease host `name` holds.
fn leased_by(dir: &Path, name: &str) -> Vec<u64> {
    (0u64..)
        .zip(owners(dir))
        .filter(|(_, o)| o.as_deref() == Some(name))
        .map(|(p, _)| p)
        .collect()
}

/// Writes input file `i` the way the files source requires: as `.tmp`, renamed into place.
fn drop_input(dir: &Path, i: usize) {
    let text: String = (0..LINES)
        .map(|j| format!("file {i:03} line {j:04} jumps over\n"))
        .collect();
    let tmp = dir.join(format!("in/f-{i:03}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(format!("in/f-{i:03}.txt"))).unwrap();
}

fn expected(files: usize) -> Vec<String> {
    let mut v: Vec<String> = (0..files)
        .flat_map(|i| (0..LINES).map(move |j| format!("FILE {i:03} LINE {j:04} JUMPS OVER")))
        .collect();
    v.sort();
    v
}

/// Drops files `0..n`, one every `every`, on a thread (stopped by the returned flag's drop).
struct Feeder(Arc<AtomicBool>, Option<std::thread::JoinHandle<()>>);

impl Feeder {
    fn start(dir: &Path, n: usize, every: Duration) -> Feeder {
        let stop = Arc::new(AtomicBool::new(false));
        let (d, s) = (dir.to_owned(), stop.clone());
        let t = std::thread::spawn(move || {
            for i in 0..n {
                if s.load(Ordering::Relaxed) {
                    return;
                }
                drop_input(&d, i);
                std::thread::sleep(every);
            }
        });
        Feeder(stop, Some(t))
    }

    fn finish(mut self) {
        self.1.take().unwrap().join().unwrap();
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Every partition's live owner now (host name: the member id without its random suffix).
fn owners(dir: &Path) -> Vec<Option<String>> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    (0..PARTITIONS)
        .map(|p| {
            let d = dir.join(format!("checkpoints/ownership/{p}"));
            let mut gens: Vec<PathBuf> = std::fs::read_dir(&d)
                .map(|r| r.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            gens.sort();
            let newest = gens.last()?;
            let rec: serde_json::Value =
                serde_json::from_slice(&std::fs::read(newest).ok()?).ok()?;
            if rec["expires_ms"].as_i64()? <= now {
                return None;
            }
            let owner = rec["owner"].as_str()?;
            Some(owner.rsplit_once('-').map_or(owner, |(h, _)| h).to_owned())
        })
        .collect()
}

/// The newest link of partition `p`'s chain, if it has one: the host that made it and the
/// batch it commits (none for a takeover link).
fn last_link(dir: &Path, p: usize) -> Option<(String, Option<u64>)> {
    let d = dir.join(format!("checkpoints/partitions/{p}"));
    let mut links: Vec<PathBuf> = std::fs::read_dir(&d)
        .map(|r| r.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    links.retain(|l| l.extension().is_some_and(|e| e == "json"));
    links.sort();
    let link: serde_json::Value =
        serde_json::from_slice(&std::fs::read(links.last()?).ok()?).ok()?;
    let member = link["member"].as_str()?;
    let host = member
        .rsplit_once('-')
        .map_or(member, |(h, _)| h)
        .to_owned();
    Some((host, link["batch"].as_u64()))
}

/// The batch and partition of a files sink's staged part (`batch-<b>-part-<p>.<ext>`).
fn staged_batch_part(path: &Path) -> Option<(u64, usize)> {
    let name = path.file_name()?.to_str()?;
    let rest = name.strip_prefix("batch-")?;
    let (batch, rest) = rest.split_once("-part-")?;
    let part = rest.split('.').next()?;
    Some((batch.parse().ok()?, part.parse().ok()?))
}

/// How many partitions each host owns, largest first, and whether every partition is owned.
fn counts(owners: &[Option<String>]) -> (Vec<usize>, HashMap<String, usize>) {
    let mut by: HashMap<String, usize> = HashMap::new();
    for o in owners.iter().flatten() {
        *by.entry(o.clone()).or_default() += 1;
    }
    let mut c: Vec<usize> = by.values().copied().collect();
    c.sort_unstable_by(|a, b| b.cmp(a));
    if owners.iter().any(Option::is_none) {
        c.push(0);
    }
    (c, by)
}

/// Polls `f` every 100 ms until it holds or `timeout` passes; the time it took.
fn wait_until(
    what: &str,
    timeout: Duration,
    hosts: &mut [&mut Running],
    mut f: impl FnMut() -> bool,
) -> Duration {
    let t = Instant::now();
    while !f() {
        for h in hosts.iter_mut() {
            h.assert_alive(&format!("while waiting for {what}"));
        }
        assert!(t.elapsed() < timeout, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    t.elapsed()
}

/// Asserts the output is exactly `want` (each line once); returns what differs when not yet.
fn output_diff(out: &Path, want: &[String]) -> Option<String> {
    let mut got = all_output(out);
    got.sort();
    if got == want {
        return None;
    }
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for g in &got {
        *seen.entry(g).or_default() += 1;
    }
    let twice = seen.values().filter(|&&n| n > 1).count();
    let missing = want
        .iter()
        .filter(|w| !seen.contains_key(w.as_str()))
        .count();
    Some(format!(
        "{} lines, {} expected: {twice} repeated, {missing} missing",
        got.len(),
        want.len()
    ))
}

/// Waits until the output is exactly `want`, failing at once on a repeated line.
fn wait_exact(out: &Path, want: &[String], hosts: &mut [&mut Running]) {
    let t = Instant::now();
    loop {
        let diff = output_diff(out, want);
        let Some(d) = diff else {
            return;
        };
        assert!(
            !d.contains("lines") || !has_repeats(out),
            "the output repeats lines: {d}"
        );
        for h in hosts.iter_mut() {
            h.assert_alive("while waiting for the output");
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the output is not exact within 60s: {d}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every member's committed parts: `out/<stream>/<member>/batch-…-part-….txt`.
fn all_output(out: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    for stream in std::fs::read_dir(out).into_iter().flatten().flatten() {
        if !stream.file_name().to_string_lossy().starts_with('_') {
            lines.extend(output_now(&stream.path()));
        }
    }
    lines
}

fn has_repeats(out: &Path) -> bool {
    let got = all_output(out);
    let mut seen = std::collections::HashSet::new();
    got.iter().any(|g| !seen.insert(g))
}

#[allow(unsafe_code)]
fn signal(h: &Running, sig: libc::c_int) {
    let pid = libc::pid_t::try_from(h.pid()).unwrap();
    // SAFETY: kill(2) takes plain integers; `pid` is our own child, not yet reaped.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
}

#[test]
fn three_hosts_balance_eight_partitions_3_3_2_within_two_claim_intervals() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let p = pipeline(dir);
    let ui = free_address();
    let mut a = host_with_ui(dir, &p, "ha", &ui);
    let mut b = host(dir, &p, "hb");
    let mut c = host(dir, &p, "hc");
    // Each host claims once it is up; from the moment all three hold leases, the balance
    // must come within two claim intervals.
    wait_until(
        "all three hosts holding leases",
        Duration::from_secs(30),
        &mut [&mut a, &mut b, &mut c],
        || counts(&owners(dir)).1.len() == 3,
    );
    let took = wait_until(
        "a 3/3/2 balance",
        2 * CLAIM + Duration::from_millis(500),
        &mut [&mut a, &mut b, &mut c],
        || counts(&owners(dir)).0 == vec![3, 3, 2],
    );
    eprintln!("balanced {took:?} after the third host's first claim");
    // And it stays balanced.
    std::thread::sleep(2 * CLAIM);
    assert_eq!(counts(&owners(dir)).0, vec![3, 3, 2], "{:?}", owners(dir));

    // Host a's web UI shows the partitions it holds (S9 in the monitor): the overview's
    // `ownership`, and each receiver's `owner`. A lease taken shows at the next batch
    // boundary (300 ms), hence a bounded wait for the two to agree.
    let shown = |path: &str| get_json(&ui, path);
    let owned = |o: &serde_json::Value| -> Vec<u64> {
        o["ownership"]["owned"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_u64()).collect())
            .unwrap_or_default()
    };
    wait_until(
        "host a's /api/v1/overview showing the partitions it leases",
        Duration::from_secs(5),
        &mut [&mut a, &mut b, &mut c],
        || owned(&shown("/api/v1/overview")) == leased_by(dir, "ha"),
    );
    let overview = shown("/api/v1/overview");
    let held = owned(&overview);
    assert!(matches!(held.len(), 2 | 3), "{overview}");
    let member = overview["ownership"]["member"].as_str().unwrap().to_owned();
    assert!(member.starts_with("ha-"), "{overview}");
    let receivers = shown("/api/v1/receivers");
    let rows = receivers["receivers"].as_array().unwrap();
    assert_eq!(rows.len(), PARTITIONS, "{receivers}");
    for row in rows {
        let p = row["partition"].as_u64().unwrap();
        let want = if held.contains(&p) {
            serde_json::json!(member)
        } else {
            serde_json::Value::Null
        };
        assert_eq!(row["owner"], want, "partition {p}: {receivers}");
    }
}

#[test]
fn a_killed_hosts_partitions_move_within_a_lease_expiry_and_the_output_stays_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let p = pipeline(dir);
    let mut a = host(dir, &p, "ha");
    let mut b = host(dir, &p, "hb");
    let c = host(dir, &p, "hc");
    let mut c = Some(c);
    {
        let c = c.as_mut().unwrap();
        wait_until(
            "a 3/3/2 balance",
            Duration::from_secs(30),
            &mut [&mut a, &mut b, c],
            || counts(&owners(dir)).0 == vec![3, 3, 2],
        );
    }
    const FILES: usize = 60;
    let feeder = Feeder::start(dir, FILES, Duration::from_millis(60));
    std::thread::sleep(Duration::from_millis(1500));
    let lost: Vec<usize> = owners(dir)
        .iter()
        .enumerate()
        .filter(|(_, o)| o.as_deref() == Some("hc"))
        .map(|(p, _)| p)
        .collect();
    assert!(!lost.is_empty());
    c.take().unwrap().kill_hard();
    let killed = Instant::now();
    let moved = wait_until(
        "the killed host's partitions on the others",
        EXPIRY + CLAIM + Duration::from_secs(2),
        &mut [&mut a, &mut b],
        || {
            let o = owners(dir);
            lost.iter()
                .all(|&p| matches!(o[p].as_deref(), Some("ha") | Some("hb")))
        },
    );
    eprintln!(
        "partitions {lost:?} moved {moved:?} after the SIGKILL (lease expiry {EXPIRY:?}, claim interval {CLAIM:?})"
    );
    assert!(killed.elapsed() <= EXPIRY + CLAIM + Duration::from_secs(2));
    // The host comes back (a new member) and the balance returns.
    let mut c2 = host(dir, &p, "hc");
    wait_until(
        "the balance back at 3/3/2",
        Duration::from_secs(30),
        &mut [&mut a, &mut b, &mut c2],
        || {
            let (c, by) = counts(&owners(dir));
            c == vec![3, 3, 2] && by.contains_key("hc")
        },
    );
    feeder.finish();
    wait_exact(
        &dir.join("out"),
        &expected(FILES),
        &mut [&mut a, &mut b, &mut c2],
    );
    // Nothing more comes (a late duplicate would show now).
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(output_diff(&dir.join("out"), &expected(FILES)), None);
}

#[test]
fn a_host_paused_past_its_lease_has_its_late_commits_refused_and_the_output_stays_exact() {
    paused_host(None);
}

/// The same with every commit 400 ms slow (the batch interval is 300 ms): the batch loop lags
/// behind the clock, so closes queue up while a host hands partitions over and takes them
/// back. A partition taken again before its old receiver's last block had gone by repeated
/// whole files.
#[test]
fn a_paused_host_whose_batches_lag_behind_the_clock_still_gives_exact_output() {
    paused_host(Some(400));
}

fn paused_host(commit_delay_ms: Option<u64>) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let p = pipeline(dir);
    let ui = free_address();
    let start = |name: &str| {
        let mut cmd = sluice_run(dir, &p, &plugins_dir());
        cmd.args(["--owner", name]);
        if name == "hc" {
            cmd.args(["--ui", &ui]);
        }
        if let Some(ms) = commit_delay_ms {
            cmd.env("SLUICE_FAULT_COMMIT_DELAY_MS", ms.to_string());
        }
        Running::start(cmd)
    };
    let mut a = start("ha");
    let mut b = start("hb");
    let mut c = start("hc");
    wait_until(
        "a 3/3/2 balance",
        Duration::from_secs(30),
        &mut [&mut a, &mut b, &mut c],
        || counts(&owners(dir)).0 == vec![3, 3, 2],
    );
    const FILES: usize = 80;
    let feeder = Feeder::start(dir, FILES, Duration::from_millis(40));
    std::thread::sleep(Duration::from_millis(1200));
    let held: Vec<usize> = owners(dir)
        .iter()
        .enumerate()
        .filter(|(_, o)| o.as_deref() == Some("hc"))
        .map(|(p, _)| p)
        .collect();
    // Pause it while it has a batch in flight for a partition it holds: a staged part whose
    // batch has no link of its yet, so that it wakes up with a commit to make for partitions
    // that moved meanwhile. (A staged part alone was not enough: it stays until the commit
    // has made its links and moved the parts, and a pause in that last moment left nothing
    // to refuse.)
    let staging = dir.join("out/_staging");
    let in_flight = || {
        crate::engine::files_under(&staging).iter().any(|f| {
            let Some((batch, p)) = staged_batch_part(f) else {
                return false;
            };
            f.to_string_lossy().contains("/hc-")
                && held.contains(&p)
                && !matches!(last_link(dir, p), Some((h, Some(b))) if h == "hc" && b >= batch)
        })
    };
    let t = Instant::now();
    while !in_flight() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "host hc never had a batch in flight"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    signal(&c, libc::SIGSTOP);
    wait_until(
        "the paused host's partitions on the others",
        EXPIRY + CLAIM + Duration::from_secs(3),
        &mut [&mut a, &mut b],
        || {
            let o = owners(dir);
            held.iter()
                .all(|&p| matches!(o[p].as_deref(), Some("ha") | Some("hb")))
        },
    );
    // Let the others commit the moved partitions before the paused host wakes up: each has a
    // newer link by its new owner, so the woken host's late commit of it collides (a fixed
    // second was not always enough on a loaded machine, and the late commit then went through
    // before the new owner's first link).
    wait_until(
        "a link by the new owner of each moved partition",
        Duration::from_secs(20),
        &mut [&mut a, &mut b],
        || {
            held.iter()
                .all(|&p| last_link(dir, p).is_some_and(|(h, _)| h == "ha" || h == "hb"))
        },
    );
    // Losses logged before the pause (the start's balancing) do not count.
    let lost_before = c.stderr_so_far().matches(" lost: ").count();
    signal(&c, libc::SIGCONT);
    let woke = Instant::now();
    while c.stderr_so_far().matches(" lost: ").count() == lost_before {
        c.assert_alive("while the test waited for the woken host to drop what it lost");
        assert!(
            woke.elapsed() < Duration::from_secs(20),
            "the woken host did not drop its lost partitions within 20s; its log:\n{}",
            c.stderr_so_far()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    feeder.finish();
    wait_exact(
        &dir.join("out"),
        &expected(FILES),
        &mut [&mut a, &mut b, &mut c],
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(output_diff(&dir.join("out"), &expected(FILES)), None);
    let log = c.stderr_so_far();
    assert!(
        log.contains("refused by the fence"),
        "the woken host committed nothing late for its lost partitions (it had nothing in flight?); its log:\n{log}"
    );
    woken_hosts_metrics(&mut c, &ui, commit_delay_ms.is_some());
}

/// The woken host's `/metrics`, read by the Prometheus project's own parser: its refused
/// commits and lost partitions counted as its log tells them (each bracketed by the log read
/// before and after the scrape, as either may move meanwhile).
fn woken_hosts_metrics(c: &mut Running, ui: &str, lagging: bool) {
    let test = if lagging {
        "a_paused_host_whose_batches_lag_behind_the_clock_still_gives_exact_output"
    } else {
        "a_host_paused_past_its_lease_has_its_late_commits_refused_and_the_output_stays_exact"
    };
    let Some(python) = crate::metrics::judge(test) else {
        return;
    };
    let count = |log: &str| {
        (
            log.matches("refused by the fence").count() as f64,
            log.matches(" lost: ").count() as f64,
        )
    };
    let before = count(&c.stderr_so_far());
    let (status, _, text) = crate::metrics::request(ui, "GET", "/metrics", None, "");
    assert_eq!(status, 200, "{text}");
    let after = count(&c.stderr_so_far());
    let families = crate::metrics::Families::of(&crate::metrics::parse(&python, &text));
    let value = |family: &str, kind: &str, sample: &str| {
        let hits: Vec<_> = families
            .family(family, kind)
            .iter()
            .filter(|s| s.name == sample)
            .collect();
        assert_eq!(hits.len(), 1, "{sample}: {}", hits.len());
        let member = &hits[0].labels["member"];
        assert!(member.starts_with("hc"), "{sample} of member {member}");
        hits[0].value
    };
    let refused = value(
        "sluice_ha_commits_refused",
        "counter",
        "sluice_ha_commits_refused_total",
    );
    let lost = value(
        "sluice_ha_partitions_lost",
        "counter",
        "sluice_ha_partitions_lost_total",
    );
    assert!(
        (before.0..=after.0).contains(&refused) && refused >= 1.0,
        "sluice_ha_commits_refused_total {refused}, the log's refusals {} then {}",
        before.0,
        after.0
    );
    assert!(
        (before.1..=after.1).contains(&lost) && lost >= 1.0,
        "sluice_ha_partitions_lost_total {lost}, the log's losses {} then {}",
        before.1,
        after.1
    );
    let owned = value(
        "sluice_ha_partitions_owned",
        "gauge",
        "sluice_ha_partitions_owned",
    );
    assert!(
        (0.0..=8.0).contains(&owned),
        "sluice_ha_partitions_owned {owned}"
    );
}

#[test]
fn a_pipeline_that_cannot_run_on_several_hosts_is_refused_with_why() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let p = pipeline(dir);
    let text = std::fs::read_to_string(&p).unwrap();
    // An expiry not longer than the claim interval: the message names both keys.
    std::fs::write(
        &p,
        text.replace("lease-expiry = \"3s\"", "lease-expiry = \"1s\""),
    )
    .unwrap();
    let ended = host(dir, &p, "x").wait(Duration::from_secs(30));
    assert!(!ended.status.success());
    assert!(
        ended.stderr.contains("ha.lease-expiry") && ended.stderr.contains("ha.claim-interval"),
        "{}",
        ended.stderr
    );
    // A cross-partition step: refused, pointing at the broker split.
    let windowed = text.replace(
        "[[sink]]",
        "[[transform]]\nbuiltin = \"count-by-key\"\n\n[[sink]]",
    );
    std::fs::write(&p, windowed).unwrap();
    let ended = host(dir, &p, "x").wait(Duration::from_secs(30));
    assert!(!ended.status.success());
    assert!(
        ended.stderr.contains("[ha]") && ended.stderr.contains("broker"),
        "{}",
        ended.stderr
    );
}
