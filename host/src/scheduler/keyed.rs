//! The keyed state of a batch's plugin steps ([`crate::state::keyed`]): opened for a step at
//! its first call in the batch (converted by the plugin's `migrate` when the version changed
//! the layout), and closed with the batch.

use std::sync::Arc;

use super::open::OpenBatch;
use super::part::JobError;
use crate::batch::RecordBatch;
use crate::plan::{Plan, StepPlan};
use crate::plugin::{PluginError, TransformStage};
use crate::state::keyed::{Entries, Entry, KeyedBatch, KeyedStore, Layout, MIGRATE_CHUNK};

/// The layout a version of a plugin writes: its digest and `plugin-version`.
fn layout_of(stage: &TransformStage) -> Layout {
    let info = stage.plugin().info();
    Layout {
        digest: info.digest.clone(),
        version: info.manifest.plugin_version.clone(),
    }
}

/// Step `step`'s keyed state in `batch`, for a call of `stage`; `None` when its plugin has
/// none. The first call of the batch opens it; when the committed state was written by
/// another version and this one exports `migrate`, the state is converted first (a failure
/// is the version's, as a trap is: the batch fails with it, and a version on trial is rolled
/// back with the old state kept).
pub(super) fn open(
    plan: &Plan,
    batch: &OpenBatch,
    step: usize,
    stage: &TransformStage,
) -> Result<Option<Arc<KeyedBatch>>, JobError> {
    if !stage.plugin().uses_keyed_state() {
        return Ok(None);
    }
    let mut open = batch.keyed.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(b) = open.get(&step) {
        return Ok(Some(b.clone()));
    }
    let store = plan.keyed.of(step);
    let layout = layout_of(stage);
    let kb = Arc::new(store.open(batch.time_ms, layout.clone()));
    if let Some(old) = store.layout()
        && old.digest != layout.digest
        && stage.plugin().has_migrate()
        && store.size() > 0
    {
        let started = std::time::Instant::now();
        let state = migrate(stage, &store, &old, batch.id).map_err(|source| {
            tracing::error!(plugin = %stage.plugin().name(), step, batch = batch.id, error = %source, "The plugin's migrate failed; the version is not used and the state stays as it was.");
            JobError::Plugin {
                batch: batch.id,
                source,
            }
        })?;
        tracing::info!(
            plugin = %stage.plugin().name(),
            step,
            batch = batch.id,
            from = %crate::swap::short(&old.digest),
            to = %crate::swap::short(&layout.digest),
            keys_before = store.size(),
            keys_after = state.len(),
            ms = started.elapsed().as_millis() as u64,
            "Migrated a plugin step's keyed state to the new version's layout."
        );
        kb.migrated(state, layout);
    }
    open.insert(step, kb.clone());
    Ok(Some(kb))
}

/// The committed state of `store` converted by `stage`'s `migrate`, in chunks.
fn migrate(
    stage: &TransformStage,
    store: &KeyedStore,
    old: &Layout,
    batch: u64,
) -> Result<Entries, PluginError> {
    let entries = store.entries();
    let mut out = Vec::with_capacity(entries.len());
    let mut migration = stage.start_migration(batch)?;
    for chunk in entries.chunks(MIGRATE_CHUNK) {
        let mut records = RecordBatch::default();
        for (key, entry) in chunk {
            records.push(Some(key), &entry.value, None);
        }
        let done = migration.chunk(&old.version, &records)?;
        for j in 0..done.batch.len() {
            let origin = done.origins.get(j).map_or(j, |&o| o as usize);
            let Some((key, entry)) = chunk.get(origin) else {
                continue;
            };
            out.push((
                key.clone(),
                Entry {
                    value: done.batch.value(j).into(),
                    expires_ms: entry.expires_ms,
                },
            ));
        }
    }
    Ok(out)
}

/// Closes the keyed state of every step that has some, at the close of `batch` (once it can
/// no longer fail): a step with no call in the batch still records its (empty) changes, so
/// that a restart finds every batch's, and has its expired entries removed.
///
/// A spill file that could not be read or written fails the batch here, before it commits.
pub(super) fn close(plan: &Plan, batch: &OpenBatch) -> Result<Vec<crate::state::Write>, JobError> {
    let mut open = std::mem::take(&mut *batch.keyed.lock().unwrap_or_else(|e| e.into_inner()));
    let mut writes = Vec::new();
    for store in plan.keyed.all() {
        let kb = open.remove(&store.step).unwrap_or_else(|| {
            let layout = match batch.steps.get(store.step) {
                Some(StepPlan::Plugin(stage, _)) if store.layout().is_none() => layout_of(stage),
                _ => store.layout().unwrap_or_default(),
            };
            Arc::new(store.open(batch.time_ms, layout))
        });
        let closed = kb.close(batch.id).map_err(|source| JobError::State {
            batch: batch.id,
            step: store.step,
            source,
        })?;
        writes.extend(closed);
    }
    Ok(writes)
}
