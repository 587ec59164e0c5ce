//! The `nexmark` source and the `nexmark-query` plugin end to end: the examples q0, q1 and q2
//! run by `sluice run` on the same events, q1 and q2 checked against our own computation of
//! them from q0's output; and q0 killed with SIGKILL mid-run and restarted, exactly once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use sluice::batch::RecordBatch;
use sluice::config::PipelineFile;
use sluice::receiver::SourceConfig;
use sluice::receiver::nexmark::{EventGenerator, NexmarkConfig};
use sluice_tests::plugins_dir;

use crate::engine::{Running, committed, sluice_run};
use crate::kill::{Harness, Output, Timer, keep_log, tail};
use crate::recovery::{assert_exact, nothing_twice};

/// Events in the comparison runs: 400 persons, 1,200 auctions, 18,400 bids.
const EVENTS: u64 = 20_000;

/// `examples/nexmark/QUERY.toml` copied into `dir` (its relative paths then land there), with
/// `events` events at full speed.
fn example(query: &str, dir: &Path, events: u64, rate: u64) -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(repo.join("examples/nexmark").join(format!("{query}.toml")))
        .unwrap();
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("events = ") {
                format!("events = {events}")
            } else if l.starts_with("rate = ") {
                format!("rate = {rate}")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let path = dir.join(format!("{query}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `pipeline` to its end and returns its standard output.
fn run_to_end(dir: &Path, pipeline: &Path) -> String {
    let ended = Running::start(sluice_run(dir, pipeline, &plugins_dir()))
        .wait(std::time::Duration::from_secs(90));
    ended.assert_success();
    ended.stdout
}

/// Every line a files sink committed under `out` for stream `events`.
fn lines(out: &Path) -> Vec<String> {
    committed(out, "events", "txt")
        .into_values()
        .flatten()
        .collect()
}

fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

fn num(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no whole `{field}` in {v}"))
}

/// How many times each item occurs.
fn multiset<T: Ord>(items: impl IntoIterator<Item = T>) -> BTreeMap<T, usize> {
    let mut m = BTreeMap::new();
    for i in items {
        *m.entry(i).or_insert(0) += 1;
    }
    m
}

/// The events the pipeline's source makes, each partition's in order, as the host makes them.
fn generated(pipeline: &Path) -> Vec<Vec<String>> {
    let cfg: NexmarkConfig = match PipelineFile::load(pipeline).unwrap().source {
        SourceConfig::Nexmark(n) => n,
        other => panic!("not a nexmark source: {other:?}"),
    };
    let mut all = Vec::new();
    for p in 0..cfg.partitions {
        let mut batch = RecordBatch::default();
        let n = cfg.partition_events(p).unwrap() as usize;
        EventGenerator::new(&cfg, p, 0).fill(&mut batch, n);
        all.push(
            (0..n)
                .map(|i| String::from_utf8(batch.value(i).to_vec()).unwrap())
                .collect(),
        );
    }
    all
}

#[test]
fn q1_and_q2_output_what_our_own_computation_over_q0s_events_gives() {
    let tmp = tempfile::tempdir().unwrap();
    let q0 = example("q0", tmp.path(), EVENTS, 0);
    run_to_end(tmp.path(), &q0);
    let events = lines(&tmp.path().join("out/q0"));
    assert_eq!(events.len() as u64, EVENTS, "q0 passes every event through");
    assert_eq!(
        multiset(events.iter().cloned()),
        multiset(generated(&q0).concat()),
        "q0's output is the source's events"
    );
    let events: Vec<Value> = events.iter().map(|l| json(l)).collect();
    let kinds = multiset(
        events
            .iter()
            .map(|e| e["kind"].as_str().unwrap().to_owned()),
    );
    assert_eq!(
        (kinds["person"], kinds["auction"], kinds["bid"]),
        (400, 1200, 18_400)
    );
    let bids: Vec<&Value> = events.iter().filter(|e| e["kind"] == "bid").collect();

    // q1: every bid, its price in euros (0.908 a dollar), exact to the thousandth.
    let want_q1 = multiset(bids.iter().map(|b| {
        (
            num(b, "auction"),
            num(b, "bidder"),
            num(b, "price") * 908,
            num(b, "dateTime"),
            b["extra"].as_str().unwrap().to_owned(),
        )
    }));
    let q1 = example("q1", tmp.path(), EVENTS, 0);
    run_to_end(tmp.path(), &q1);
    let got_q1 = multiset(lines(&tmp.path().join("out/q1")).iter().map(|l| {
        let v = json(l);
        let euros = v["price"].as_f64().unwrap();
        (
            num(&v, "auction"),
            num(&v, "bidder"),
            (euros * 1000.0).round() as u64,
            num(&v, "dateTime"),
            v["extra"].as_str().unwrap().to_owned(),
        )
    }));
    assert_eq!(got_q1.values().sum::<usize>(), 18_400);
    assert!(
        got_q1 == want_q1,
        "q1's output differs from the bids in euros"
    );

    // q2: auction and price of the bids on auctions whose id is a multiple of 123.
    let want_q2 = multiset(
        bids.iter()
            .filter(|b| num(b, "auction").is_multiple_of(123))
            .map(|b| (num(b, "auction"), num(b, "price"))),
    );
    assert!(!want_q2.is_empty(), "some auctions are multiples of 123");
    let q2 = example("q2", tmp.path(), EVENTS, 0);
    let stdout = run_to_end(tmp.path(), &q2);
    let got_q2 = multiset(stdout.lines().map(|l| {
        let v = json(l);
        assert_eq!(
            v.as_object().unwrap().len(),
            2,
            "only auction and price: {l}"
        );
        (num(&v, "auction"), num(&v, "price"))
    }));
    assert_eq!(got_q2, want_q2);
}

#[test]
fn q0_killed_at_random_points_and_restarted_outputs_every_event_exactly_once() {
    const TAG: &str = "nexmark q0 x10";
    let _timer = Timer::start(TAG);
    let tmp = tempfile::tempdir().unwrap();
    // 60,000 events at 8,000 a second: longer than the trials' runs add up to, so that every
    // kill lands mid-run.
    let pipeline = example("q0", tmp.path(), 60_000, 8_000);
    let text = std::fs::read_to_string(&pipeline).unwrap().replace(
        "batch-interval = \"1s\"",
        "batch-interval = \"300ms\"\nblock-interval = \"100ms\"",
    );
    std::fs::write(&pipeline, text).unwrap();
    let want = generated(&pipeline);
    let expected = want.concat();
    let mut h = Harness::new(
        TAG,
        tmp.path(),
        &pipeline,
        Output::Dir(tmp.path().join("out/q0")),
    );
    h.kill_trials(10, 0x6e78_6d6b, nothing_twice(TAG, &expected));
    let ended = h.start().wait(std::time::Duration::from_secs(90));
    keep_log(TAG, "final", &ended.stderr);
    h.ledger.snapshot();
    let report = h.ledger.report(&expected);
    eprintln!("[{TAG}] final: {report}");
    assert_eq!(
        ended.status.code(),
        Some(0),
        "[{TAG}] the final run must end by itself ({report}); its log:\n{}",
        tail(&ended.stderr, 20)
    );
    // Each partition's events in event order, as a run without a crash makes them.
    for (p, got) in h.ledger.by_partition("events") {
        let first = got.iter().zip(&want[p as usize]).position(|(a, b)| a != b);
        assert!(
            got == want[p as usize],
            "[{TAG}] partition {p}'s output is not its events in order: {} of {}, first difference at {first:?}",
            got.len(),
            want[p as usize].len()
        );
    }
    assert_exact(TAG, &report, &h.ledger, &expected);
}

/// Events in the q5/q7 runs: 30 s of event time (10,000 events a second).
const WINDOW_EVENTS: u64 = 300_000;

/// The bids of the events `pipeline` generates, each as (partition, offset, event time,
/// auction, price), partition by partition.
fn bids(pipeline: &Path) -> Vec<(u32, u64, i64, u64, u64)> {
    let mut out = Vec::new();
    for (p, events) in generated(pipeline).iter().enumerate() {
        for (offset, e) in events.iter().enumerate() {
            let v = json(e);
            if v["kind"] == "bid" {
                let t = v["dateTime"].as_i64().unwrap();
                out.push((
                    p as u32,
                    offset as u64,
                    t,
                    num(&v, "auction"),
                    num(&v, "price"),
                ));
            }
        }
    }
    out
}

/// The (partition, offset) of every record the window step dead-lettered, with its reason.
fn late_letters(dir: &Path) -> BTreeMap<(u32, u64), String> {
    let mut out = BTreeMap::new();
    for p in crate::engine::files_under(&dir.join("dead-letters").join("events")) {
        for line in std::fs::read_to_string(&p).unwrap().lines() {
            let l = json(line);
            let reason = l["reason"].as_str().unwrap().to_owned();
            assert!(reason.starts_with("late by "), "only late records: {l}");
            let at = (l["partition"].as_u64().unwrap() as u32, num(&l, "offset"));
            out.insert(at, reason);
        }
    }
    out
}

/// What a q5 or q7 run wrote: per window (start, end), each kept auction and its value.
fn windows_written(out: &Path) -> BTreeMap<(i64, i64), BTreeMap<u64, u64>> {
    let mut got: BTreeMap<(i64, i64), BTreeMap<u64, u64>> = BTreeMap::new();
    for lines in committed(out, "events", "tsv").into_values() {
        for line in lines {
            let (auction, value) = line.split_once('\t').unwrap();
            let v = json(value);
            let w = (v["start"].as_i64().unwrap(), v["end"].as_i64().unwrap());
            let kept = got.entry(w).or_default();
            assert!(
                kept.insert(auction.parse().unwrap(), num(&v, "value"))
                    .is_none(),
                "auction {auction} twice in window {w:?}"
            );
        }
    }
    got
}

/// Per window of `windows(t)`, each auction's aggregate of the on-time bids (`fold` over the
/// price), only the auction(s) with the largest, only the windows the final watermark (the
/// largest event time − 4 s) closed.
fn top_per_window(
    bids: &[(u32, u64, i64, u64, u64)],
    late: &BTreeMap<(u32, u64), String>,
    windows: impl Fn(i64) -> Vec<(i64, i64)>,
    fold: impl Fn(Option<u64>, u64) -> u64,
) -> BTreeMap<(i64, i64), BTreeMap<u64, u64>> {
    let mut all: BTreeMap<(i64, i64), BTreeMap<u64, u64>> = BTreeMap::new();
    let mut max = i64::MIN;
    for &(p, offset, t, auction, price) in bids {
        if late.contains_key(&(p, offset)) {
            continue;
        }
        max = max.max(t);
        for w in windows(t) {
            let per = all.entry(w).or_default();
            let before = per.get(&auction).copied();
            per.insert(auction, fold(before, price));
        }
    }
    let watermark = max - 4_000;
    all.into_iter()
        .filter(|((_, end), _)| *end <= watermark)
        .map(|(w, per)| {
            let top = per.values().copied().max().unwrap_or(0);
            (w, per.into_iter().filter(|(_, v)| *v == top).collect())
        })
        .collect()
}

#[test]
fn q5_and_q7_output_what_our_own_computation_over_the_generated_bids_gives() {
    for query in ["q5", "q7"] {
        let tmp = tempfile::tempdir().unwrap();
        let pipeline = example(query, tmp.path(), WINDOW_EVENTS, 0);
        run_to_end(tmp.path(), &pipeline);
        let late = late_letters(tmp.path());
        let bids = bids(&pipeline);
        // Late bids are a few at most (the partitions run at about the same pace).
        assert!(
            late.len() * 100 < bids.len(),
            "{query}: {} late",
            late.len()
        );
        let want = match query {
            "q5" => top_per_window(
                &bids,
                &late,
                |t| {
                    let last = t.div_euclid(2_000) * 2_000;
                    (0..5)
                        .map(|k| (last - k * 2_000, last - k * 2_000 + 10_000))
                        .collect()
                },
                |n, _| n.unwrap_or(0) + 1,
            ),
            _ => top_per_window(
                &bids,
                &late,
                |t| {
                    let s = t.div_euclid(10_000) * 10_000;
                    vec![(s, s + 10_000)]
                },
                |m, price| m.unwrap_or(0).max(price),
            ),
        };
        let got = windows_written(&tmp.path().join("out").join(query));
        assert!(want.len() >= 2, "{query}: windows closed: {}", want.len());
        assert!(
            got == want,
            "{query}: the output differs from our own computation:\n got {got:?}\nwant {want:?}"
        );
    }
}
