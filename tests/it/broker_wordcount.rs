//! Word count across hosts through the broker (`examples/wordcount-3hosts`): the split pipeline
//! (files → split-words → the `amqp` repartition sink, 3 queues by key hash) and the count
//! pipeline (the 3 queues as its partitions, reliable mode with duplicate detection →
//! count-by-key → files) run as two processes against RabbitMQ; the sum of the counts equals
//! an independent count of the input, every word is counted in one partition only, and both
//! hold after the count pipeline, or the split pipeline, is SIGKILLed mid-way and restarted,
//! and after the broker
//! stops for 3 s mid-way (the split's commits wait it out and send again).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sluice_tests::*;

use crate::amqp::broker;
use crate::engine::{Running, committed, sluice_run, write_pipeline};

/// The example's pipeline `name`, with the test's queues and the broker's URL.
fn example(name: &str, queues: &str) -> String {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/wordcount-3hosts");
    std::fs::read_to_string(dir.join(name))
        .unwrap()
        .replace("/queue/wc-", queues)
        .replace("amqp://guest:guest@127.0.0.1:5672", &amqp_url())
        .replace("batch-interval = \"1s\"", "batch-interval = \"300ms\"")
}

/// `files` input files of `lines` lines each, words from a vocabulary of 300 (deterministic).
fn input(files: usize, lines: usize) -> Vec<String> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..files)
        .map(|_| {
            let mut text = String::new();
            for _ in 0..lines {
                let n = 1 + next() % 12;
                let words: Vec<String> = (0..n).map(|_| format!("w{}", next() % 300)).collect();
                text.push_str(&words.join(" "));
                text.push('\n');
            }
            text
        })
        .collect()
}

/// The independent count: every whitespace-separated word of every file.
fn expected(files: &[String]) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for f in files {
        for w in f.split_ascii_whitespace() {
            *m.entry(w.to_owned()).or_default() += 1;
        }
    }
    m
}

/// The count pipeline's output: the sum per word, and the partitions each word was counted in.
fn counted(out: &Path) -> (BTreeMap<String, u64>, BTreeMap<String, BTreeSet<u32>>) {
    let mut sums = BTreeMap::new();
    let mut parts: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
    for ((_, partition), lines) in committed(out, "words", "tsv") {
        for line in lines {
            let (word, n) = line.split_once('\t').expect("word TAB count");
            *sums.entry(word.to_owned()).or_default() += n.parse::<u64>().expect("a count");
            parts.entry(word.to_owned()).or_default().insert(partition);
        }
    }
    (sums, parts)
}

fn drop_file(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

/// What happens mid-way, once a third of the words are counted.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Midway {
    Nothing,
    /// The count pipeline is SIGKILLed and started again.
    KillCount,
    /// The split pipeline is SIGKILLed and started again: the batches it recomputes are sent
    /// again with the same message ids.
    KillSplit,
    /// The broker stops for 3 s (`rabbitmqctl stop_app`) and starts again.
    RestartBroker,
}

/// Runs both pipelines, with `midway` once a third of the words are counted. Returns
/// (expected, counted sums, partitions per word).
type Outcome = (
    BTreeMap<String, u64>,
    BTreeMap<String, u64>,
    BTreeMap<String, BTreeSet<u32>>,
);

