//! The plugin runtime against real components: first-party plugins and misbehaving fixtures.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sluice::batch::RecordBatch;
use sluice::plugin::limits::{Grants, RuntimeConfig};
use sluice::plugin::{CallContext, Failure, LoadError, PluginRuntime};
use sluice_tests::*;

/// A call's context: stream `events`, partition and batch as given.
pub(crate) fn ctx(partition: u32, batch_id: u64) -> CallContext {
    CallContext {
        stream: "events".into(),
        partition,
        batch_id,
        batch_time_ms: 1_700_000_000_000,
        part: 0,
    }
}

fn batch(values: &[&str]) -> RecordBatch {
    let mut b = RecordBatch::default();
    for (i, v) in values.iter().enumerate() {
        b.push(None, v.as_bytes(), Some(1_000 + i as i64));
    }
    b
}

fn values(b: &RecordBatch) -> Vec<String> {
    (0..b.len())
        .map(|i| String::from_utf8_lossy(b.value(i)).into_owned())
        .collect()
}

fn load_fixture(rt: &PluginRuntime, name: &str) -> sluice::plugin::Plugin {
    rt.load_file(
        &fixtures_dir().join(format!("{name}.wasm")),
        &Grants::default(),
    )
    .unwrap_or_else(|e| panic!("fixture {name} loads: {e}"))
}

/// The error names the plugin, its digest, the partition and the batch.
fn assert_names_its_context(err: &sluice::plugin::PluginError, plugin: &sluice::plugin::Plugin) {
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("plugin `{}`", plugin.name())),
        "{msg}"
    );
    assert!(msg.contains(&plugin.info().digest[..12]), "{msg}");
    assert!(msg.contains("partition 3"), "{msg}");
    assert!(msg.contains("batch 7"), "{msg}");
}

#[test]
fn uppercase_maps_every_value_and_keeps_timestamps() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime_with_cache(tmp.path());
    let p = rt
        .load_file(&plugins_dir().join("uppercase.wasm"), &Grants::default())
        .unwrap();
    let stage = p.transformer(&BTreeMap::new()).unwrap();
    let input = batch(&["hello", "", "MiXeD 123 é"]);
    let out = stage.transform(&ctx(0, 0), &input).unwrap();
    assert_eq!(values(&out.batch), ["HELLO", "", "MIXED 123 é"]);
    assert_eq!(out.batch.timestamps, input.timestamps);
    assert!(out.origins.is_empty(), "a map sends no origins");
}

#[test]
fn a_panicking_plugin_gives_a_classified_error_and_the_next_batch_succeeds() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime_with_cache(tmp.path());
    let p = load_fixture(&rt, "panic");
    let stage = p.transformer(&BTreeMap::new()).unwrap();
    let err = stage
        .transform(&ctx(3, 7), &batch(&["a", "boom", "c"]))
        .unwrap_err();
    assert!(
        matches!(&err.failure, Failure::Panicked(m) if m.contains("fixture panic on purpose")),
        "{err}"
    );
    assert_names_its_context(&err, &p);
    assert!(!err.retryable(), "a panic is not retried blindly");
    let out = stage.transform(&ctx(3, 8), &batch(&["a", "b"])).unwrap();
    assert_eq!(values(&out.batch), ["a", "b"]);
}

#[test]
fn an_infinite_loop_is_stopped_within_twice_its_time_budget() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime_with_cache(tmp.path());
    let p = load_fixture(&rt, "infinite-loop");
    let budget = p.info().limits.time;
    assert!(
        budget <= Duration::from_millis(500),
        "the fixture's manifest sets a short budget"
    );
    let stage = p.transformer(&BTreeMap::new()).unwrap();
    let started = Instant::now();
    let err = stage.transform(&ctx(3, 7), &batch(&["loop"])).unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err.failure, Failure::TimedOut { .. }), "{err}");
    assert!(
        took < budget * 2,
        "stopped after {took:?}, budget {budget:?}"
    );
    assert!(
        took >= budget,
        "stopped after {took:?}, before its budget {budget:?}"
    );
    assert_names_its_context(&err, &p);
    let out = stage.transform(&ctx(3, 8), &batch(&["fine"])).unwrap();
    assert_eq!(values(&out.batch), ["fine"]);
}

