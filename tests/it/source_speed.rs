//! The sources' fast paths (issue #16): the tcp source with one connection per partition
//! (`addresses`), its lines split straight into the partition's buffer, a line begun in one
//! read and ended in another, CRLF, a line past the limit and a last line without its newline
//! all kept exact; the files source taking a file at its first listing (`file-writes =
//! "atomic"`, the default) or at its second (`"in-place"`), and many small files read in
//! order per partition.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice::receiver::files::partition_of;
use sluice_tests::*;

use crate::engine::{
    Running, WAIT_TIMEOUT, accept_sluice, by_partition, committed, drop_file, files_under,
    sluice_run, write_pipeline,
};

/// Sends `text` to `peer` in writes of the sizes in `cuts` (cycled), pausing now and then so
/// that sluice's reads end inside lines.
fn send_in_pieces(peer: &mut std::net::TcpStream, text: &[u8], cuts: &[usize]) {
    let mut at = 0;
    for (i, cut) in cuts.iter().cycle().enumerate() {
        if at >= text.len() {
            break;
        }
        let end = (at + cut).min(text.len());
        peer.write_all(&text[at..end]).unwrap();
        at = end;
        if i % 50 == 0 {
            peer.flush().unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// The lines of connection `tag`: some with CRLF, some empty, one past the 200-byte limit.
fn connection_text(tag: &str, n: usize) -> (Vec<u8>, Vec<String>, String) {
    let long = format!("{tag}-LONG-{}", "x".repeat(500));
    let (mut text, mut expected) = (Vec::new(), Vec::new());
    for i in 0..n {
        let line = if i % 97 == 0 {
            String::new()
        } else {
            format!("{tag}-{i}-{}", "ab".repeat(i % 40))
        };
        text.extend_from_slice(line.as_bytes());
        text.extend_from_slice(if i % 3 == 0 { b"\r\n" } else { b"\n" });
        expected.push(line);
        if i == n / 2 {
            text.extend_from_slice(long.as_bytes());
            text.extend_from_slice(b"\r\n");
        }
    }
    // A last line without its newline is a record all the same.
    let last = format!("{tag}-last");
    text.extend_from_slice(last.as_bytes());
    expected.push(last);
    (text, expected, long)
}

#[test]
fn tcp_addresses_give_each_partition_its_own_connection_and_every_line_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let listeners: Vec<std::net::TcpListener> = (0..2)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let addresses: Vec<String> = listeners
        .iter()
        .map(|l| l.local_addr().unwrap().to_string())
        .collect();
    let pipeline = write_pipeline(
        dir,
        &format!(
            r#"version = 1
batch-interval = "300ms"
block-interval = "100ms"

[source]
kind = "tcp"
addresses = ["{}", "{}"]
end-on-close = true
max-record-bytes = 200

[[sink]]
kind = "files"
path = "out"
"#,
            addresses[0], addresses[1]
        ),
    );
    let mut sluice = Running::start(sluice_run(dir, &pipeline, &plugins_dir()));
    let mut peers: Vec<std::net::TcpStream> = listeners
        .iter()
        .map(|l| accept_sluice(l, &mut sluice))
        .collect();
    let texts: Vec<_> = ["a", "b"]
        .iter()
        .map(|tag| connection_text(tag, 20_000))
        .collect();
    std::thread::scope(|s| {
        for ((peer, (text, ..)), cuts) in peers
            .iter_mut()
            .zip(&texts)
            .zip([&[7usize, 300, 65536, 1][..], &[4096, 13, 200_001][..]])
        {
            s.spawn(move || send_in_pieces(peer, text, cuts));
        }
    });
    drop(peers);
    let run = sluice.wait(WAIT_TIMEOUT);
    run.assert_success();

    let got = by_partition(&committed(&dir.join("out"), "input", "txt"));
    for (p, (_, expected, _)) in texts.iter().enumerate() {
        let lines = got.get(&(p as u32)).cloned().unwrap_or_default();
        assert_eq!(lines.len(), expected.len(), "partition {p}: line count");
        assert!(
            lines == *expected,
            "partition {p}: the lines of its own connection, in order"
        );
    }
    // Each long line is set aside, naming its own connection's peer.
    let mut peers_named: Vec<String> = files_under(&dir.join("dead-letters").join("input"))
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .flat_map(|path| {
            std::fs::read_to_string(path)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .collect::<Vec<_>>()
        })
        .map(|letter| letter["source"]["peer"].as_str().unwrap_or("").to_owned())
        .collect();
    peers_named.sort();
    let mut want = addresses.clone();
    want.sort();
    assert_eq!(
        peers_named, want,
        "one dead letter per connection's long line"
    );
}

#[test]
fn tcp_addresses_and_partitions_that_disagree_are_refused_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let pipeline = write_pipeline(
        tmp.path(),
        "version = 1\n\n[source]\nkind = \"tcp\"\naddresses = [\"127.0.0.1:1\", \"127.0.0.1:2\"]\npartitions = 3\n\n[[sink]]\nkind = \"count\"\n",
    );
    let run = Running::start(sluice_run(tmp.path(), &pipeline, &plugins_dir())).wait(WAIT_TIMEOUT);
    assert!(!run.status.success());
    assert!(
        run.stderr.contains("source.partitions") && run.stderr.contains("names 2"),
        "{}",
        run.stderr
    );
}

#[test]
fn files_with_an_unknown_file_writes_value_are_refused_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("in")).unwrap();
    let pipeline = files_once(tmp.path(), "1s", "file-writes = \"sometimes\"");
    let run = Running::start(sluice_run(tmp.path(), &pipeline, &plugins_dir())).wait(WAIT_TIMEOUT);
    assert!(!run.status.success());
    assert!(
        run.stderr.contains("source.file-writes") && run.stderr.contains("in-place"),
        "{}",
        run.stderr
    );
}

