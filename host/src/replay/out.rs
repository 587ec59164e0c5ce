//! Where a replay writes: `--out`, a directory or store URL, never one of the pipeline's own
//! locations. The plan's sinks become one files sink there, in the format of the pipeline's
//! (first) files sink, and its dead letters go under `<out>/dead-letters`.

use std::sync::Arc;

use futures::TryStreamExt;
use tokio::runtime::Handle;

use super::{ReplayError, Result};
use crate::plan::Plan;
use crate::receiver::SourceConfig;
use crate::sink::dead_letter::DeadLetters;
use crate::sink::files::FilesSink;
use crate::sink::{Format, SinkConfig};
use crate::store::Location;

/// Resolves `spec` (relative to the working directory), refuses it when it is, holds or lies
/// inside a location of the pipeline, or is not empty (unless `overwrite`, which clears it),
/// and points the plan's sinks and dead letters there. Returns the location.
pub fn prepare(plan: &mut Plan, spec: &str, overwrite: bool, handle: &Handle) -> Result<Location> {
    let cwd = std::env::current_dir()
        .map_err(|e| ReplayError::Store(format!("reading the working directory: {e}")))?;
    let fresh = !spec.contains("://") && !cwd.join(spec).exists();
    let out = Location::resolve(spec, "--out", &cwd, true).map_err(ReplayError::Refused)?;
    for (what, live) in live_locations(plan) {
        if overlaps(&out, &live) {
            if let (true, Some(dir)) = (fresh, &out.local) {
                let _ = std::fs::remove_dir(dir); // made just now: leave nothing behind
            }
            return Err(ReplayError::Refused(format!(
                "--out {out}: it is, holds or lies inside the pipeline's {what} ({live}); a replay writes only to a location of its own"
            )));
        }
    }
    let held = handle.block_on(objects(&out))?;
    if !held.is_empty() {
        if !overwrite {
            return Err(ReplayError::Refused(format!(
                "--out {out}: it is not empty ({} objects, e.g. {}); give an empty location, or --overwrite to clear it first",
                held.len(),
                held[0]
            )));
        }
        handle.block_on(clear(&out, &held))?;
        tracing::warn!(out = %out, objects = held.len(), "--overwrite: cleared the out location.");
    }
    let format = plan
        .file
        .sink
        .iter()
        .find_map(|s| match s {
            SinkConfig::Files(c) => Some(c.format),
            _ => None,
        })
        .unwrap_or_else(Format::default);
    plan.sinks = vec![Arc::new(FilesSink::new(
        out.clone(),
        format,
        handle.clone(),
    ))];
    plan.counters.clear();
    plan.dead_letters = Arc::new(DeadLetters::new(dead_letters(&out), handle.clone()));
    Ok(out)
}

/// `<out>/dead-letters`.
fn dead_letters(out: &Location) -> Location {
    Location {
        store: out.store.clone(),
        prefix: out.child("dead-letters"),
        display: format!("{out}/dead-letters"),
        local: out.local.as_ref().map(|p| p.join("dead-letters")),
    }
}

/// The pipeline's locations a replay must not write into: its files sinks, checkpoint log
/// (and write-ahead log), dead letters and files source.
fn live_locations(plan: &Plan) -> Vec<(String, Location)> {
    let base = crate::plan::base_dir(&plan.path);
    let resolve = |spec: &str| Location::resolve(spec, "path", &base, false).ok();
    let mut all = Vec::new();
    for (i, s) in plan.file.sink.iter().enumerate() {
        if let SinkConfig::Files(c) = s
            && let Some(at) = resolve(&c.path)
        {
            all.push((format!("files sink (`[[sink]]` number {})", i + 1), at));
        }
    }
    if let SourceConfig::Files(c) = &plan.file.source
        && let Some(at) = resolve(&c.path)
    {
        all.push(("files source".to_owned(), at));
    }
    if let Some(at) = &plan.checkpoint {
        all.push(("checkpoint log".to_owned(), at.clone()));
    }
    all.push((
        "dead letters".to_owned(),
        plan.dead_letters.location().clone(),
    ));
    all
}

/// Whether one location is the other or lies inside it.
fn overlaps(a: &Location, b: &Location) -> bool {
    match (&a.local, &b.local) {
        (Some(x), Some(y)) => x.starts_with(y) || y.starts_with(x),
        (None, None) => {
            let (x, y) = (
                a.display.trim_end_matches('/'),
                b.display.trim_end_matches('/'),
            );
            x == y || x.starts_with(&format!("{y}/")) || y.starts_with(&format!("{x}/"))
        }
        _ => false,
    }
}

async fn objects(at: &Location) -> Result<Vec<object_store::path::Path>> {
    let listed: Vec<_> = at
        .store
        .list(Some(&at.prefix))
        .try_collect()
        .await
        .map_err(|e| ReplayError::Store(format!("--out {at}: listing failed: {e}")))?;
    Ok(listed.into_iter().map(|m| m.location).collect())
}

async fn clear(at: &Location, objects: &[object_store::path::Path]) -> Result<()> {
    for o in objects {
        match at.store.delete(o).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(ReplayError::Store(format!("--out {at}: deleting {o}: {e}"))),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(dir: &std::path::Path) -> Location {
        Location::resolve(dir.to_str().unwrap(), "k", dir, true).unwrap()
    }

    #[test]
    fn a_location_overlaps_itself_its_parents_and_its_children_only() {
        let tmp = tempfile::tempdir().unwrap();
        let out = local(&tmp.path().join("out"));
        let inner = local(&tmp.path().join("out/input"));
        let other = local(&tmp.path().join("out2"));
        assert!(overlaps(&out, &out));
        assert!(overlaps(&out, &inner) && overlaps(&inner, &out));
        assert!(!overlaps(&out, &other), "a sibling sharing a name prefix");
    }
}