fn run(midway: Midway) -> Outcome {
    let tmp = tempfile::tempdir().unwrap();
    let prefix = format!("{}-", fresh_queue("wc"));
    std::fs::create_dir_all(tmp.path().join("in")).unwrap();
    let split = write_pipeline(tmp.path(), &example("split.toml", &prefix));
    let count_text = example("count.toml", &prefix);
    let count = tmp.path().join("count.toml");
    std::fs::write(&count, &count_text).unwrap();
    let files = input(12, 400);
    let want = expected(&files);
    let total: u64 = want.values().sum();
    let out = tmp.path().join("out");
    let sum_now = || counted(&out).0.values().sum::<u64>();

    let start_split = || Running::start(sluice_run(tmp.path(), &split, &plugins_dir()));
    let mut splitter = Some(start_split());
    let start_count = || {
        let mut c = sluice_run(tmp.path(), &count, &plugins_dir());
        // Accepts wait 150 ms after their blocks are logged, so a kill leaves logged messages
        // unaccepted: the broker delivers them again and duplicate detection must drop them.
        c.env("SLUICE_FAULT_ACCEPT_DELAY_MS", "150");
        Running::start(c)
    };
    let mut counter = Some(start_count());
    let inbox = tmp.path().join("in");
    std::thread::scope(|scope| {
        // The input comes a file every 400 ms, so the kill lands while words flow.
        let feeder = scope.spawn(|| {
            for (i, f) in files.iter().enumerate() {
                drop_file(&inbox, &format!("part-{i:02}.txt"), f);
                std::thread::sleep(Duration::from_millis(400));
            }
        });
        if midway != Midway::Nothing {
            let c = counter.as_mut().expect("running");
            c.wait_for(
                "a third of the words counted",
                Duration::from_secs(90),
                || sum_now() >= total / 3,
            );
        }
        if midway == Midway::KillSplit {
            splitter.take().expect("running").kill_hard();
            splitter = Some(start_split());
        }
        if midway == Midway::KillCount {
            counter.take().expect("running").kill_hard();
            counter = Some(start_count());
        }
        if midway == Midway::RestartBroker {
            let stop = rabbitmqctl(&["stop_app"]);
            assert!(stop.status.success(), "rabbitmqctl stop_app");
            std::thread::sleep(Duration::from_secs(3));
            let start = rabbitmqctl(&["start_app"]);
            assert!(start.status.success(), "rabbitmqctl start_app");
            rabbitmqctl(&["await_startup"]);
        }
        feeder.join().unwrap();
    });
    let mut counter = counter.expect("running");
    let mut splitter = splitter.expect("running");
    counter.wait_for("every word counted", Duration::from_secs(120), || {
        sum_now() >= total
    });
    // Anything counted twice would show within a few more batches.
    std::thread::sleep(Duration::from_secs(2));
    splitter.assert_alive("before the end");
    splitter.interrupt();
    counter.interrupt();
    splitter.wait(Duration::from_secs(30)).assert_success();
    let ended = counter.wait(Duration::from_secs(30));
    ended.assert_success();
    let (sums, parts) = counted(&out);
    (want, sums, parts)
}

/// Host `i` of three: its split pipeline (own input directory, own `id-prefix`, own checkpoint)
/// and its count pipeline (queue `i` only, own checkpoint and output `out-<i>`).
fn host_pipelines(dir: &Path, prefix: &str, i: usize) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(dir.join(format!("in-{i}"))).unwrap();
    let split = example("split.toml", prefix)
        .replace("path = \"in\"", &format!("path = \"in-{i}\""))
        .replace(
            "kind = \"amqp\"\n",
            &format!("kind = \"amqp\"\nid-prefix = \"host-{i}\"\n"),
        )
        .replace(
            "\"checkpoints-split\"",
            &format!("\"checkpoints-split-{i}\""),
        )
        .replace(
            "\"dead-letters-split\"",
            &format!("\"dead-letters-split-{i}\""),
        );
    assert!(
        split.contains(&format!("host-{i}")),
        "the split example changed"
    );
    let all = format!("[\"{prefix}0\", \"{prefix}1\", \"{prefix}2\"]");
    let count = example("count.toml", prefix)
        .replace(&all, &format!("[\"{prefix}{i}\"]"))
        .replace("path = \"out\"", &format!("path = \"out-{i}\""))
        .replace(
            "\"checkpoints-count\"",
            &format!("\"checkpoints-count-{i}\""),
        )
        .replace(
            "\"dead-letters-count\"",
            &format!("\"dead-letters-count-{i}\""),
        );
    assert!(
        count.contains(&format!("out-{i}")) && !count.contains(&all),
        "the count example changed"
    );
    let (s, c) = (
        dir.join(format!("split-{i}.toml")),
        dir.join(format!("count-{i}.toml")),
    );
    std::fs::write(&s, split).unwrap();
    std::fs::write(&c, count).unwrap();
    (s, c)
}