#[test]
fn a_memory_hog_is_stopped_at_its_cap() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime_with_cache(tmp.path());
    let p = load_fixture(&rt, "memory-hog");
    let cap = p.info().limits.memory;
    let stage = p.transformer(&BTreeMap::new()).unwrap();
    let err = stage.transform(&ctx(3, 7), &batch(&["hog"])).unwrap_err();
    match err.failure {
        Failure::OutOfMemory { cap: c, requested } => {
            assert_eq!(c, cap);
            assert!(requested > cap);
        }
        ref other => panic!("expected out of memory, got {other}"),
    }
    assert_names_its_context(&err, &p);
    let out = stage.transform(&ctx(3, 8), &batch(&["x"])).unwrap();
    assert_eq!(values(&out.batch), ["x"]);
}

#[test]
fn a_plugin_that_leaks_on_every_call_is_given_fresh_instances_before_its_cap_and_never_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime_with_cache(tmp.path());
    let p = load_fixture(&rt, "memory-hog");
    let cap = p.info().limits.memory;
    let stage = p.transformer(&BTreeMap::new()).unwrap();
    // 1 MiB kept per call: three times the cap's worth of calls on reused instances.
    let calls = 3 * (cap >> 20);
    for i in 0..calls {
        let out = stage
            .transform(&ctx(3, i), &batch(&["leak", "x"]))
            .unwrap_or_else(|e| panic!("call {i} of a leaking plugin failed: {e}"));
        assert_eq!(values(&out.batch), ["leak", "x"]);
    }
    assert_eq!(
        p.metrics().traps.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

#[test]
fn rejected_records_are_reported_and_the_rest_is_output() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime_with_cache(tmp.path());
    let p = load_fixture(&rt, "bad-record");
    let stage = p.transformer(&BTreeMap::new()).unwrap();
    let out = stage
        .transform(&ctx(3, 7), &batch(&["a", "bad", "c"]))
        .unwrap();
    assert_eq!(values(&out.batch), ["a", "c"]);
    assert_eq!(out.origins, [0, 2]);
    assert_eq!(
        out.batch.timestamps,
        [1_000, 1_002],
        "timestamps follow the origins"
    );
    assert_eq!(out.rejected.len(), 1);
    assert_eq!(out.rejected[0].0, 1);

    let err = stage
        .transform(&ctx(3, 7), &batch(&["a", "abort-bad"]))
        .unwrap_err();
    assert!(
        matches!(err.failure, Failure::BadRecord { index: 1, .. }),
        "{err}"
    );
    assert_names_its_context(&err, &p);
}

#[test]
fn broken_plugins_are_refused_at_load_and_the_others_still_load() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime_with_cache(&tmp.path().join("cache"));
    let dir = plugin_dir_with(
        &fixtures_dir(),
        &["truncated", "wrong-world", "wants-dir", "panic"],
        &tmp.path().join("plugins"),
    );
    plugin_dir_with(&plugins_dir(), &["uppercase"], &dir);
    std::fs::write(
        dir.join("garbage.wasm"),
        b"\0asm\x0d\0\x01\0this is not a component",
    )
    .unwrap();
    std::fs::write(dir.join("core.wasm"), b"\0asm\x01\0\0\0").unwrap();

    let reg = rt.load_dir(&dir, &BTreeMap::new()).unwrap();
    let loaded: Vec<&str> = reg.plugins.keys().map(String::as_str).collect();
    assert_eq!(loaded, ["panic", "uppercase"]);
    assert_eq!(reg.refused.len(), 5, "{:#?}", reg.refused);

    let msg = |name: &str| reg.refusal(name).map(|e| e.to_string()).unwrap_or_default();
    assert!(
        msg("truncated").contains("truncated"),
        "{}",
        msg("truncated")
    );
    assert!(
        matches!(
            reg.refusal("wrong-world"),
            Some(LoadError::WrongWorld { .. })
        ),
        "{}",
        msg("wrong-world")
    );
    assert!(
        msg("wrong-world").contains("sluice:plugin/transform@0.1.0"),
        "names what was expected"
    );
    assert!(
        matches!(reg.refusal("wants-dir"), Some(LoadError::NotGranted { dir, .. }) if dir == "/secrets"),
        "{}",
        msg("wants-dir")
    );
    assert!(
        msg("garbage").contains("garbage.wasm"),
        "{}",
        msg("garbage")
    );
    assert!(msg("core").contains("not a component"), "{}", msg("core"));
}

