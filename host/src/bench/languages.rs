//! `sluice bench plugins --lang all`: the same transformations written in Rust, Python,
//! JavaScript and C (`examples/identity/`, `examples/json-upper/`), built by `sluice plugin
//! build`, started cold and warm, and timed on the same batches, alternating the languages
//! round by round so that machine noise hits them alike; beside them the Rust functions called
//! natively, and (when the bench's Spark venv is there) Spark running json-upper as a Python
//! UDF over the same records.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::batch::RecordBatch;
use crate::error::{Error, Result};
use crate::plugin::limits::{Grants, RuntimeConfig};
use crate::plugin::project::{self, Lang};
use crate::plugin::stages::TransformStage;
use crate::plugin::{CallContext, PluginRuntime};

use super::plugins::{median, sdk_batch};

/// What `bench plugins --lang` runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The languages, in the order of the table.
    pub langs: Vec<Lang>,
    /// The checkout's `examples/` directory.
    pub examples: PathBuf,
    /// Where the projects are copied and built (kept, so a second run builds incrementally).
    pub work: PathBuf,
    /// A short run.
    pub quick: bool,
    /// The Spark venv (`bench/spark/venv`'s); `None` leaves Spark out.
    pub spark_venv: Option<PathBuf>,
}

/// The options from the command line: `langs` is `all` or a comma-separated list; the
/// defaults are the checkout's examples, `~/.cache/sluice/bench-plugins`, and the bench's
/// Spark venv when it exists.
pub fn options(
    langs: &str,
    examples: Option<PathBuf>,
    work: Option<PathBuf>,
    spark_venv: Option<PathBuf>,
    no_spark: bool,
    quick: bool,
) -> Result<Options> {
    let langs = match langs {
        "all" => vec![Lang::Rust, Lang::Python, Lang::Js, Lang::C],
        list => list
            .split(',')
            .map(|l| {
                l.trim()
                    .parse()
                    .map_err(|e| Error::Usage(format!("--lang {e}")))
            })
            .collect::<Result<_>>()?,
    };
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    let examples = examples.unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("examples")
    });
    let work = work.unwrap_or_else(|| home.join(".cache/sluice/bench-plugins"));
    let spark_venv = match (no_spark, spark_venv) {
        (true, _) => None,
        (false, Some(v)) => Some(v),
        (false, None) => Some(home.join(".cache/sluice/spark-venv"))
            .filter(|v| v.join("bin").join("python").is_file()),
    };
    Ok(Options {
        langs,
        examples,
        work,
        quick,
        spark_venv,
    })
}

/// One workload: an example, its parameters, and the native Rust function it must match.
struct Workload {
    label: &'static str,
    example: &'static str,
    mode: Option<&'static str>,
    native: fn(&sluice_sdk::Batch, &mut sluice_sdk::Output),
}

const WORKLOADS: [Workload; 3] = [
    Workload {
        label: "identity bulk",
        example: "identity",
        mode: Some("bulk"),
        native: |b, o| o.pass_through(b),
    },
    Workload {
        label: "identity each",
        example: "identity",
        mode: Some("each"),
        native: |b, o| {
            for r in b.records() {
                o.push(r, r.value());
            }
        },
    },
    Workload {
        label: "json-upper",
        example: "json-upper",
        mode: None,
        native: json_upper::upper,
    },
];

