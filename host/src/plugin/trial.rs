//! `sluice plugin test FILE --text … | --input FILE`: a plugin run on a few records, as a
//! pipeline would call it (the same loader, limits and classified errors), without a pipeline.
//!
//! A transformation gets the records as one batch (partition 0, batch 0); its output records
//! go to standard output, one value per line, and its rejects to standard error, one per line
//! with the record's index, value and reason. A sink gets them in `write`, then `commit`.
//! A failed call (a trap, an error the plugin returned) is an error naming the plugin, its
//! digest and what went wrong; the command then exits non-zero.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use crate::batch::RecordBatch;
use crate::error::{Error, Result};

use super::limits::Grants;
use super::{CallContext, PluginKind, PluginRuntime};

/// What one `plugin test` run made, as printed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Trial {
    /// For standard output: the output records, one value a line.
    pub stdout: String,
    /// For standard error: rejects, and a summary line.
    pub stderr: String,
}

/// `key=value` into a pair; the message names the argument.
pub fn parse_param(s: &str) -> std::result::Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?}: give KEY=VALUE, e.g. pattern=error")),
    }
}

/// The records of `--text` (each one record) and `--input` (one record per line, without its
/// `\n` or `\r\n`), in that order.
pub fn records(texts: &[String], input: Option<&Path>) -> Result<Vec<Vec<u8>>> {
    let mut out: Vec<Vec<u8>> = texts.iter().map(|t| t.as_bytes().to_vec()).collect();
    if let Some(file) = input {
        let bytes =
            std::fs::read(file).map_err(Error::io(format!("reading {}", file.display())))?;
        let mut lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
        if lines.last().is_some_and(|l| l.is_empty()) {
            lines.pop();
        }
        out.extend(
            lines
                .into_iter()
                .map(|l| l.strip_suffix(b"\r").unwrap_or(l).to_vec()),
        );
    }
    Ok(out)
}

/// Runs the plugin in `file` on `records` with `params`; `Err` when a call failed (the
/// message names the plugin and its digest) or the plugin is of a kind this does not run.
pub fn run(
    runtime: &PluginRuntime,
    file: &Path,
    records: &[Vec<u8>],
    params: &BTreeMap<String, String>,
) -> Result<Trial> {
    let plugin = runtime.load_file(file, &Grants::default())?;
    let input = RecordBatch::from_values(records.iter().map(Vec::as_slice));
    let ctx = CallContext {
        stream: "test".to_owned(),
        partition: 0,
        batch_id: 0,
        batch_time_ms: 0,
        part: 0,
    };
    let short = &plugin.info().digest[..12];
    let mut trial = Trial::default();
    match plugin.kind() {
        PluginKind::Transformer => {
            let stage = plugin.transformer(params).map_err(Error::Usage)?;
            let out = stage.transform(&ctx, &input)?;
            for i in 0..out.batch.len() {
                trial.stdout.push_str(&shown(out.batch.value(i)));
                trial.stdout.push('\n');
            }
            for (index, reason) in &out.rejected {
                let value = records.get(*index as usize).map_or(&[][..], Vec::as_slice);
                trial.stderr.push_str(&format!(
                    "reject record {index} {:?}: {reason}\n",
                    shown(value)
                ));
            }
            trial.stderr.push_str(&format!(
                "plugin `{}` (sha256 {short}): {} records in, {} out, {} rejected\n",
                plugin.name(),
                input.len(),
                out.batch.len(),
                out.rejected.len()
            ));
        }
        PluginKind::Sink => {
            let stage = plugin.sink(params).map_err(Error::Usage)?;
            stage.write(&ctx, &input)?;
            stage.commit(&ctx.stream, ctx.batch_id)?;
            trial.stderr.push_str(&format!(
                "plugin `{}` (sha256 {short}): wrote {} records to partition 0 of batch 0 of stream `test`, committed\n",
                plugin.name(),
                input.len()
            ));
        }
        kind => {
            return Err(Error::Usage(format!(
                "{}: `plugin test` runs transformations and sinks; this plugin's world is `{kind}`: try it in a pipeline",
                file.display()
            )));
        }
    }
    Ok(trial)
}

/// A value as one line: UTF-8 as it is, with newlines and other bytes escaped.
fn shown(value: &[u8]) -> String {
    match std::str::from_utf8(value) {
        Ok(s) if !s.contains(['\n', '\r']) => s.to_owned(),
        _ => value.escape_ascii().to_string(),
    }
}

/// Prints a trial: its records to standard output, the rest to standard error.
pub fn print(trial: &Trial) {
    print!("{}", trial.stdout);
    let _ = std::io::stdout().flush();
    eprint!("{}", trial.stderr);
}