/// What the `wants-dir` fixture answers for each of `paths` (`listed N` or `denied: …`),
/// loaded from `dir` with `grants`.
fn listable(
    rt: &PluginRuntime,
    dir: &std::path::Path,
    grants: &Grants,
    paths: &[String],
) -> Vec<(String, String)> {
    let p = rt
        .load_file(&dir.join("wants-dir.wasm"), grants)
        .unwrap_or_else(|e| panic!("wants-dir loads: {e}"));
    let probes: Vec<&str> = paths.iter().map(String::as_str).collect();
    let out = p
        .transformer(&BTreeMap::new())
        .unwrap()
        .transform(&ctx(0, 0), &batch(&probes))
        .unwrap();
    assert_eq!(out.batch.len(), paths.len(), "one answer per path");
    paths.iter().cloned().zip(values(&out.batch)).collect()
}

/// The paths a plugin must not list (the host's root, its `/etc`, its temporary directory, the
/// granted directory under its host name, a way out of the grant), then the granted `/secrets`.
fn sandbox_probes(host_secrets: &std::path::Path) -> Vec<String> {
    let host_tmp = std::env::temp_dir();
    let mut paths: Vec<String> = ["/", "/etc", ".", "/secrets/..", "/secrets/../etc"]
        .map(str::to_owned)
        .into();
    for host in [host_tmp.as_path(), host_secrets] {
        paths.push(host.to_str().unwrap().to_owned());
    }
    paths.push("/secrets".to_owned());
    paths
}

#[test]
fn a_granted_directory_is_the_only_one_a_plugin_can_list() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime_with_cache(&tmp.path().join("cache"));
    let secrets = tmp.path().join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join("granted.txt"), b"only this").unwrap();
    let grants = Grants {
        dirs: [("/secrets".to_owned(), secrets.clone())].into(),
    };
    let answers = listable(&rt, &fixtures_dir(), &grants, &sandbox_probes(&secrets));
    eprintln!("what the plugin could list: {answers:#?}");
    let listed: Vec<&(String, String)> = answers
        .iter()
        .filter(|(_, answer)| !answer.starts_with("denied"))
        .collect();
    assert_eq!(
        listed,
        [&("/secrets".to_owned(), "listed 1".to_owned())],
        "only the granted directory, with its one file, is listable; every answer: {answers:#?}"
    );
}

#[test]
fn without_its_grant_a_plugin_can_list_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime_with_cache(&tmp.path().join("cache"));
    // The same component, under a manifest that asks for no directory, run with no grant.
    let dir = plugin_dir_with(&fixtures_dir(), &["wants-dir"], &tmp.path().join("p"));
    let manifest = std::fs::read_to_string(dir.join("wants-dir.toml")).unwrap();
    let asks_nothing = manifest.replace("dirs = [\"/secrets\"]", "");
    assert_ne!(asks_nothing, manifest, "the manifest asked for /secrets");
    std::fs::write(dir.join("wants-dir.toml"), asks_nothing).unwrap();
    let secrets = tmp.path().join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    let answers = listable(&rt, &dir, &Grants::default(), &sandbox_probes(&secrets));
    let listed: Vec<&(String, String)> = answers
        .iter()
        .filter(|(_, answer)| !answer.starts_with("denied"))
        .collect();
    assert!(listed.is_empty(), "listable without a grant: {listed:#?}");
}