/// A `once` files pipeline over `in/` listing every `poll`, with `extra` source keys.
fn files_once(dir: &Path, poll: &str, extra: &str) -> std::path::PathBuf {
    write_pipeline(
        dir,
        &format!(
            "version = 1\nbatch-interval = \"200ms\"\nblock-interval = \"50ms\"\n\n[source]\nkind = \"files\"\npath = \"in\"\npartitions = 2\nonce = true\npoll-interval = \"{poll}\"\n{extra}\n\n[[sink]]\nkind = \"files\"\npath = \"out\"\n"
        ),
    )
}

#[test]
fn files_are_taken_at_their_first_listing_unless_file_writes_is_in_place() {
    for (extra, in_place) in [("", false), ("file-writes = \"in-place\"", true)] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::create_dir(dir.join("in")).unwrap();
        drop_file(&dir.join("in"), "a.txt", b"one\ntwo\n");
        let pipeline = files_once(dir, "6s", extra);
        let started = Instant::now();
        let run = Running::start(sluice_run(dir, &pipeline, &plugins_dir())).wait(WAIT_TIMEOUT);
        let took = started.elapsed();
        run.assert_success();
        let got: Vec<String> = by_partition(&committed(&dir.join("out"), "input", "txt"))
            .into_values()
            .flatten()
            .collect();
        assert_eq!(got, ["one", "two"], "{extra:?}");
        if in_place {
            assert!(
                took >= Duration::from_secs(6),
                "in-place waits a poll interval: {took:?}"
            );
        } else {
            assert!(
                took < Duration::from_secs(6),
                "atomic takes the file at once, not a poll interval later: {took:?}"
            );
        }
    }
}

#[test]
fn many_small_files_are_read_once_each_in_name_order_per_partition() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let input = dir.join("in");
    std::fs::create_dir(&input).unwrap();
    let mut want: std::collections::BTreeMap<u32, Vec<String>> = Default::default();
    // Files of one line to about 300 KiB (past the whole-file fetch size), so both ways of
    // reading interleave within a partition.
    for f in 0..400 {
        let name = format!("f{f:04}.txt");
        let lines = if f % 50 == 7 { 30_000 } else { 1 + f % 5 };
        let lines: Vec<String> = (0..lines).map(|i| format!("{name}:{i}")).collect();
        drop_file(&input, &name, format!("{}\n", lines.join("\n")).as_bytes());
        let p = partition_of(&name, 2);
        want.entry(p).or_default().extend(lines);
    }
    let pipeline = files_once(dir, "200ms", "");
    let run = Running::start(sluice_run(dir, &pipeline, &plugins_dir())).wait(WAIT_TIMEOUT);
    run.assert_success();
    let got = by_partition(&committed(&dir.join("out"), "input", "txt"));
    for (p, lines) in &want {
        let g = got.get(p).cloned().unwrap_or_default();
        assert_eq!(g.len(), lines.len(), "partition {p}: line count");
        assert!(g == *lines, "partition {p}: files in name order, each once");
    }
}
