//! The lookup join (`builtin = "lookup"`): Spark's stream-static join, Flink's lookup join.
//! Each record is enriched with the row of a table whose key it has; the table is a file (CSV
//! or JSON lines, local or in a store) held in memory as a hash map.
//!
//! - [`config`]: the step's keys, checked;
//! - [`table`]: one version of the table, read from CSV or JSON lines;
//! - [`scan`]: a record's JSON object read without building it;
//! - `watch`: where the file is and how a change to it is seen.
//!
//! The table is read when the plan is built (a missing or malformed table refuses the
//! pipeline) and then looked at every `reload-interval` by a thread of its own, off the batch
//! path; a version that reads well replaces the current one, and a batch pins the current one
//! when it opens ([`Lookup::table`]), so each batch sees one version throughout. A version
//! that does not read well is reported once and the previous one stays.
//!
//! The step is narrow: output record `i` comes from input record `i` ([`Lookup::join`]
//! returns the origins when an inner join drops some), so it runs on each block as it is cut.

pub mod config;
pub mod scan;
pub mod table;
mod watch;

use std::borrow::Cow;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use base64::Engine as _;
use tokio::runtime::Handle;

pub use config::{JoinKind, LookupConfig, TableFormat};
pub use table::Table;
use watch::{TableFile, Watch};

use crate::batch::{BytesColumn, RecordBatch};

/// A lookup table that cannot be had or read.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// The file is not there or not a file: the user's to fix.
    #[error("lookup table {table}: cannot be read: {reason}")]
    Missing {
        /// The file, resolved.
        table: String,
        /// Why.
        reason: String,
    },
    /// The store holding it did not answer; it may later.
    #[error("lookup table {table}: cannot be reached: {reason}")]
    Unreachable {
        /// The file's URL.
        table: String,
        /// The store's error.
        reason: String,
    },
    /// Its contents are wrong: the line and what is wrong with it.
    #[error("lookup table {table}: {problem}")]
    Malformed {
        /// The file, resolved.
        table: String,
        /// `line N: …`.
        problem: String,
    },
}

impl LookupError {
    /// Whether trying again later can help (a store that did not answer).
    pub fn retryable(&self) -> bool {
        matches!(self, LookupError::Unreachable { .. })
    }
}

/// A lookup step, running: its config, the current table, and the thread that reloads it.
pub struct Lookup {
    config: LookupConfig,
    /// The table's file, as messages name it.
    shown: String,
    /// `"<into>":`, written once.
    member: Box<[u8]>,
    current: Arc<Mutex<Arc<Table>>>,
    stop: Arc<Stop>,
}

impl std::fmt::Debug for Lookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Lookup({})", self.shown)
    }
}

impl Drop for Lookup {
    fn drop(&mut self) {
        self.stop.stop();
    }
}

impl Lookup {
    /// Reads the table of `config` (relative to `base`; a store through `handle`, which must
    /// not be the runtime this is called on) and starts looking at it every
    /// `reload-interval`. Called when the plan is built.
    pub fn start(
        config: &LookupConfig,
        base: &Path,
        handle: &Handle,
    ) -> Result<Lookup, LookupError> {
        let (file, shown) = TableFile::resolve(&config.table, base, handle).map_err(|reason| {
            LookupError::Missing {
                table: config.table.clone(),
                reason,
            }
        })?;
        let mut watch = Watch::new(file, shown.clone(), config.format, config.table_key.clone());
        let table = watch.load()?;
        loaded(&shown, &table, "The lookup table is loaded.");
        let current = Arc::new(Mutex::new(Arc::new(table)));
        let stop = Arc::new(Stop::default());
        spawn_reloader(watch, current.clone(), stop.clone(), config.reload_interval);
        let mut member = serde_json::to_vec(&config.into).unwrap_or_default();
        member.push(b':');
        Ok(Lookup {
            config: config.clone(),
            shown,
            member: member.into(),
            current,
            stop,
        })
    }

    /// The table's file, resolved.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// The current version of the table; a batch takes it when it opens and keeps it.
    pub fn table(&self) -> Arc<Table> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Joins `input` with `table`: the output records, and for each the index of the input
    /// record it came from; empty origins when every record was output (a map). Keys,
    /// timestamps and headers go with their record.
    pub fn join(&self, table: &Table, input: &RecordBatch) -> (RecordBatch, Vec<u32>) {
        let n = input.len();
        let bytes = input.values.data.len() + n * (self.member.len() + table.mean_row() + 16);
        let mut values = BytesColumn::with_capacity(n, bytes);
        let mut kept: Vec<u32> = Vec::new();
        for i in 0..n {
            let start = values.data.len();
            if self.enrich(table, input.key(i), input.value(i), values.data.to_mut()) {
                values.ends.push(values.data.len() as u32);
                kept.push(i as u32);
            } else {
                values.data.to_mut().truncate(start);
            }
        }
        if kept.len() == n {
            let out = RecordBatch {
                values,
                keys: input.keys.clone(),
                timestamps: input.timestamps.clone(),
                headers: input.headers.clone(),
            };
            return (out, Vec::new());
        }
        // The kept records' keys, timestamps and headers, with empty values (no second copy
        // of the values), then the joined values in their place.
        let mut out = RecordBatch::default();
        for &i in &kept {
            let i = i as usize;
            if input.headers.is_some() {
                out.push_with_headers(input.key(i), b"", input.timestamp(i), &[]);
                for (name, value) in input.headers_of(i) {
                    out.push_header(name, value);
                }
            } else {
                out.push(input.key(i), b"", input.timestamp(i));
            }
        }
        out.values = values;
        (out, kept)
    }

