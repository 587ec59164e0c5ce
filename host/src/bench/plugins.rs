//! `sluice bench plugins`: the whole plugin call path against the same Rust function called
//! natively, on the same data, alternating the two so that machine noise hits both alike.
//!
//! The WASM side is what the engine does for every partition of every batch: lower the
//! columnar batch into the instance, call `transform`, lift the output and rebuild the host's
//! batch (with timestamps inherited). The native side calls the plugin crate's own function
//! on the SDK's batch type in this process.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::batch::RecordBatch;
use crate::error::{Error, Result};
use crate::plugin::limits::Grants;
use crate::plugin::{CallContext, PluginRuntime};

/// Records per batch.
pub const RECORDS: usize = 10_000;
/// Bytes per record value.
pub const VALUE_BYTES: usize = 100;

/// Deterministic text: lower-case words and spaces, `RECORDS` values of `VALUE_BYTES` bytes.
pub fn corpus(records: usize, value_bytes: usize) -> RecordBatch {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut b = RecordBatch::with_capacity(records, records * value_bytes);
    let mut value = vec![0u8; value_bytes];
    for i in 0..records {
        for byte in value.iter_mut() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let r = (state % 32) as u8;
            *byte = if r >= 26 { b' ' } else { b'a' + r };
        }
        b.push(None, &value, Some(1_700_000_000_000 + i as i64));
    }
    b
}

/// The SDK's batch holding the same data (for the native side of a comparison).
pub(crate) fn sdk_batch(b: &RecordBatch) -> sluice_sdk::Batch {
    sluice_sdk::Batch::from_parts(sluice_sdk::BatchParts {
        values: sluice_sdk::Column {
            data: b.values.data.to_vec(),
            ends: b.values.ends.clone(),
        },
        keys: None,
        timestamps: b.timestamps.clone(),
        headers: None,
    })
    .expect("the corpus is a valid batch")
}

type NativeFn = fn(&sluice_sdk::Batch, &mut sluice_sdk::Output);

struct Workload {
    name: &'static str,
    native: NativeFn,
}

/// Runs the benchmark (every workload, or the one named `only`) and returns the report.
pub fn run(
    runtime: &PluginRuntime,
    plugins: &Path,
    quick: bool,
    only: Option<&str>,
) -> Result<String> {
    let (rounds, per_round) = if quick { (3, 30) } else { (10, 200) };
    let input = corpus(RECORDS, VALUE_BYTES);
    let native_input = sdk_batch(&input);
    let ctx = CallContext {
        stream: "bench".into(),
        partition: 0,
        batch_id: 0,
        batch_time_ms: 0,
        part: 0,
    };
    let workloads = [
        Workload {
            name: "uppercase",
            native: |b, o| uppercase::uppercase(b, o),
        },
        Workload {
            name: "identity",
            native: |b, o| identity::identity(b, o),
        },
    ];
    if let Some(name) = only
        && !workloads.iter().any(|w| w.name == name)
    {
        let names: Vec<&str> = workloads.iter().map(|w| w.name).collect();
        return Err(Error::Usage(format!(
            "bench plugins: --only takes {}, not {name:?}",
            names.join(" or ")
        )));
    }
    let mut report = String::new();
    let _ = writeln!(
        report,
        "sluice bench plugins: {RECORDS} records x {VALUE_BYTES} bytes per batch; {rounds} rounds of {per_round} batches, WASM and native alternating"
    );
    let _ = writeln!(
        report,
        "{:<10} {:>14} {:>14} {:>12} {:>12}",
        "workload", "wasm rec/s", "native rec/s", "wasm us", "native us"
    );
    let mut ratios = Vec::new();
    let mut instantiation = None;
    let mut empty_call = None;
    for w in workloads
        .iter()
        .filter(|w| only.is_none_or(|n| n == w.name))
    {
        let file = plugins.join(format!("{}.wasm", w.name));
        let plugin = runtime.load_file(&file, &Grants::default())?;
        let stage = plugin.transformer(&BTreeMap::new()).map_err(Error::Usage)?;

        // Same answer both ways, checked before anything is timed.
        let wasm_out = stage.transform(&ctx, &input)?;
        let mut native_out = sluice_sdk::Output::with_capacity(RECORDS, RECORDS * VALUE_BYTES);
        (w.native)(&native_input, &mut native_out);
        let same = native_out.len() == wasm_out.batch.len()
            && native_out
                .values()
                .enumerate()
                .all(|(i, v)| v == wasm_out.batch.value(i));
        if !same {
            return Err(Error::Usage(format!(
                "{}: the plugin's output differs from the native function's",
                w.name
            )));
        }

        let mut wasm_times = Vec::new();
        let mut native_times = Vec::new();
        for _ in 0..rounds {
            let t = Instant::now();
            for _ in 0..per_round {
                let out = stage.transform(&ctx, &input)?;
                std::hint::black_box(&out);
            }
            wasm_times.push(t.elapsed() / per_round);
            let t = Instant::now();
            for _ in 0..per_round {
                let mut out = sluice_sdk::Output::with_capacity(RECORDS, RECORDS * VALUE_BYTES);
                (w.native)(std::hint::black_box(&native_input), &mut out);
                std::hint::black_box(&out);
            }
            native_times.push(t.elapsed() / per_round);
        }
        let wasm = median(&mut wasm_times);
        let native = median(&mut native_times);
        let rate = |d: Duration| RECORDS as f64 / d.as_secs_f64();
        let _ = writeln!(
            report,
            "{:<10} {:>14.0} {:>14.0} {:>12.1} {:>12.1}",
            w.name,
            rate(wasm),
            rate(native),
            wasm.as_secs_f64() * 1e6,
            native.as_secs_f64() * 1e6
        );
        ratios.push((w.name, wasm.as_secs_f64() / native.as_secs_f64()));
        if w.name == "identity" {
            empty_call = Some(time_empty_call(&stage, &ctx, rounds, per_round)?);
        }
        // One workload alone is for a profile of its calls: no instantiation in the samples.
        if instantiation.is_none() && only.is_none() {
            instantiation = Some(plugin.time_instantiation(if quick { 200 } else { 2_000 })?);
        }
    }
    for (name, ratio) in ratios {
        let _ = writeln!(report, "{name} ratio wasm/native: {ratio:.2}");
    }
    if let Some(d) = empty_call {
        let _ = writeln!(
            report,
            "identity on an empty batch: {:.2} us a call (the boundary with nothing to copy; median)",
            d.as_secs_f64() * 1e6
        );
    }
    if let Some(d) = instantiation {
        let _ = writeln!(
            report,
            "instantiation from InstancePre: {:.1} us (mean, new store each, no init)",
            d.as_secs_f64() * 1e6
        );
    }
    Ok(report)
}

/// The median time of a `transform` call on a batch of no records: what the boundary costs
/// before any record crosses it (the floor under identity's ratio).
fn time_empty_call(
    stage: &crate::plugin::TransformStage,
    ctx: &CallContext,
    rounds: u32,
    per_round: u32,
) -> Result<Duration> {
    let empty = RecordBatch::with_capacity(0, 0);
    let calls = per_round * 10;
    let mut times = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        for _ in 0..calls {
            std::hint::black_box(stage.transform(ctx, std::hint::black_box(&empty))?);
        }
        times.push(t.elapsed() / calls);
    }
    Ok(median(&mut times))
}

/// The median of `v` (sorted in place).
pub(crate) fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}
