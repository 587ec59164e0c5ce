//! Quarantined plugin versions: a version rolled back after failing its trial is refused
//! until an operator clears it (`sluice plugin clear`), across restarts.
//!
//! The list is one small JSON object, `plugins/quarantine.json` beside the checkpoint log
//! (`{"<sha256>": {"plugin": …, "error": …, "at_ms": …}}`), rewritten whole on each change
//! (one writer, the driver; the CLI only clears). Without a checkpoint log it lives in memory
//! for the run.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use object_store::PutPayload;
use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;

use crate::error::{Error, Result};
use crate::store::Location;

/// Why a version is quarantined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// The plugin.
    pub plugin: String,
    /// The failure that rolled it back.
    pub error: String,
    /// When, ms since the epoch.
    pub at_ms: i64,
}

/// The quarantined versions, by sha256.
pub type List = BTreeMap<String, Entry>;

/// The quarantine of one pipeline.
#[derive(Debug)]
pub struct Quarantine {
    at: Option<(Location, Handle)>,
    known: Mutex<List>,
}

impl Quarantine {
    /// The quarantine kept under `at` (the checkpoint location), read now; in memory only
    /// when `at` is `None`. A list that cannot be read is an error: a run must not take a
    /// quarantined version back because its store was away.
    pub fn open(at: Option<(Location, Handle)>) -> std::result::Result<Quarantine, String> {
        let known = match &at {
            Some((loc, handle)) => read(loc, handle)?,
            None => List::new(),
        };
        Ok(Quarantine {
            at,
            known: Mutex::new(known),
        })
    }

    /// Whether `digest` is quarantined, and why (read again from the store, so an operator's
    /// clear counts at once; on a read failure, what this run knew).
    pub fn refused(&self, digest: &str) -> Option<Entry> {
        if let Some((loc, handle)) = &self.at
            && let Ok(list) = read(loc, handle)
        {
            *self.lock() = list;
        }
        self.lock().get(digest).cloned()
    }

    /// Quarantines `digest` of `plugin` for `error`. A failure to write is logged: the
    /// rollback stands, and this run still refuses the version.
    pub fn add(&self, plugin: &str, digest: &str, error: &str) {
        let mut known = self.lock();
        known.insert(
            digest.to_owned(),
            Entry {
                plugin: plugin.to_owned(),
                error: error.to_owned(),
                at_ms: crate::clock::now_ms(),
            },
        );
        if let Some((loc, handle)) = &self.at
            && let Err(e) = write(loc, handle, &known)
        {
            tracing::error!(plugin, digest = %super::short(digest), error = %e, "Could not record the quarantine of a rolled-back plugin version; this run refuses it, a restart would not.");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, List> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn path(loc: &Location) -> object_store::path::Path {
    loc.child("plugins/quarantine.json")
}

fn read(loc: &Location, handle: &Handle) -> std::result::Result<List, String> {
    let p = path(loc);
    let got = handle.block_on(async {
        match loc.store.get(&p).await {
            Ok(r) => r.bytes().await.map(Some),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    });
    let what = format!("{}/plugins/quarantine.json", loc.display);
    match got {
        Ok(None) => Ok(List::new()),
        Ok(Some(bytes)) => serde_json::from_slice(&bytes).map_err(|e| {
            format!("{what} is damaged ({e}); remove it to clear every quarantined version")
        }),
        Err(e) => Err(format!("{what} could not be read: {e}")),
    }
}

fn write(loc: &Location, handle: &Handle, list: &List) -> std::result::Result<(), String> {
    let body = serde_json::to_vec_pretty(list).map_err(|e| e.to_string())?;
    handle
        .block_on(loc.store.put(&path(loc), PutPayload::from(body)))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The quarantine of the pipeline file at `pipeline`, for the CLI.
fn of_pipeline(pipeline: &Path, rt: &tokio::runtime::Runtime) -> Result<(Location, List)> {
    let log = crate::checkpoint::show::log_of(pipeline)?;
    let loc = log.location().clone();
    let list = read(&loc, rt.handle()).map_err(Error::Usage)?;
    Ok((loc, list))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::io("starting the async runtime"))
}

/// `sluice plugin quarantine PIPELINE`: prints the quarantined versions.
pub fn show(pipeline: &Path, json: bool) -> Result<()> {
    let rt = runtime()?;
    let (loc, list) = of_pipeline(pipeline, &rt)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&list).unwrap_or_default()
        );
        return Ok(());
    }
    println!(
        "{}/plugins/quarantine.json: {} quarantined versions",
        loc.display,
        list.len()
    );
    for (digest, e) in &list {
        println!("{digest}  {}  {}", e.plugin, e.error);
    }
    Ok(())
}

/// `sluice plugin clear PIPELINE DIGEST`: takes the version whose sha256 starts with `digest`
/// (at least 8 hex digits, naming one version) out of quarantine.
pub fn clear(pipeline: &Path, digest: &str) -> Result<()> {
    if digest.len() < 8 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::Usage(format!(
            "`{digest}` is not a sha256 or a prefix of one of at least 8 hex digits"
        )));
    }
    let rt = runtime()?;
    let (loc, mut list) = of_pipeline(pipeline, &rt)?;
    let digest = digest.to_ascii_lowercase();
    let matching: Vec<String> = list
        .keys()
        .filter(|d| d.starts_with(&digest))
        .cloned()
        .collect();
    let full = match matching.as_slice() {
        [one] => one.clone(),
        [] => {
            return Err(Error::Usage(format!(
                "no quarantined version's sha256 starts with {digest} (`sluice plugin quarantine` lists them)"
            )));
        }
        _ => {
            return Err(Error::Usage(format!(
                "{} quarantined versions start with {digest}; give more digits",
                matching.len()
            )));
        }
    };
    let entry = list.remove(&full);
    write(&loc, rt.handle(), &list).map_err(Error::Usage)?;
    if let Some(e) = entry {
        println!(
            "{full} ({}) is out of quarantine: a new copy of it in the plugin directory may go live again",
            e.plugin
        );
    }
    Ok(())
}
