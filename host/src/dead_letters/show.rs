//! `sluice dead-letters list | show`: the dead letters, readable by a person (or `--json`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde_json::{Value, json};

use super::read::{Letter, LetterFile};
use super::{Filter, io_runtime, locate};
use crate::error::Result;

/// Letters counted by step and reason.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts(pub BTreeMap<(String, String), usize>);

impl Counts {
    /// Counts `letters`.
    pub fn of<'a>(letters: impl IntoIterator<Item = &'a Letter>) -> Counts {
        let mut c = Counts::default();
        for l in letters {
            *c.0.entry((l.step_name().to_owned(), l.reason_class()))
                .or_default() += 1;
        }
        c
    }

    /// `step: n × reason; …`.
    pub fn text(&self) -> String {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|((step, reason), n)| format!("{step}: {n} × {reason}"))
            .collect();
        parts.join("; ")
    }

    fn json(&self) -> Value {
        let v: Vec<Value> = self
            .0
            .iter()
            .map(|((step, reason), n)| json!({ "step": step, "reason": reason, "letters": n }))
            .collect();
        Value::Array(v)
    }
}

/// The stream's files and which letters were replayed (empty when there are none).
fn read_all(pipeline: &Path) -> Result<(String, Vec<LetterFile>, BTreeMap<String, String>)> {
    let Some(store) = locate(pipeline)? else {
        return Ok(("(none yet)".into(), Vec::new(), BTreeMap::new()));
    };
    let rt = io_runtime()?;
    let (files, replayed) = rt.block_on(async {
        Ok::<_, super::DeadLetterError>((store.files().await?, store.replayed().await?))
    })?;
    Ok((store.display(), files, replayed))
}

/// `sluice dead-letters list`: one line per file, then the total.
pub fn list(pipeline: &Path, json: bool) -> Result<String> {
    let (at, files, replayed) = read_all(pipeline)?;
    let was_replayed = |f: &LetterFile| {
        f.letters
            .iter()
            .filter(|l| replayed.contains_key(&l.id))
            .count()
    };
    let all = || files.iter().flat_map(|f| &f.letters);
    let total = all().count();
    let total_replayed: usize = files.iter().map(was_replayed).sum();
    if json {
        let rows: Vec<Value> = files
            .iter()
            .map(|f| {
                json!({
                    "file": f.name,
                    "batch": f.batch,
                    "letters": f.letters.len(),
                    "replayed": was_replayed(f),
                    "counts": Counts::of(&f.letters).json(),
                })
            })
            .collect();
        let v = json!({
            "location": at,
            "files": rows,
            "total": { "letters": total, "replayed": total_replayed, "counts": Counts::of(all()).json() },
        });
        return Ok(format!(
            "{}\n",
            serde_json::to_string_pretty(&v).unwrap_or_default()
        ));
    }
    let mut out = format!(
        "dead letters {at}: {total} letters in {} files, {total_replayed} replayed\n",
        files.len()
    );
    if files.is_empty() {
        return Ok(out);
    }
    let width = files.iter().map(|f| f.name.len()).max().unwrap_or(4).max(4);
    let _ = writeln!(
        out,
        "{:<width$}  {:>10}  {:>7}  {:>8}  by step and reason",
        "file", "batch", "letters", "replayed"
    );
    for f in &files {
        let batch = f.batch.map_or("-".to_owned(), |b| b.to_string());
        let _ = writeln!(
            out,
            "{:<width$}  {batch:>10}  {:>7}  {:>8}  {}",
            f.name,
            f.letters.len(),
            was_replayed(f),
            Counts::of(&f.letters).text()
        );
    }
    let _ = writeln!(out, "total: {total} letters; {}", Counts::of(all()).text());
    Ok(out)
}

/// `sluice dead-letters show`: the chosen letters whole.
pub fn show(pipeline: &Path, filter: &Filter, json: bool) -> Result<String> {
    let (at, files, replayed) = read_all(pipeline)?;
    let chosen = filter.select(&files);
    if json {
        let v: Vec<Value> = chosen
            .iter()
            .map(|l| {
                let mut obj = l.fields.clone();
                obj.insert("file".into(), l.file.clone().into());
                obj.insert("line".into(), l.line.into());
                obj.insert("replayed_by".into(), replayed.get(&l.id).cloned().into());
                Value::Object(obj)
            })
            .collect();
        return Ok(format!(
            "{}\n",
            serde_json::to_string_pretty(&v).unwrap_or_default()
        ));
    }
    let mut out = format!("dead letters {at}: {} chosen\n", chosen.len());
    for l in chosen {
        out.push('\n');
        out.push_str(&letter_text(l, replayed.get(&l.id).map(String::as_str)));
    }
    Ok(out)
}

/// Values past this many bytes are cut in the text view (`--json` has them whole).
const SHOWN_BYTES: usize = 4096;

/// One letter for a person: where it was, what rejected it and why, and its value.
pub fn letter_text(l: &Letter, replayed_by: Option<&str>) -> String {
    let mut out = format!(
        "{} line {}: batch {}, partition {}, offset {}\n",
        l.file, l.line, l.batch, l.partition, l.offset
    );
    let step = l.step.map_or("?".to_owned(), |s| s.to_string());
    let digest = l
        .fields
        .get("digest")
        .and_then(Value::as_str)
        .unwrap_or("-");
    let _ = writeln!(
        out,
        "  step {step} ({}), sha256 {}",
        l.step_name(),
        &digest[..digest.len().min(16)]
    );
    if let Some(f) = &l.failure {
        let _ = writeln!(out, "  failure: {f}");
    }
    let _ = writeln!(out, "  reason: {}", l.reason);
    let key = l
        .key
        .as_deref()
        .map_or("-".to_owned(), |k| format!("{k:?}"));
    let ts = l.timestamp.map_or("-".to_owned(), |t| t.to_string());
    let _ = writeln!(out, "  key: {key}, timestamp: {ts}");
    let _ = writeln!(out, "  replayed: {}", replayed_by.unwrap_or("no"));
    for (name, v) in &l.fields {
        const KNOWN: &[&str] = &[
            "stream",
            "batch",
            "partition",
            "offset",
            "step",
            "plugin",
            "digest",
            "reason",
            "failure",
            "key",
            "timestamp",
            "value",
            "value_base64",
        ];
        if !KNOWN.contains(&name.as_str()) {
            let _ = writeln!(out, "  {name}: {v}");
        }
    }
    out.push_str(&value_text(l.value.as_deref()));
    out
}

/// The value: as a quoted string when it is UTF-8 (escapes for control characters), else its
/// bytes escaped (`\xff`) and in base64; cut past [`SHOWN_BYTES`].
pub fn value_text(value: Option<&[u8]>) -> String {
    let Some(v) = value else {
        return "  value: none (the letter holds no value; it cannot be replayed)\n".into();
    };
    let cut = &v[..v.len().min(SHOWN_BYTES)];
    let more = if cut.len() < v.len() {
        format!(" … ({} bytes in all; --json has it whole)", v.len())
    } else {
        String::new()
    };
    match std::str::from_utf8(v) {
        Ok(text) => {
            let shown: String = text.chars().take(SHOWN_BYTES).collect();
            format!("  value ({} bytes, text): {shown:?}{more}\n", v.len())
        }
        Err(_) => {
            use base64::Engine;
            let b64 = base64::engine::general_purpose::STANDARD.encode(cut);
            format!(
                "  value ({} bytes, not UTF-8): \"{}\"{more}\n  value_base64: {b64}\n",
                v.len(),
                cut.escape_ascii()
            )
        }
    }
}
