//! The plugin history: swaps (a batch on another version than the one before), rollbacks and
//! verdicts, one JSON object each (`"event"`: `swap`, `rolled-back`, `passed`, `shadowed`,
//! with the batch and its time).
//!
//! Each happening is derived from the entries (their per-batch digests and events), and also
//! kept apart from them under `plugins/history/<batch>.json` beside the log, written right
//! after the batch's entry: compaction deletes old entries, not the history. Writing it is
//! best effort (the entry holds the same until it is compacted).

use std::collections::BTreeMap;

use futures::TryStreamExt;
use object_store::PutPayload;
use serde_json::Value;

use super::{CheckpointLog, Entry};

/// A change of plugin version between two recorded batches: a swap, or a restart on another
/// version.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VersionChange {
    /// The first batch that ran the new version.
    pub batch: u64,
    /// That batch's time, epoch ms.
    pub batch_time_ms: i64,
    /// The plugin.
    pub plugin: String,
    /// The sha256 the batch before ran (`None`: the plugin was not used before).
    pub from: Option<String>,
    /// The sha256 this batch ran (`None`: the plugin is no longer used).
    pub to: Option<String>,
}

/// The changes of plugin version from a batch that ran `before` to entry `e`.
pub fn changes(before: &BTreeMap<String, String>, e: &Entry) -> Vec<VersionChange> {
    let names: std::collections::BTreeSet<&String> =
        before.keys().chain(e.plugins.keys()).collect();
    names
        .into_iter()
        .filter(|name| before.get(*name) != e.plugins.get(*name))
        .map(|name| VersionChange {
            batch: e.batch,
            batch_time_ms: e.batch_time_ms,
            plugin: name.clone(),
            from: before.get(name).cloned(),
            to: e.plugins.get(name).cloned(),
        })
        .collect()
}

/// What happened at entry `e`, given the plugin versions of the batch before (`None`: the
/// first batch known).
pub fn of_entry(before: Option<&BTreeMap<String, String>>, e: &Entry) -> Vec<Value> {
    let mut out = Vec::new();
    for c in before.map(|b| changes(b, e)).unwrap_or_default() {
        let mut v = serde_json::to_value(&c).unwrap_or_default();
        v["event"] = "swap".into();
        out.push(v);
    }
    for ev in &e.events {
        let mut v = serde_json::to_value(ev).unwrap_or_default();
        v["batch"] = e.batch.into();
        v["batch_time_ms"] = e.batch_time_ms.into();
        out.push(v);
    }
    out
}

fn path(log: &CheckpointLog, batch: u64) -> object_store::path::Path {
    log.location()
        .child(&format!("plugins/history/{batch:020}.json"))
}

/// Keeps `happened` (of batch `batch`) apart from the entries; a failure is logged.
pub async fn keep(log: &CheckpointLog, batch: u64, happened: &[Value]) {
    if happened.is_empty() {
        return;
    }
    let body = serde_json::to_vec_pretty(happened).unwrap_or_default();
    let at = log.location();
    if let Err(e) = at
        .store
        .put(&path(log, batch), PutPayload::from(body))
        .await
    {
        tracing::warn!(batch, location = %at, error = %e, "Could not keep the plugin history of a batch apart from its checkpoint entry; `sluice plugin history` shows it until the entry is compacted.");
    }
}

/// Everything kept apart, in batch order; unreadable objects are passed over with a warning.
pub async fn kept(log: &CheckpointLog) -> Vec<Value> {
    let at = log.location();
    let prefix = at.child("plugins/history");
    let Ok(objects) = at.store.list(Some(&prefix)).try_collect::<Vec<_>>().await else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for m in objects {
        let got = match at.store.get(&m.location).await {
            Ok(r) => r.bytes().await.ok(),
            Err(_) => None,
        };
        match got.and_then(|b| serde_json::from_slice::<Vec<Value>>(&b).ok()) {
            Some(v) => out.extend(v),
            None => {
                tracing::warn!(object = %m.location, "A plugin history object could not be read; it is passed over.");
            }
        }
    }
    out.sort_by_key(|v| v["batch"].as_u64());
    out
}

/// The plugin versions of the newest readable entry of `log` (none when it is empty).
pub async fn newest_plugins(log: &CheckpointLog) -> BTreeMap<String, String> {
    let Ok(batches) = log.list().await else {
        return BTreeMap::new();
    };
    for b in batches.into_iter().rev() {
        if let Ok(e) = log.read(b).await {
            return e.plugins;
        }
    }
    BTreeMap::new()
}