/// A language's built plugins and what building and starting them cost.
struct Built {
    lang: Lang,
    /// Per example: build seconds, wasm bytes, cold start, warm start.
    starts: Vec<(&'static str, Duration, u64, Duration, Duration)>,
    /// Per workload (same order as [`WORKLOADS`]): the stage.
    stages: Vec<TransformStage>,
}

/// Runs the comparison and returns its report.
pub fn run(options: &Options) -> Result<String> {
    let inputs = [identity_input(), json_input(&options.examples)?];
    let input_of = |w: &Workload| &inputs[usize::from(w.example == "json-upper")];
    let cache_root = options.work.join("component-cache");
    let _ = std::fs::remove_dir_all(&cache_root);
    let mut built = Vec::new();
    for &lang in &options.langs {
        built.push(build_and_start(
            options,
            lang,
            &cache_root.join(lang.to_string()),
        )?);
    }
    let ctx = context();
    for b in &built {
        for (w, stage) in WORKLOADS.iter().zip(&b.stages) {
            check_same(w, stage, &ctx, input_of(w), b.lang)?;
        }
    }
    let (rounds, per_round) = if options.quick { (3, 5) } else { (7, 30) };
    // times[lang][workload], plus the native row at the end.
    let mut times = vec![vec![Vec::new(); WORKLOADS.len()]; built.len() + 1];
    for round in 0..rounds {
        for k in 0..built.len() {
            let i = (k + round) % built.len();
            for (j, w) in WORKLOADS.iter().enumerate() {
                let input = input_of(w);
                let t = Instant::now();
                for _ in 0..per_round {
                    std::hint::black_box(built[i].stages[j].transform(&ctx, input)?);
                }
                times[i][j].push(t.elapsed() / per_round);
            }
        }
        for (j, w) in WORKLOADS.iter().enumerate() {
            let native_input = sdk_batch(input_of(w));
            let (records, bytes) = (native_input.len(), native_input.values_data().len());
            let t = Instant::now();
            for _ in 0..per_round {
                // As the guest SDK's output does: room for the input's size from the start.
                let mut out = sluice_sdk::Output::with_capacity(records, bytes);
                (w.native)(std::hint::black_box(&native_input), &mut out);
                std::hint::black_box(&out);
            }
            times[built.len()][j].push(t.elapsed() / per_round);
        }
    }
    let spark = match &options.spark_venv {
        Some(venv) => Some(spark_udf(
            venv,
            &options.examples,
            &options.work,
            options.quick,
        )?),
        None => None,
    };
    Ok(report(options, &built, &mut times, &inputs, spark))
}

/// Copies and builds the examples of `lang`, then loads each with an empty compiled-component
/// cache (cold) and again with the cache filled (warm), and makes a stage per workload.
fn build_and_start(options: &Options, lang: Lang, cache: &Path) -> Result<Built> {
    let mut starts = Vec::new();
    let mut files = BTreeMap::new();
    for example in ["identity", "json-upper"] {
        let source = options.examples.join(example).join(lang.to_string());
        let dir = options.work.join(format!("{example}-{lang}"));
        project::copy_project(&source, &dir)?;
        eprintln!(
            "bench plugins: building {example} in {lang} ({})",
            dir.display()
        );
        let t = Instant::now();
        let wasm = project::build_project(&dir)?;
        let build = t.elapsed();
        let bytes = std::fs::metadata(&wasm).map_or(0, |m| m.len());
        let cold = start(&wasm, cache)?;
        let warm = start(&wasm, cache)?;
        starts.push((example, build, bytes, cold, warm));
        files.insert(example, wasm);
    }
    let runtime = runtime(cache)?;
    let mut stages = Vec::new();
    for w in &WORKLOADS {
        let plugin = runtime.load_file(&files[w.example], &Grants::default())?;
        let params = w
            .mode
            .map(|m| BTreeMap::from([("mode".to_owned(), m.to_owned())]))
            .unwrap_or_default();
        stages.push(plugin.transformer(&params).map_err(Error::Usage)?);
    }
    Ok(Built {
        lang,
        starts,
        stages,
    })
}

/// Time from a new runtime to a stage ready for its first call: load (compile, or read the
/// compiled cache), instantiate, `init`.
fn start(wasm: &Path, cache: &Path) -> Result<Duration> {
    let t = Instant::now();
    let runtime = runtime(cache)?;
    let plugin = runtime.load_file(wasm, &Grants::default())?;
    let stage = plugin.transformer(&BTreeMap::new()).map_err(Error::Usage)?;
    stage.transform(&context(), &RecordBatch::with_capacity(0, 0))?;
    Ok(t.elapsed())
}

/// Every timed call's context: stream `bench`, partition 0, batch 0.
fn context() -> CallContext {
    CallContext {
        stream: "bench".into(),
        partition: 0,
        batch_id: 0,
        batch_time_ms: 0,
        part: 0,
    }
}

fn runtime(cache: &Path) -> Result<PluginRuntime> {
    Ok(PluginRuntime::new(RuntimeConfig {
        cache_dir: Some(cache.to_owned()),
        ..RuntimeConfig::default()
    })?)
}

/// Fails when `stage`'s output or rejects differ from the native function's on `input`.
fn check_same(
    w: &Workload,
    stage: &TransformStage,
    ctx: &CallContext,
    input: &RecordBatch,
    lang: Lang,
) -> Result<()> {
    let out = stage.transform(ctx, input)?;
    let mut native = sluice_sdk::Output::new();
    (w.native)(&sdk_batch(input), &mut native);
    let same_values = native.len() == out.batch.len()
        && native
            .values()
            .enumerate()
            .all(|(i, v)| v == out.batch.value(i));
    let native_rejects: Vec<(u32, String)> = native
        .rejected()
        .iter()
        .map(|r| (r.index, r.reason.clone()))
        .collect();
    if !same_values || native_rejects != out.rejected {
        return Err(Error::Usage(format!(
            "{} in {lang}: its output differs from the native Rust function's ({} vs {} records, {} vs {} rejects)",
            w.label,
            out.batch.len(),
            native.len(),
            out.rejected.len(),
            native_rejects.len()
        )));
    }
    Ok(())
}

/// The identity workloads' batch: `bench plugins`' corpus (10,000 values of 100 bytes).
fn identity_input() -> RecordBatch {
    super::plugins::corpus(super::plugins::RECORDS, super::plugins::VALUE_BYTES)
}

/// json-upper's batch: the 10,000 records of `examples/json-upper/corpus.py`.
fn json_input(examples: &Path) -> Result<RecordBatch> {
    let text = corpus_bytes(examples, 10_000)?;
    let mut batch = RecordBatch::with_capacity(10_000, text.len());
    for (i, line) in text
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        batch.push(None, line, Some(1_700_000_000_000 + i as i64));
    }
    Ok(batch)
}