#[test]
fn a_digest_that_differs_from_the_manifest_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime_with_cache(&tmp.path().join("cache"));
    let dir = plugin_dir_with(&plugins_dir(), &["uppercase"], &tmp.path().join("p"));
    let manifest = std::fs::read_to_string(dir.join("uppercase.toml")).unwrap();
    let manifest = manifest.replacen(
        "version = 1",
        &format!("version = 1\nsha256 = \"{}\"", "ab".repeat(32)),
        1,
    );
    std::fs::write(dir.join("uppercase.toml"), manifest).unwrap();
    let err = rt
        .load_file(&dir.join("uppercase.wasm"), &Grants::default())
        .unwrap_err();
    assert!(matches!(err, LoadError::DigestMismatch { .. }), "{err}");
}

#[test]
fn the_second_start_loads_from_the_cache_and_a_changed_engine_setting_does_not() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let file = plugins_dir().join("uppercase.wasm");
    let first = runtime_with_cache(&cache)
        .load_file(&file, &Grants::default())
        .unwrap();
    assert!(!first.info().cached, "a fresh cache compiles");
    let second = runtime_with_cache(&cache)
        .load_file(&file, &Grants::default())
        .unwrap();
    assert!(second.info().cached, "the second start uses the artifact");
    assert!(
        second.info().compile_time < first.info().compile_time,
        "loading ({:?}) is faster than compiling ({:?})",
        second.info().compile_time,
        first.info().compile_time
    );

    let fuel = PluginRuntime::new(RuntimeConfig {
        cache_dir: Some(cache.clone()),
        fuel: true,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let with_fuel = fuel.load_file(&file, &Grants::default()).unwrap();
    assert!(
        !with_fuel.info().cached,
        "another engine setting misses the cache"
    );
    // And the artifact made with fuel on really counts fuel: it still runs correctly.
    let out = with_fuel
        .transformer(&BTreeMap::new())
        .unwrap()
        .transform(&ctx(0, 0), &batch(&["a"]))
        .unwrap();
    assert_eq!(values(&out.batch), ["A"]);
}

#[test]
fn a_corrupt_cached_artifact_is_rebuilt_not_loaded() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let file = plugins_dir().join("uppercase.wasm");
    let rt = runtime_with_cache(&cache);
    let p = rt.load_file(&file, &Grants::default()).unwrap();
    let artifact = rt.cache().path_for(&p.info().digest);
    let mut bytes = std::fs::read(&artifact).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&artifact, &bytes).unwrap();
    let again = runtime_with_cache(&cache)
        .load_file(&file, &Grants::default())
        .unwrap();
    assert!(!again.info().cached, "the corrupt artifact was not used");
    let out = again
        .transformer(&BTreeMap::new())
        .unwrap()
        .transform(&ctx(0, 0), &batch(&["ok"]))
        .unwrap();
    assert_eq!(values(&out.batch), ["OK"]);
}

#[test]
fn a_plugin_of_the_wrong_kind_is_refused_for_the_role() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime_with_cache(tmp.path());
    let p = rt
        .inspect_file(&plugins_dir().join("jsonl-sink.wasm"))
        .unwrap();
    let msg = p.transformer(&BTreeMap::new()).unwrap_err();
    assert!(
        msg.contains("jsonl-sink") && msg.contains("is a sink"),
        "{msg}"
    );
}

#[test]
fn bad_parameters_are_refused_before_anything_runs_naming_the_parameter() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime_with_cache(tmp.path());
    let p = rt
        .load_file(&plugins_dir().join("grep.wasm"), &Grants::default())
        .unwrap();
    let msg = p.transformer(&BTreeMap::new()).unwrap_err();
    assert!(msg.contains("pattern"), "{msg}");
    let msg = p
        .transformer(&params(&[("pattern", "x"), ("colour", "red")]))
        .unwrap_err();
    assert!(msg.contains("colour"), "{msg}");
}

#[test]
fn grep_filters_and_keeps_lineage() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime_with_cache(tmp.path());
    let p = rt
        .load_file(&plugins_dir().join("grep.wasm"), &Grants::default())
        .unwrap();
    let stage = p.transformer(&params(&[("pattern", "err")])).unwrap();
    let out = stage
        .transform(&ctx(0, 0), &batch(&["ok", "error 1", "fine", "stderr"]))
        .unwrap();
    assert_eq!(values(&out.batch), ["error 1", "stderr"]);
    assert_eq!(out.origins, [1, 3]);
    let inverted = p
        .transformer(&params(&[("pattern", "err"), ("invert", "true")]))
        .unwrap();
    let out = inverted
        .transform(&ctx(0, 0), &batch(&["ok", "error 1"]))
        .unwrap();
    assert_eq!(values(&out.batch), ["ok"]);
}

