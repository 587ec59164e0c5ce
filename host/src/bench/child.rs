//! A `sluice run` child process and the batch report it writes (for the benchmarks that time a
//! whole driver): start it, wait for its batches, kill it with SIGKILL.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

/// The fields of one `--report` line that the recovery benchmark reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// `batch`: the batch id.
    pub id: u64,
    /// `done_ms`: when the batch was committed, epoch ms.
    pub done_ms: i64,
    /// `records_in`.
    pub records_in: u64,
    /// `processing_ms`: from the batch's first work to its commit (the checkpoint write
    /// included).
    pub processing_ms: f64,
    /// `checkpoint_ms`: time spent writing the batch's checkpoint entry, when the build
    /// reports it.
    pub checkpoint_ms: Option<f64>,
}

/// The complete lines of a report file (a line still being written is left out); none when
/// the file does not exist yet.
pub fn read_report(path: &Path) -> Vec<Batch> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut lines: Vec<&str> = text.split('\n').collect();
    lines.pop(); // after the last newline: empty, or a line not yet whole
    lines.iter().filter_map(|l| parse_line(l)).collect()
}

fn parse_line(line: &str) -> Option<Batch> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    Some(Batch {
        id: v.get("batch")?.as_u64()?,
        done_ms: v.get("done_ms")?.as_f64()? as i64,
        records_in: v.get("records_in").and_then(|r| r.as_u64()).unwrap_or(0),
        processing_ms: v
            .get("processing_ms")
            .and_then(|r| r.as_f64())
            .unwrap_or(0.0),
        checkpoint_ms: v.get("checkpoint_ms").and_then(|c| c.as_f64()),
    })
}

/// Now, in milliseconds since the Unix epoch (the clock of the report's `done_ms`).
pub fn epoch_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// What every `sluice run` child of the benchmark is given.
#[derive(Debug, Clone)]
pub struct RunCommand {
    /// The sluice binary.
    pub exe: PathBuf,
    /// The plugin directory.
    pub plugins: PathBuf,
    /// The compiled-component cache, when not the default.
    pub cache_dir: Option<PathBuf>,
}

impl RunCommand {
    fn command(&self, subcommand: &str, pipeline: &Path) -> Command {
        let mut cmd = Command::new(&self.exe);
        if let Some(dir) = &self.cache_dir {
            cmd.arg("--cache-dir").arg(dir);
        }
        cmd.arg(subcommand)
            .arg(pipeline)
            .arg("--plugins")
            .arg(&self.plugins);
        cmd
    }

    /// Runs `sluice validate` on `pipeline` (which also compiles its plugins into the cache);
    /// the last line of its error output when it refuses the file.
    pub fn validate(&self, pipeline: &Path) -> Result<std::result::Result<(), String>> {
        let out = self
            .command("validate", pipeline)
            .stdin(Stdio::null())
            .output()
            .map_err(Error::io("running sluice validate"))?;
        if out.status.success() {
            return Ok(Ok(()));
        }
        let err = String::from_utf8_lossy(&out.stderr);
        Ok(Err(err.trim().lines().last().unwrap_or("?").to_owned()))
    }

    /// Starts `sluice run pipeline --report report`, its log in `log`.
    pub fn start(&self, pipeline: &Path, report: &Path, log: &Path) -> Result<Driver> {
        self.spawn(self.command("run", pipeline), report, log)
    }

    /// [`RunCommand::start`] for one of several hosts (`[ha]`): `--owner owner`.
    pub fn start_as(
        &self,
        pipeline: &Path,
        report: &Path,
        log: &Path,
        owner: &str,
    ) -> Result<Driver> {
        let mut cmd = self.command("run", pipeline);
        cmd.arg("--owner").arg(owner);
        self.spawn(cmd, report, log)
    }

    fn spawn(&self, mut cmd: Command, report: &Path, log: &Path) -> Result<Driver> {
        let log_file = std::fs::File::create(log).map_err(Error::io("creating a run log"))?;
        let started_ms = epoch_ms();
        let child = cmd
            .arg("--report")
            .arg(report)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(Error::io(format!("starting {}", self.exe.display())))?;
        Ok(Driver {
            child,
            report: report.to_owned(),
            log: log.to_owned(),
            started_ms,
        })
    }
}

/// A running `sluice run`; killed with SIGKILL when dropped, so that no failure path leaves
/// one behind.
#[derive(Debug)]
pub struct Driver {
    child: Child,
    report: PathBuf,
    log: PathBuf,
    /// When the process was started, epoch ms.
    pub started_ms: i64,
}

impl Driver {
    /// Waits until the report holds `n` batches and returns them; an error when the process
    /// ends first or `timeout` passes.
    pub fn wait_batches(&mut self, n: usize, timeout: Duration) -> Result<Vec<Batch>> {
        let deadline = Instant::now() + timeout;
        loop {
            let batches = read_report(&self.report);
            if batches.len() >= n {
                return Ok(batches);
            }
            let status = self
                .child
                .try_wait()
                .map_err(Error::io("waiting for sluice run"))?;
            if let Some(status) = status {
                return Err(self.failed(&format!(
                    "sluice run ended ({status}) after {} of {n} batches",
                    batches.len()
                )));
            }
            if Instant::now() > deadline {
                return Err(self.failed(&format!(
                    "sluice run committed {} of {n} batches in {timeout:?}",
                    batches.len()
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits until the process ends by itself; an error when it fails or `timeout` passes.
    pub fn wait_end(&mut self, timeout: Duration) -> Result<Vec<Batch>> {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self
                .child
                .try_wait()
                .map_err(Error::io("waiting for sluice run"))?;
            match status {
                Some(s) if s.success() => return Ok(read_report(&self.report)),
                Some(s) => return Err(self.failed(&format!("sluice run failed ({s})"))),
                None if Instant::now() > deadline => {
                    return Err(self.failed(&format!("sluice run still running after {timeout:?}")));
                }
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// Sends SIGKILL (`Child::kill` on Unix) and reaps the process; the time the signal was
    /// sent, epoch ms.
    pub fn kill(&mut self) -> Result<i64> {
        self.child
            .kill()
            .map_err(Error::io("sending SIGKILL to sluice run"))?;
        let at = epoch_ms();
        self.child.wait().map_err(Error::io("reaping sluice run"))?;
        Ok(at)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The report's batches now.
    pub fn batches(&self) -> Vec<Batch> {
        read_report(&self.report)
    }

    fn failed(&self, what: &str) -> Error {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        Error::Usage(format!(
            "{what}; the end of its log {}:\n{}",
            self.log.display(),
            tail.join("\n")
        ))
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_still_being_written_is_skipped_and_checkpoint_ms_is_read_when_present() {
        let dir = std::env::temp_dir().join(format!("sluice-child-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("r.jsonl");
        std::fs::write(
            &path,
            "{\"batch\":0,\"done_ms\":10,\"records_in\":5}\n{\"batch\":1,\"done_ms\":20,\"processing_ms\":2.5,\"checkpoint_ms\":1.5}\n{\"batch\":2,\"do",
        )
        .unwrap();
        let got = read_report(&path);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            got,
            vec![
                Batch {
                    id: 0,
                    done_ms: 10,
                    records_in: 5,
                    processing_ms: 0.0,
                    checkpoint_ms: None
                },
                Batch {
                    id: 1,
                    done_ms: 20,
                    records_in: 0,
                    processing_ms: 2.5,
                    checkpoint_ms: Some(1.5)
                },
            ]
        );
    }
}
