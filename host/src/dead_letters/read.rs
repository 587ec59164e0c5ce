//! Dead letters read back: a line parsed into a [`Letter`], a stream's files listed and read
//! ([`Store`]), and the markers that say which letters were replayed.

use std::collections::BTreeMap;

use base64::Engine;
use futures::TryStreamExt;
use object_store::path::Path as StorePath;
use object_store::{PutMode, PutOptions};
use serde_json::{Map, Value};

use super::{DeadLetterError, Result};
use crate::store::Location;

/// One dead letter, as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct Letter {
    /// Its file, relative to the stream's dead letters (`batch-0000000003.jsonl`, or
    /// `replay-000001/batch-0000000000.jsonl` for one that failed again in a replay).
    pub file: String,
    /// Its line there, from 1.
    pub line: usize,
    /// Its name among the replay markers: file, position and a hash of plugin and value, so
    /// it stays the same when a recomputed batch writes its letters again in another order.
    pub id: String,
    /// The batch it was dead-lettered in.
    pub batch: u64,
    /// The partition it was in.
    pub partition: u32,
    /// Its offset there.
    pub offset: u64,
    /// The index of the step that rejected it (`None`: not said, in letters written before
    /// sluice recorded it, or a letter of the source).
    pub step: Option<usize>,
    /// The plugin that rejected it (`None`: the source did).
    pub plugin: Option<String>,
    /// Why.
    pub reason: String,
    /// For a poison record, what the call did (`panicked`, `timed-out`, …).
    pub failure: Option<String>,
    /// The record's key, as written (text).
    pub key: Option<String>,
    /// The record's timestamp.
    pub timestamp: Option<i64>,
    /// The record's value, decoded (`None`: the letter holds no value, and cannot be replayed).
    pub value: Option<Vec<u8>>,
    /// The line as written, every field.
    pub fields: Map<String, Value>,
}

impl Letter {
    /// Parses line `line` of `file`; the message says what is missing or wrong.
    pub fn parse(file: &str, line: usize, text: &str) -> std::result::Result<Letter, String> {
        let fields: Map<String, Value> =
            serde_json::from_str(text).map_err(|e| format!("not a JSON object: {e}"))?;
        let uint = |name: &str| -> std::result::Result<u64, String> {
            fields
                .get(name)
                .and_then(Value::as_u64)
                .ok_or_else(|| format!("`{name}` is missing or not a whole number"))
        };
        let text_of = |name: &str| -> std::result::Result<Option<String>, String> {
            match fields.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(format!("`{name}` is not a string")),
            }
        };
        let value = match (text_of("value")?, text_of("value_base64")?) {
            (Some(v), _) => Some(v.into_bytes()),
            (None, Some(b)) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(b)
                    .map_err(|e| format!("`value_base64` is not base64: {e}"))?,
            ),
            (None, None) => None,
        };
        let partition = uint("partition")?;
        Ok(Letter {
            file: file.to_owned(),
            line,
            id: String::new(),
            batch: uint("batch")?,
            partition: u32::try_from(partition)
                .map_err(|_| format!("`partition` {partition} is too large"))?,
            offset: uint("offset")?,
            step: fields
                .get("step")
                .and_then(Value::as_u64)
                .map(|s| s as usize),
            plugin: text_of("plugin")?,
            reason: text_of("reason")?.ok_or("`reason` is missing")?,
            failure: text_of("failure")?,
            key: text_of("key")?,
            timestamp: fields.get("timestamp").and_then(Value::as_i64),
            value,
            fields,
        })
    }

    /// The step's name for filters and counts: its plugin, `sink` for a record a sink's
    /// format could not carry, or `source`.
    pub fn step_name(&self) -> &str {
        match &self.plugin {
            Some(p) => p,
            None if self.is_unwritable() => "sink",
            None => "source",
        }
    }

    /// Whether a sink refused it (its format cannot carry the record), after every step.
    pub fn is_unwritable(&self) -> bool {
        self.failure.as_deref() == Some("unwritable")
    }

    /// Its reason, for counts: a poison record's `failure` (`panicked`, …), else the reason
    /// (shortened past 80 characters).
    pub fn reason_class(&self) -> String {
        match &self.failure {
            Some(f) => f.clone(),
            None if self.reason.chars().count() > 80 => {
                let short: String = self.reason.chars().take(79).collect();
                format!("{short}…")
            }
            None => self.reason.clone(),
        }
    }
}