#[test]
fn split_words_emits_each_word_as_key_and_value() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime_with_cache(tmp.path());
    let p = rt
        .load_file(&plugins_dir().join("split-words.wasm"), &Grants::default())
        .unwrap();
    let stage = p.transformer(&BTreeMap::new()).unwrap();
    let out = stage
        .transform(&ctx(0, 0), &batch(&["the cat  sat", "", "on\tthe mat"]))
        .unwrap();
    assert_eq!(
        values(&out.batch),
        ["the", "cat", "sat", "on", "the", "mat"]
    );
    assert_eq!(out.origins, [0, 0, 0, 2, 2, 2]);
    let keys: Vec<_> = (0..out.batch.len())
        .map(|i| {
            out.batch
                .key(i)
                .map(|k| String::from_utf8_lossy(k).into_owned())
        })
        .collect();
    assert_eq!(keys[1].as_deref(), Some("cat"));
    assert!(keys.iter().all(Option::is_some));
}

#[test]
fn json_project_keeps_named_fields_and_rejects_invalid_json() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime_with_cache(tmp.path());
    let p = rt
        .load_file(&plugins_dir().join("json-project.wasm"), &Grants::default())
        .unwrap();
    let stage = p.transformer(&params(&[("fields", "id,name")])).unwrap();
    let out = stage
        .transform(
            &ctx(0, 0),
            &batch(&[
                r#"{"name":"a","id":1,"x":true}"#,
                "{not json",
                r#"[1,2]"#,
                r#"{"id":2}"#,
            ]),
        )
        .unwrap();
    let got = values(&out.batch);
    assert_eq!(got.len(), 2, "{got:?}");
    let first: serde_json::Value = serde_json::from_str(&got[0]).unwrap();
    assert_eq!(first, serde_json::json!({"id": 1, "name": "a"}));
    assert_eq!(out.origins, [0, 3]);
    let rejected: Vec<u32> = out.rejected.iter().map(|r| r.0).collect();
    assert_eq!(rejected, [1, 2]);
}

#[test]
fn the_jsonl_sink_makes_a_batch_visible_only_at_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime_with_cache(&tmp.path().join("cache"));
    let out_dir = tmp.path().join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let grants = Grants {
        dirs: [("/out".to_owned(), out_dir.clone())].into(),
    };
    let p = rt
        .load_file(&plugins_dir().join("jsonl-sink.wasm"), &grants)
        .unwrap();
    let sink = p.sink(&BTreeMap::new()).unwrap();
    sink.write(&ctx(0, 5), &batch(&["a", "b"])).unwrap();
    sink.write(&ctx(1, 5), &batch(&["c"])).unwrap();
    let visible = |dir: &std::path::Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".jsonl"))
            .collect();
        v.sort();
        v
    };
    assert!(
        visible(&out_dir).is_empty(),
        "nothing visible before commit"
    );
    sink.commit("events", 5).unwrap();
    sink.commit("events", 5).unwrap();
    let files = visible(&out_dir);
    assert_eq!(files.len(), 2, "{files:?}");
    let mut lines = Vec::new();
    for f in files {
        for line in std::fs::read_to_string(out_dir.join(f)).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            lines.push(v["value"].as_str().unwrap().to_owned());
        }
    }
    lines.sort();
    assert_eq!(lines, ["a", "b", "c"]);
}