    /// Writes the enriched value of one record to `out`; false when an inner join drops it.
    fn enrich(&self, table: &Table, key: Option<&[u8]>, value: &[u8], out: &mut Vec<u8>) -> bool {
        let c = &self.config;
        let mut scanned = scan::scan(value, c.key_field.as_deref(), Some(&c.into)).ok();
        let join_key: Option<Cow<[u8]>> = match &c.key_field {
            None => key.map(Cow::Borrowed),
            Some(_) => scanned.as_mut().and_then(|s| s.key.take()),
        };
        let row = join_key.as_deref().and_then(|k| table.get(k));
        if row.is_none() && c.join == JoinKind::Inner {
            return false;
        }
        let row = row.unwrap_or(b"null");
        match scanned {
            Some(s) if !s.has_into => {
                // The object without its closing brace, then the new member.
                let object = value.trim_ascii_end();
                out.extend_from_slice(&object[..object.len() - 1]);
                if !s.empty {
                    out.push(b',');
                }
            }
            Some(_) => return replace_member(value, &c.into, row, out),
            None => {
                match std::str::from_utf8(value) {
                    Ok(text) => {
                        out.extend_from_slice(b"{\"value\":");
                        let _ = serde_json::to_writer(&mut *out, text);
                    }
                    Err(_) => {
                        out.extend_from_slice(b"{\"value_base64\":\"");
                        let encoded = base64::engine::general_purpose::STANDARD.encode(value);
                        out.extend_from_slice(encoded.as_bytes());
                        out.push(b'"');
                    }
                }
                out.push(b',');
            }
        }
        out.extend_from_slice(&self.member);
        out.extend_from_slice(row);
        out.push(b'}');
        true
    }
}

/// A record whose object already has member `into`: it is replaced by the row (the object is
/// written again, its members in name order).
fn replace_member(value: &[u8], into: &str, row: &[u8], out: &mut Vec<u8>) -> bool {
    let Ok(mut object) =
        serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(value)
    else {
        return false;
    };
    let row = serde_json::from_slice(row).unwrap_or(serde_json::Value::Null);
    object.insert(into.to_owned(), row);
    serde_json::to_writer(&mut *out, &object).is_ok()
}

/// Logs a version of the table read.
fn loaded(shown: &str, table: &Table, message: &'static str) {
    tracing::info!(table = %shown, rows = table.len(), "{message}");
    if table.duplicates > 0 {
        tracing::warn!(
            table = %shown,
            duplicates = table.duplicates,
            first_line = table.first_duplicate.unwrap_or(0),
            "Some rows of the lookup table repeat a key: the last row of each key wins."
        );
    }
}

/// Tells the reloading thread to end.
#[derive(Debug, Default)]
struct Stop {
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl Stop {
    fn stop(&self) {
        *self.stopped.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.wake.notify_all();
    }

    /// Waits up to `d`; true once stopped.
    fn wait(&self, d: Duration) -> bool {
        let guard = self.stopped.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) = self
            .wake
            .wait_timeout_while(guard, d, |stopped| !*stopped)
            .unwrap_or_else(|e| e.into_inner());
        *guard
    }
}

/// Looks at the table every `interval` until stopped; installs each version that reads well
/// and reports, once each, the failures that keep the previous one.
fn spawn_reloader(
    mut watch: Watch,
    current: Arc<Mutex<Arc<Table>>>,
    stop: Arc<Stop>,
    interval: Duration,
) {
    let work = move || {
        let mut last_failure: Option<String> = None;
        while !stop.wait(interval) {
            match watch.poll() {
                Ok(None) => {}
                Ok(Some(table)) => {
                    loaded(
                        &watch.shown,
                        &table,
                        "The lookup table changed and is reloaded; batches that open from now on use it.",
                    );
                    *current.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
                    last_failure = None;
                }
                Err(e) => {
                    let reason = e.to_string();
                    if last_failure.as_ref() != Some(&reason) {
                        tracing::warn!(table = %watch.shown, reason = %reason, "The lookup table could not be reloaded; batches go on with the version they have.");
                        last_failure = Some(reason);
                    }
                }
            }
        }
    };
    if let Err(e) = std::thread::Builder::new()
        .name("sluice-lookup".to_owned())
        .spawn(work)
    {
        tracing::warn!(error = %e, "The lookup table's reloading thread could not start; the table stays as loaded.");
    }
}

#[cfg(test)]
mod tests;