fn corpus_bytes(examples: &Path, records: usize) -> Result<Vec<u8>> {
    let script = examples.join("json-upper").join("corpus.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(records.to_string())
        .output()
        .map_err(Error::io(format!("running python3 {}", script.display())))?;
    if !out.status.success() {
        return Err(Error::Usage(format!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(out.stdout)
}

/// What Spark did with json-upper as a Python UDF.
struct SparkResult {
    version: String,
    records: u64,
    seconds: f64,
}

/// Runs `bench/spark/json_udf.py` with the venv's Python over the corpus repeated.
fn spark_udf(venv: &Path, examples: &Path, work: &Path, quick: bool) -> Result<SparkResult> {
    let repeat = if quick { 5 } else { 30 };
    let corpus = corpus_bytes(examples, 10_000)?;
    let file = work.join("json-upper-corpus.jsonl");
    std::fs::write(&file, corpus.repeat(repeat))
        .map_err(Error::io(format!("writing {}", file.display())))?;
    let script = examples
        .join("..")
        .join("bench")
        .join("spark")
        .join("json_udf.py");
    eprintln!(
        "bench plugins: Spark runs json-upper as a Python UDF over {} records",
        repeat * 10_000
    );
    let out = Command::new(venv.join("bin").join("python"))
        .arg(&script)
        .arg(&file)
        .output()
        .map_err(Error::io(format!("running {}", script.display())))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().rev().find(|l| l.starts_with("RESULT "));
    let (Some(line), true) = (line, out.status.success()) else {
        return Err(Error::Usage(format!(
            "the Spark UDF run failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .join("\n")
        )));
    };
    let mut fields = line.split_whitespace().skip(1);
    let mut next = || fields.next().unwrap_or_default().to_owned();
    let version = next();
    let records = next().parse().unwrap_or(0);
    let seconds = next().parse().unwrap_or(f64::NAN);
    let kept: u64 = next().parse().unwrap_or(0);
    let _ = std::fs::remove_file(&file);
    if records != (repeat * 10_000) as u64 || kept == 0 {
        return Err(Error::Usage(format!(
            "the Spark UDF run counted {records} records, {kept} kept: not the corpus"
        )));
    }
    Ok(SparkResult {
        version,
        records,
        seconds,
    })
}

fn report(
    options: &Options,
    built: &[Built],
    times: &mut [Vec<Vec<Duration>>],
    inputs: &[RecordBatch; 2],
    spark: Option<SparkResult>,
) -> String {
    let mut r = String::new();
    let _ = writeln!(
        r,
        "sluice bench plugins --lang: batches of 10,000 records (identity: 100-byte values; json-upper: examples/json-upper/corpus.py), languages alternating round by round"
    );
    let _ = writeln!(
        r,
        "{:<8} {:<14} {:>12} {:>9} {:>10}",
        "lang", "workload", "records/s", "vs rust", "vs native"
    );
    let rate = |w: &Workload, d: Duration| {
        let n = inputs[usize::from(w.example == "json-upper")].len();
        n as f64 / d.as_secs_f64()
    };
    let medians: Vec<Vec<Duration>> = times
        .iter_mut()
        .map(|row| row.iter_mut().map(|t| median(t)).collect())
        .collect();
    let native = &medians[built.len()];
    let rust = built.iter().position(|b| b.lang == Lang::Rust);
    for (j, w) in WORKLOADS.iter().enumerate() {
        for (i, b) in built.iter().enumerate() {
            let vs_rust = rust.map_or("-".to_owned(), |k| {
                format!(
                    "{:.2}",
                    medians[k][j].as_secs_f64() / medians[i][j].as_secs_f64()
                )
            });
            let _ = writeln!(
                r,
                "{:<8} {:<14} {:>12.0} {:>9} {:>10.3}",
                b.lang.to_string(),
                w.label,
                rate(w, medians[i][j]),
                vs_rust,
                native[j].as_secs_f64() / medians[i][j].as_secs_f64()
            );
        }
        let _ = writeln!(
            r,
            "{:<8} {:<14} {:>12.0} {:>9} {:>10}",
            "native",
            w.label,
            rate(w, native[j]),
            "",
            "1"
        );
    }
    if let Some(s) = spark {
        let spark_rate = s.records as f64 / s.seconds;
        let _ = writeln!(
            r,
            "{:<8} {:<14} {:>12.0}   (Spark {}, a Python UDF, local[2], {} records in {:.1} s)",
            "spark", "json-upper", spark_rate, s.version, s.records, s.seconds
        );
        for (i, b) in built.iter().enumerate() {
            let _ = writeln!(
                r,
                "json-upper {} / Spark Python UDF: {:.1}x",
                b.lang,
                rate(&WORKLOADS[2], medians[i][2]) / spark_rate
            );
        }
    }
    let _ = writeln!(
        r,
        "\n{:<8} {:<11} {:>9} {:>12} {:>13} {:>13}",
        "lang", "example", "build s", "wasm bytes", "cold start ms", "warm start ms"
    );
    for b in built {
        for (example, build, bytes, cold, warm) in &b.starts {
            let _ = writeln!(
                r,
                "{:<8} {:<11} {:>9.1} {:>12} {:>13.1} {:>13.1}",
                b.lang.to_string(),
                example,
                build.as_secs_f64(),
                bytes,
                cold.as_secs_f64() * 1e3,
                warm.as_secs_f64() * 1e3
            );
        }
    }
    let _ = writeln!(
        r,
        "(build: `sluice plugin build` in {}; cold: a new runtime with an empty compiled-component cache to the first call; warm: the same with the cache filled)",
        options.work.display()
    );
    r
}