/// Three hosts, each running a split (over its own share of the input) and a count (over one
/// of the three queues); host 1 (both its processes) is SIGKILLed once a third of the words
/// are counted, and started again. Returns what [`run`] returns, over every host's output.
fn run_three_hosts() -> Outcome {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let prefix = format!("{}-", fresh_queue("wc3"));
    let pipelines: Vec<(PathBuf, PathBuf)> =
        (0..3).map(|i| host_pipelines(dir, &prefix, i)).collect();
    let files = input(12, 400);
    let want = expected(&files);
    let total: u64 = want.values().sum();
    let counted_all = || {
        let mut sums: BTreeMap<String, u64> = BTreeMap::new();
        let mut parts: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
        for i in 0..3u32 {
            // Host i reads queue i only: a word it counted is in partition (queue) i.
            for (w, n) in counted(&dir.join(format!("out-{i}"))).0 {
                *sums.entry(w.clone()).or_default() += n;
                parts.entry(w).or_default().insert(i);
            }
        }
        (sums, parts)
    };
    let sum_now = || counted_all().0.values().sum::<u64>();
    let start = |i: usize| {
        let (split, count) = &pipelines[i];
        let s = Running::start(sluice_run(dir, split, &plugins_dir()));
        let mut c = sluice_run(dir, count, &plugins_dir());
        c.env("SLUICE_FAULT_ACCEPT_DELAY_MS", "150");
        (s, Running::start(c))
    };
    let mut hosts: Vec<Option<(Running, Running)>> = (0..3).map(|i| Some(start(i))).collect();
    std::thread::scope(|scope| {
        let feeder = scope.spawn(|| {
            for (i, f) in files.iter().enumerate() {
                drop_file(
                    &dir.join(format!("in-{}", i % 3)),
                    &format!("part-{i:02}.txt"),
                    f,
                );
                std::thread::sleep(Duration::from_millis(400));
            }
        });
        let (_, c) = hosts[0].as_mut().expect("running");
        c.wait_for(
            "a third of the words counted",
            Duration::from_secs(90),
            || sum_now() >= total / 3,
        );
        let (s, c) = hosts[1].take().expect("running");
        s.kill_hard();
        c.kill_hard();
        hosts[1] = Some(start(1));
        feeder.join().unwrap();
    });
    let (_, c) = hosts[0].as_mut().expect("running");
    c.wait_for("every word counted", Duration::from_secs(120), || {
        sum_now() >= total
    });
    std::thread::sleep(Duration::from_secs(2));
    for (mut s, c) in hosts.into_iter().flatten() {
        s.assert_alive("before the end");
        s.interrupt();
        c.interrupt();
        s.wait(Duration::from_secs(30)).assert_success();
        c.wait(Duration::from_secs(30)).assert_success();
    }
    let (sums, parts) = counted_all();
    (want, sums, parts)
}

fn check((want, sums, parts): Outcome) {
    let total: u64 = want.values().sum();
    let got: u64 = sums.values().sum();
    assert_eq!(got, total, "the sum of all counts is the number of words");
    assert_eq!(
        sums, want,
        "every word's global count equals the independent count"
    );
    let spread: Vec<_> = parts.iter().filter(|(_, p)| p.len() > 1).collect();
    assert!(
        spread.is_empty(),
        "each word is routed to one queue, so counted in one partition: {spread:?}"
    );
    let used: BTreeSet<u32> = parts.values().flatten().copied().collect();
    assert_eq!(used.len(), 3, "the words spread over the 3 queues");
}

#[test]
fn word_count_through_three_broker_queues_equals_an_independent_count() {
    let Some(_turn) = broker("word_count_through_three_broker_queues_equals_an_independent_count")
    else {
        return;
    };
    check(run(Midway::Nothing));
}

#[test]
fn word_count_through_the_broker_stays_exact_when_the_count_pipeline_is_killed() {
    let Some(_turn) =
        broker("word_count_through_the_broker_stays_exact_when_the_count_pipeline_is_killed")
    else {
        return;
    };
    check(run(Midway::KillCount));
}

#[test]
fn word_count_through_the_broker_stays_exact_when_the_split_pipeline_is_killed() {
    let Some(_turn) =
        broker("word_count_through_the_broker_stays_exact_when_the_split_pipeline_is_killed")
    else {
        return;
    };
    check(run(Midway::KillSplit));
}

#[test]
fn word_count_over_three_hosts_through_the_broker_stays_exact_when_one_host_is_killed() {
    let Some(_turn) = broker(
        "word_count_over_three_hosts_through_the_broker_stays_exact_when_one_host_is_killed",
    ) else {
        return;
    };
    check(run_three_hosts());
}

#[test]
fn word_count_through_the_broker_stays_exact_when_the_broker_restarts_mid_way() {
    let Some(_turn) =
        broker("word_count_through_the_broker_stays_exact_when_the_broker_restarts_mid_way")
    else {
        return;
    };
    check(run(Midway::RestartBroker));
}
