//! `sluice checkpoint list | inspect` and `sluice plugin history`: the checkpoint log,
//! readable by a person (or `--json`).

use std::fmt::Write as _;
use std::path::Path;

use super::{CheckpointLog, Entry};
use crate::batch::position::Position;
use crate::config::PipelineFile;
use crate::error::{Error, Result};
use crate::store::Location;

/// What `sluice checkpoint` shows.
#[derive(Debug, Clone, Copy)]
pub enum Show {
    /// One line per entry.
    List,
    /// One entry whole: batch N, or the newest.
    Inspect(Option<u64>),
    /// The plugin versions' changes from batch to batch (`sluice plugin history`).
    History,
}

pub use super::history::VersionChange;

/// Every change of plugin version across `entries` (in batch order); damaged entries are
/// passed over.
pub fn version_changes(entries: &[super::Result<Entry>]) -> Vec<VersionChange> {
    let mut changes = Vec::new();
    let mut before: Option<&Entry> = None;
    for e in entries.iter().filter_map(|e| e.as_ref().ok()) {
        if let Some(b) = before {
            changes.extend(super::history::changes(&b.plugins, e));
        }
        before = Some(e);
    }
    changes
}

/// The swaps (changes of version), rollbacks and verdicts of `entries`, and those kept apart
/// from them (`kept`, see [`super::history`]), in batch order and each once, as `sluice plugin
/// history --json` prints them.
pub fn happenings(
    entries: &[super::Result<Entry>],
    kept: Vec<serde_json::Value>,
) -> Vec<serde_json::Value> {
    let mut out = kept;
    let mut before: Option<&Entry> = None;
    for e in entries.iter().filter_map(|e| e.as_ref().ok()) {
        out.extend(super::history::of_entry(before.map(|b| &b.plugins), e));
        before = Some(e);
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|v| seen.insert(v.to_string()));
    // Stable: at one batch, the swap comes before what happened to it.
    out.sort_by_key(|v| v["batch"].as_u64());
    out
}

/// Every entry of `log`, in batch order (a damaged one as its error).
fn read_entries(
    rt: &tokio::runtime::Runtime,
    log: &CheckpointLog,
) -> Result<Vec<super::Result<Entry>>> {
    rt.block_on(async {
        let mut out = Vec::new();
        for b in log.list().await? {
            out.push(log.read(b).await);
        }
        Ok::<_, super::CheckpointError>(out)
    })
    .map_err(|e| Error::Usage(e.to_string()))
}

/// The changes of plugin version recorded in the checkpoint log of the pipeline file at
/// `pipeline` (what `sluice plugin history` prints).
pub fn history(rt: &tokio::runtime::Runtime, pipeline: &Path) -> Result<Vec<VersionChange>> {
    Ok(version_changes(&read_entries(rt, &log_of(pipeline)?)?))
}

/// Runs `sluice checkpoint list | inspect` on the pipeline file at `pipeline`, printing to
/// stdout (JSON with `json`).
pub fn run(pipeline: &Path, show: Show, json: bool) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::io("starting the async runtime"))?;
    let read_all = |log: &CheckpointLog| read_entries(&rt, log);
    match show {
        Show::History => {
            let log = log_of(pipeline)?;
            let entries = read_all(&log)?;
            let all = happenings(&entries, rt.block_on(super::history::kept(&log)));
            if json {
                println!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
            } else {
                print!("{}", history_text(&log, &all));
            }
            Ok(())
        }
        Show::List => {
            let log = log_of(pipeline)?;
            let entries = read_all(&log)?;
            if json {
                let ok: Vec<&Entry> = entries.iter().filter_map(|e| e.as_ref().ok()).collect();
                println!("{}", serde_json::to_string_pretty(&ok).unwrap_or_default());
            } else {
                print!("{}", list_text(&log, &entries));
            }
            Ok(())
        }
        Show::Inspect(batch) => {
            let log = log_of(pipeline)?;
            let entry = rt
                .block_on(async {
                    let b = match batch {
                        Some(b) => b,
                        None => match log.list().await?.last() {
                            Some(&b) => b,
                            None => {
                                return Err(super::CheckpointError::Store {
                                    location: log.location().to_string(),
                                    message: "the checkpoint log is empty".into(),
                                });
                            }
                        },
                    };
                    log.read(b).await
                })
                .map_err(|e| Error::Usage(e.to_string()))?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&entry).unwrap_or_default()
                );
            } else {
                print!("{}", inspect_text(&log, &entry));
            }
            Ok(())
        }
    }
}

/// The checkpoint log of the pipeline file at `path` (its `[checkpoint] path`, resolved as a
/// run resolves it).
pub(crate) fn log_of(path: &Path) -> Result<CheckpointLog> {
    let file = PipelineFile::load(path)?;
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let base = std::fs::canonicalize(base).unwrap_or_else(|_| base.to_owned());
    let spec = file
        .checkpoint
        .as_ref()
        .map_or("checkpoints", |c| c.path.as_str());
    let at = Location::resolve(spec, "checkpoint.path", &base, false).map_err(Error::Usage)?;
    Ok(CheckpointLog::new(at))
}

fn list_text(log: &CheckpointLog, entries: &[super::Result<Entry>]) -> String {
    let mut out = format!(
        "checkpoint log {}: {} entries\n",
        log.location(),
        entries.len()
    );
    let _ = writeln!(
        out,
        "{:>10}  {:>24}  {:>12}  plugins",
        "batch", "batch time (UTC)", "records"
    );
    for e in entries {
        match e {
            Ok(e) => {
                let records: u64 = e.partitions.iter().map(|p| p.end - p.start).sum();
                let plugins: Vec<String> = e
                    .plugins
                    .iter()
                    .map(|(n, d)| format!("{n}@{}", &d[..12.min(d.len())]))
                    .collect();
                let _ = writeln!(
                    out,
                    "{:>10}  {:>24}  {:>12}  {}",
                    e.batch,
                    time_text(e.batch_time_ms),
                    records,
                    plugins.join(" ")
                );
            }
            Err(err) => {
                let _ = writeln!(out, "  damaged: {err}");
            }
        }
    }
    out
}

