//! The cost of isolation with the real fixtures: a 10,000-record block with one poison record
//! against the same block without it. Ignored (it needs the fixtures built by
//! `scripts/build-plugins`, found through `$SLUICE_COMPONENTS`); run with
//! `cargo test --release -p sluice isolation_cost -- --ignored --nocapture`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU32;
use std::time::{Duration, Instant};

use super::*;
use crate::plugin::limits::RuntimeConfig;
use crate::plugin::{CallContext, PluginRuntime, TransformStage};

const RECORDS: usize = 10_000;

fn block(poison: Option<usize>) -> RecordBatch {
    let mut b = RecordBatch::default();
    for i in 0..RECORDS {
        let v = match poison {
            Some(p) if p == i => format!("POISON-{i}"),
            _ => format!("line-{i}"),
        };
        b.push(None, v.as_bytes(), Some(0));
    }
    b
}

fn stage(rt: &PluginRuntime, fixture: &str) -> TransformStage {
    let dir = PathBuf::from(std::env::var_os("SLUICE_COMPONENTS").expect("$SLUICE_COMPONENTS"));
    let plugin = rt
        .load_file(
            &dir.join("fixtures").join(format!("{fixture}.wasm")),
            &Default::default(),
        )
        .unwrap();
    let params = BTreeMap::from([("poison-prefix".to_owned(), "POISON".to_owned())]);
    plugin.transformer(&params).unwrap()
}

/// Isolates over `records` with `stage`; gives the time and the poison count.
fn isolate_with(stage: &TransformStage, records: &RecordBatch) -> (Duration, usize) {
    let ctx = CallContext {
        stream: "input".into(),
        partition: 0,
        batch_id: 0,
        batch_time_ms: 0,
        part: 0,
    };
    let call = |r: &RecordBatch, l: Lineage| -> Result<Part, JobError> {
        let out = stage
            .transform(&ctx, r)
            .map_err(|source| JobError::Plugin { batch: 0, source })?;
        Ok(Part {
            partition: 0,
            records: out.batch,
            lineage: l.follow(out.origins),
        })
    };
    let dead = std::cell::Cell::new(0);
    let dead_letter =
        |_: &RecordBatch, _: usize, _: (u32, u64), _: &PluginError| dead.set(dead.get() + 1);
    let found = AtomicU32::new(0);
    let iso = Isolation {
        policy: PoisonPolicy::default(),
        found: &found,
        batch: 0,
        partition: 0,
        call: &call,
        dead_letter: &dead_letter,
    };
    let started = Instant::now();
    let part = super::call(
        &iso,
        records,
        Lineage::Range {
            partition: 0,
            start: 0,
        },
    )
    .unwrap();
    let took = started.elapsed();
    assert_eq!(part.records.len() + dead.get(), RECORDS);
    (took, dead.get())
}

#[test]
#[ignore = "a benchmark: needs the fixtures built; prints its numbers"]
fn isolation_cost_of_one_poison_record_in_ten_thousand() {
    let cache = std::env::temp_dir().join("sluice-isolation-bench-cache");
    let rt = PluginRuntime::new(RuntimeConfig {
        cache_dir: Some(cache),
        ..RuntimeConfig::default()
    })
    .unwrap();
    let (clean, poisoned) = (block(None), block(Some(4321)));
    for fixture in ["panic", "memory-hog", "infinite-loop"] {
        let stage = stage(&rt, fixture);
        isolate_with(&stage, &clean);
        let mut normal: Vec<Duration> = (0..9).map(|_| isolate_with(&stage, &clean).0).collect();
        normal.sort();
        let mut with: Vec<Duration> = (0..3)
            .map(|_| isolate_with(&stage, &poisoned))
            .map(|(t, n)| {
                assert_eq!(n, 1);
                t
            })
            .collect();
        with.sort();
        let (n, w) = (normal[4], with[1]);
        println!(
            "{fixture}: a {RECORDS}-record block takes {:.2} ms clean and {:.1} ms with one poison record ({:.1}x)",
            n.as_secs_f64() * 1e3,
            w.as_secs_f64() * 1e3,
            w.as_secs_f64() / n.as_secs_f64()
        );
    }
}
