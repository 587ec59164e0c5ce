//! Spark's side of `sluice bench recovery --spark`: `bench/recovery.py` run with the Spark
//! venv's python, one trial per call, so that its trials alternate with sluice's.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Error, Result};

use super::Trial;

/// The Spark side, ready to run trials: the venv made, the jobs compiled, the corpus written.
#[derive(Debug)]
pub struct Spark {
    python: PathBuf,
    script: PathBuf,
    rate: u64,
    /// Spark's version, from the venv.
    pub version: String,
}

/// The `bench/` directory of the checkout this host was built from.
pub fn default_bench_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("bench")
}

impl Spark {
    /// Makes the venv (`bench/spark/venv`, idempotent) and prepares the jobs; an error that
    /// says what is missing when either fails: `--spark` never skips silently.
    pub fn prepare(bench: &Path, rate: u64) -> Result<Spark> {
        let script = bench.join("recovery.py");
        if !script.is_file() {
            return Err(Error::Usage(format!(
                "--spark: {} is missing; give the checkout's bench/ directory with --bench-dir",
                script.display()
            )));
        }
        let venv = run_checked(
            &mut Command::new(bench.join("spark").join("venv")),
            "making the Spark venv (bench/spark/venv: python3 with venv and PyPI are needed)",
        )?;
        let python = Path::new(venv.trim()).join("bin").join("python");
        let spark = Spark {
            python,
            script,
            rate,
            version: String::new(),
        };
        let prep = run_checked(
            spark.command().arg("--prepare"),
            "preparing the Spark jobs (bench/recovery.py --prepare: javac 17 is needed)",
        )?;
        let prep: serde_json::Value = serde_json::from_str(prep.trim()).map_err(|e| {
            Error::Usage(format!(
                "--spark: bench/recovery.py --prepare said {prep:?}: {e}"
            ))
        })?;
        let version = prep["spark"].as_str().unwrap_or("?").to_owned();
        Ok(Spark { version, ..spark })
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.python);
        cmd.arg(&self.script)
            .arg("--rate")
            .arg(self.rate.to_string());
        cmd
    }

    /// One kill-and-restart trial of the DStream job in `dir`, the kill `phase_ms` after its
    /// third completed batch.
    pub fn trial(&self, dir: &Path, phase_ms: u64) -> Result<Trial> {
        let mut cmd = self.command();
        cmd.arg("--trial")
            .arg(dir)
            .arg("--phase-ms")
            .arg(phase_ms.to_string());
        let out = run_checked(
            &mut cmd,
            "a Spark recovery trial (bench/recovery.py --trial)",
        )?;
        let last = out.trim().lines().last().unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(last)
            .map_err(|e| Error::Usage(format!("bench/recovery.py --trial said {last:?}: {e}")))?;
        let num = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
        if v["restored_from_checkpoint"] != serde_json::Value::Bool(true) {
            tracing::warn!(dir = %dir.display(), "The restarted Spark job did not say it was restored from its checkpoint.");
        }
        Ok(Trial {
            recovery_ms: num("recovery_ms"),
            first_batch_ms: num("first_batch_ms"),
            resumed_at: v["resumed_at"].as_u64(),
            checkpoint_ms: Vec::new(),
        })
    }
}

/// Runs `cmd` and returns its standard output; an error with `what` and the end of its
/// standard error when it fails.
fn run_checked(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(Error::io(format!("--spark: {what}")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.trim().lines().rev().take(8).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(Error::Usage(format!(
            "--spark: {what} failed ({}):\n{}",
            out.status,
            tail.join("\n")
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