fn history_text(log: &CheckpointLog, all: &[serde_json::Value]) -> String {
    let swaps = all.iter().filter(|v| v["event"] == "swap").count();
    let mut out = format!(
        "checkpoint log {}: {swaps} plugin version changes, {} verdicts\n",
        log.location(),
        all.len() - swaps
    );
    for v in all {
        let _ = writeln!(
            out,
            "batch {:>8}  {}  {}",
            v["batch"].as_u64().unwrap_or_default(),
            time_text(v["batch_time_ms"].as_i64().unwrap_or_default()),
            happening_text(v)
        );
    }
    out
}

fn happening_text(v: &serde_json::Value) -> String {
    let text = |k: &str| v[k].as_str().unwrap_or("(none)");
    let short = |k: &str| {
        let d = text(k);
        d[..12.min(d.len())].to_owned()
    };
    let (plugin, n) = (text("plugin"), |k: &str| v[k].as_u64().unwrap_or_default());
    match v["event"].as_str().unwrap_or_default() {
        "swap" => format!(
            "swap         {plugin}  {} -> {}",
            short("from"),
            short("to")
        ),
        "rolled-back" => format!(
            "rolled back  {plugin}  {} -> {} (quarantined): {}",
            short("digest"),
            short("restored"),
            text("error")
        ),
        "passed" => format!(
            "passed       {plugin}  {} ran its {} trial batches without failing",
            short("digest"),
            n("batches")
        ),
        "shadowed" => format!(
            "shadowed     {plugin}  {} beside {}: {} of {} batches differed{}",
            short("digest"),
            short("live"),
            n("differing"),
            n("batches"),
            v["failed"]
                .as_str()
                .map(|f| format!("; the candidate failed: {f}"))
                .unwrap_or_default()
        ),
        other => format!("{other} {v}"),
    }
}

fn inspect_text(log: &CheckpointLog, e: &Entry) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "entry     {}", log.describe(e.batch));
    let _ = writeln!(out, "batch     {} (format version {})", e.batch, e.version);
    let _ = writeln!(
        out,
        "time      {} (written {})",
        time_text(e.batch_time_ms),
        time_text(e.written_ms)
    );
    for (n, d) in &e.plugins {
        let _ = writeln!(out, "plugin    {n} sha256 {d}");
    }
    if let Some(w) = &e.wal_keep_from {
        let _ = writeln!(out, "wal       keeps, per partition, offsets from {w:?}");
    }
    for (p, pe) in e.partitions.iter().enumerate() {
        let _ = writeln!(
            out,
            "partition {p}: offsets {}..{} ({} records)",
            pe.start,
            pe.end,
            pe.end - pe.start
        );
        for r in &pe.ranges {
            let _ = writeln!(out, "    read  {}", position_text(r));
        }
        if let Some(l) = &pe.last {
            let _ = writeln!(out, "    after {}", position_text(l));
        }
    }
    if let Some(seen) = &e.files_seen {
        let _ = writeln!(out, "files read so far: {}", seen.len());
    }
    if let Some(ids) = &e.seen_ids {
        // Base64 of 16-byte digests: 4 characters per 3 bytes.
        let n: usize = ids.groups.iter().map(|g| g.ids.len() / 4 * 3 / 16).sum();
        let what = if ids.full {
            "the whole window"
        } else {
            "added by this batch"
        };
        let _ = writeln!(out, "message ids: {n} ({what})");
    }
    out
}

fn position_text(p: &Position) -> String {
    match p {
        Position::File {
            file,
            from,
            to,
            done,
        } => format!(
            "file {file} bytes {from}..{to}{}",
            if *done { " (to its end)" } else { "" }
        ),
        Position::EventHubs(e) => format!(
            "event hubs offset {} sequence number {}",
            e.offset, e.sequence_number
        ),
    }
}

fn time_text(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::checkpoint::VERSION;

    fn entry(batch: u64, plugins: &[(&str, &str)]) -> Entry {
        Entry {
            version: VERSION,
            batch,
            batch_time_ms: 1000 * batch as i64,
            written_ms: 0,
            partitions: vec![],
            wal_keep_from: None,
            plugins: plugins
                .iter()
                .map(|(n, d)| ((*n).to_owned(), (*d).to_owned()))
                .collect::<BTreeMap<_, _>>(),
            state: vec![],
            files_seen: None,
            seen_ids: None,
            params: BTreeMap::new(),
            events: vec![],
        }
    }

    #[test]
    fn each_change_of_version_is_listed_at_the_first_batch_that_ran_it() {
        let entries = vec![
            Ok(entry(0, &[("tag", "a"), ("sink", "s")])),
            Ok(entry(1, &[("tag", "a"), ("sink", "s")])),
            Ok(entry(2, &[("tag", "b"), ("sink", "s")])),
            Ok(entry(3, &[("tag", "a")])),
        ];
        let changes = version_changes(&entries);
        let seen: Vec<(u64, &str, Option<&str>, Option<&str>)> = changes
            .iter()
            .map(|c| {
                (
                    c.batch,
                    c.plugin.as_str(),
                    c.from.as_deref(),
                    c.to.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                (2, "tag", Some("a"), Some("b")),
                (3, "sink", Some("s"), None),
                (3, "tag", Some("b"), Some("a")),
            ]
        );
    }
}