#[test]
fn the_lines_receiver_reads_granted_files_and_resumes_from_its_position() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime_with_cache(&tmp.path().join("cache"));
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::write(input.join("a.txt"), "one\ntwo\nthree\n").unwrap();
    std::fs::write(input.join("b.txt"), "four\n").unwrap();
    let grants = Grants {
        dirs: [("/in".to_owned(), input.clone())].into(),
    };
    let p = rt
        .load_file(&plugins_dir().join("lines.wasm"), &grants)
        .unwrap();
    let recv = p.receiver(&BTreeMap::new()).unwrap();
    assert_eq!(recv.partitions().unwrap(), 1);
    recv.open(0, None).unwrap();
    let first = recv.poll(0, 2, 1 << 20).unwrap();
    assert_eq!(values(&first.records), ["one", "two"]);
    let position = first.position.clone().expect("a replayable position");
    let mut rest = Vec::new();
    for _ in 0..10 {
        let p = recv.poll(0, 100, 1 << 20).unwrap();
        rest.extend(values(&p.records));
        if p.end {
            break;
        }
    }
    assert_eq!(rest, ["three", "four"]);

    // A fresh instance resumes where the first poll stopped.
    let again = p.receiver(&BTreeMap::new()).unwrap();
    again.open(0, Some(&position)).unwrap();
    let resumed = again.poll(0, 100, 1 << 20).unwrap();
    assert_eq!(
        values(&resumed.records).first().map(String::as_str),
        Some("three")
    );
}

#[test]
fn plugin_logs_and_metrics_reach_the_host() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime_with_cache(tmp.path());
    let p = rt
        .load_file(&plugins_dir().join("grep.wasm"), &Grants::default())
        .unwrap();
    let stage = p.transformer(&params(&[("pattern", "a")])).unwrap();
    stage
        .transform(&ctx(0, 0), &batch(&["a", "b", "ab"]))
        .unwrap();
    let counters = p.metrics().counters();
    assert!(
        counters.values().any(|&v| v > 0),
        "grep reports a counter through the host import: {counters:?}"
    );
}

/// A batch of every byte value in values of many lengths, with keys, headers and timestamps,
/// as `uppercase`'s in-place path and its `transform` path must both see it.
fn every_byte_batch() -> RecordBatch {
    let text: Vec<u8> = (0..12_000u32).map(|i| (i * 31 % 256) as u8).collect();
    let mut b = RecordBatch::default();
    let mut at = 0;
    for i in 0..200usize {
        let len = i % 57;
        let key = format!("k{i}");
        b.push(
            (i % 3 != 0).then_some(key.as_bytes()),
            &text[at..at + len],
            Some(1_000 + i as i64),
        );
        at += len;
    }
    b
}

#[test]
fn uppercase_in_place_gives_byte_for_byte_what_its_transform_gives() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime_with_cache(tmp.path());
    let p = rt
        .load_file(&plugins_dir().join("uppercase.wasm"), &Grants::default())
        .unwrap();
    let stage = p.transformer(&BTreeMap::new()).unwrap();
    let input = every_byte_batch();
    let out = stage.transform(&ctx(3, 7), &input).unwrap();
    // The slow path's answer (`transform` through `Output::map_same_shape`, which the
    // plugin's own unit tests hold equal to the standard library's): ASCII upper-case.
    assert_eq!(
        &out.batch.values.data[..],
        &input.values.data.to_ascii_uppercase()[..]
    );
    assert_eq!(out.batch.values.ends, input.values.ends);
    assert_eq!(out.batch.timestamps, input.timestamps);
    assert_eq!(out.batch.keys, input.keys);
    assert!(out.origins.is_empty());
}

#[test]
fn a_guest_that_lies_about_its_output_shape_gets_an_error_naming_it_never_a_crash() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime_with_cache(tmp.path());
    let p = load_fixture(&rt, "liar");
    let input = batch(&["alpha", "beta", "gamma"]);
    for (mode, says) in [
        (
            "short-data",
            "the last end offset is 14 but the data is 13 bytes",
        ),
        ("overrun", "the last end offset is 1014"),
        ("out-of-bounds", "out of bounds"),
    ] {
        let params = BTreeMap::from([("mode".to_owned(), mode.to_owned())]);
        let stage = p.transformer(&params).unwrap();
        let err = stage.transform(&ctx(3, 7), &input).unwrap_err();
        assert_names_its_context(&err, &p);
        assert!(err.to_string().contains(says), "{mode}: {err}");
        // The stage goes on: the next call gets an answer too (the same error), not a crash.
        assert!(stage.transform(&ctx(3, 7), &input).is_err(), "{mode}");
    }
}