/// One dead-letter file and its letters.
#[derive(Debug, Clone)]
pub struct LetterFile {
    /// Its name, relative to the stream's dead letters.
    pub name: String,
    /// The batch its name says (`None`: a name not of the form `batch-<id>.jsonl`).
    pub batch: Option<u64>,
    /// Its letters, in order.
    pub letters: Vec<Letter>,
}

/// Parses a whole file (`name`, shown as `shown` in messages); blank lines are skipped.
pub fn parse_file(name: &str, shown: &str, text: &str) -> Result<LetterFile> {
    let mut letters: Vec<Letter> = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut letter =
            Letter::parse(name, i + 1, line).map_err(|message| DeadLetterError::Malformed {
                file: shown.to_owned(),
                line: i + 1,
                message,
            })?;
        let base = letter_id(&letter);
        let n = seen.entry(base.clone()).or_default();
        letter.id = if *n == 0 { base } else { format!("{base}-{n}") };
        *n += 1;
        letters.push(letter);
    }
    let stem = name.rsplit('/').next().unwrap_or(name);
    let batch = stem
        .strip_prefix("batch-")
        .and_then(|s| s.strip_suffix(".jsonl"))
        .and_then(|s| s.parse().ok());
    Ok(LetterFile {
        name: name.to_owned(),
        batch,
        letters,
    })
}

/// `<file without .jsonl>/p<partition>-o<offset>-<fnv-1a of plugin and value>`.
fn letter_id(l: &Letter) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let plugin = l.plugin.as_deref().unwrap_or("").as_bytes();
    let value = l.value.as_deref().unwrap_or(&[]);
    for &b in plugin.iter().chain([0u8].iter()).chain(value) {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    let stem = l.file.strip_suffix(".jsonl").unwrap_or(&l.file);
    format!("{stem}/p{}-o{}-{h:016x}", l.partition, l.offset)
}

/// A stream's dead letters on their store.
#[derive(Debug, Clone)]
pub struct Store {
    location: Location,
    stream: String,
}

/// What a [`Store::claim`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The letter is this replay's now.
    Claimed,
    /// Another replay took it first (its name).
    Taken(String),
}

impl Store {
    /// The dead letters of `stream` under `location`.
    pub fn new(location: Location, stream: &str) -> Store {
        Store {
            location,
            stream: stream.to_owned(),
        }
    }

    /// Where they are, for messages: `<location>/<stream>`.
    pub fn display(&self) -> String {
        format!("{}/{}", self.location, self.stream)
    }

    /// The stream.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    fn path(&self, rel: &str) -> StorePath {
        self.location.child(&format!("{}/{rel}", self.stream))
    }

    /// Object `rel` of the stream's, named for messages.
    fn shown(&self, rel: &str) -> String {
        format!("{}/{}/{rel}", self.location, self.stream)
    }

    fn err(&self, rel: &str, e: impl std::fmt::Display) -> DeadLetterError {
        DeadLetterError::Store {
            location: self.shown(rel),
            message: e.to_string(),
        }
    }

    /// The names (relative to the stream) of the objects under `rel`, in order.
    async fn names_under(&self, rel: &str) -> Result<Vec<String>> {
        let base = self.path("");
        let prefix = self.path(rel);
        let objects: Vec<_> = self
            .location
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| self.err(rel, e))?;
        let mut names: Vec<String> = objects
            .iter()
            .filter_map(|o| {
                let parts: Vec<String> = o
                    .location
                    .prefix_match(&base)?
                    .map(|p| p.as_ref().to_owned())
                    .collect();
                Some(parts.join("/"))
            })
            .collect();
        names.sort();
        Ok(names)
    }

    async fn read_text(&self, rel: &str) -> Result<String> {
        let path = self.path(rel);
        let bytes = async { self.location.store.get(&path).await?.bytes().await }
            .await
            .map_err(|e| self.err(rel, e))?;
        String::from_utf8(bytes.to_vec()).map_err(|e| DeadLetterError::Malformed {
            file: self.shown(rel),
            line: 0,
            message: format!("not UTF-8 text: {e}"),
        })
    }

    /// Every dead-letter file of the stream (its own batches', then replays'), read.
    pub async fn files(&self) -> Result<Vec<LetterFile>> {
        let mut files = Vec::new();
        for name in self.names_under("").await? {
            let last = name.rsplit('/').next().unwrap_or(&name);
            if name.split('/').any(|p| p.starts_with('_'))
                || !last.starts_with("batch-")
                || !last.ends_with(".jsonl")
            {
                continue;
            }
            let text = self.read_text(&name).await?;
            files.push(parse_file(&name, &self.shown(&name), &text)?);
        }
        Ok(files)
    }

    /// The marker of `letter`, relative to the stream.
    fn marker(letter: &Letter) -> String {
        format!("_replayed/{}.json", letter.id)
    }

    /// Which letters were replayed: letter id → the replay that took it.
    pub async fn replayed(&self) -> Result<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        for name in self.names_under("_replayed").await? {
            let Some(id) = name
                .strip_prefix("_replayed/")
                .and_then(|n| n.strip_suffix(".json"))
            else {
                continue;
            };
            let by = self.marker_owner(&name).await?;
            out.insert(id.to_owned(), by);
        }
        Ok(out)
    }

    async fn marker_owner(&self, rel: &str) -> Result<String> {
        let text = self.read_text(rel).await?;
        Ok(serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["replay"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "an earlier replay".to_owned()))
    }

    /// Marks `letter` as taken by `replay`: created if absent, so of two replays one wins; with
    /// `again`, whatever a marker says.
    pub async fn claim(&self, letter: &Letter, replay: &str, again: bool) -> Result<Claim> {
        let rel = Self::marker(letter);
        let path = self.path(&rel);
        let body = serde_json::json!({
            "replay": replay,
            "file": letter.file,
            "line": letter.line,
            "time_ms": crate::clock::now_ms(),
        });
        let mode = if again {
            PutMode::Overwrite
        } else {
            PutMode::Create
        };
        let opts = PutOptions {
            mode,
            ..Default::default()
        };
        let put = self.location.store.put_opts(
            &path,
            serde_json::to_vec(&body).unwrap_or_default().into(),
            opts,
        );
        match put.await {
            Ok(_) => Ok(Claim::Claimed),
            Err(object_store::Error::AlreadyExists { .. }) => {
                Ok(Claim::Taken(self.marker_owner(&rel).await?))
            }
            Err(e) => Err(self.err(&rel, e)),
        }
    }

    /// Takes a claim back (its replay failed before the letter was committed).
    pub async fn release(&self, letter: &Letter) {
        let rel = Self::marker(letter);
        if let Err(e) = self.location.store.delete(&self.path(&rel)).await {
            tracing::warn!(marker = %self.shown(&rel), error = %e, "A replay marker could not be removed; the letter counts as replayed until it is deleted (or use --again).");
        }
    }

    /// Starts a replay: creates `_replays/replay-<n>.json` holding `record`, with `n` one
    /// past the highest there (create-if-absent, so two replays never get one number), and
    /// returns the replay's name, `replay-<n>`.
    pub async fn begin(&self, record: &Value) -> Result<String> {
        let mut n = self
            .names_under("_replays")
            .await?
            .iter()
            .filter_map(|name| {
                name.strip_prefix("_replays/replay-")?
                    .strip_suffix(".json")?
                    .parse::<u32>()
                    .ok()
            })
            .max()
            .unwrap_or(0);
        loop {
            n += 1;
            let name = format!("replay-{n:06}");
            let rel = format!("_replays/{name}.json");
            let path = self.path(&rel);
            let mut record = record.clone();
            record["replay"] = name.clone().into();
            let opts = PutOptions {
                mode: PutMode::Create,
                ..Default::default()
            };
            let body = serde_json::to_vec_pretty(&record).unwrap_or_default();
            match self.location.store.put_opts(&path, body.into(), opts).await {
                Ok(_) => return Ok(name),
                Err(object_store::Error::AlreadyExists { .. }) => continue,
                Err(e) => return Err(self.err(&rel, e)),
            }
        }
    }
}
