//! `kind = "files"`: one object per batch and partition, committed atomically.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::runtime::Handle;

use super::{BuildContext, BuildError, Format, Sink, SinkError, Unwritable};
use crate::batch::RecordBatch;
use crate::plugin::CallContext;
use crate::store::Location;

/// `kind = "files"`, checked.
#[derive(Debug, Clone)]
pub struct FilesSinkConfig {
    /// The directory or store prefix.
    pub path: String,
    /// How records are written.
    pub format: Format,
}

impl FilesSinkConfig {
    /// Resolves `path` (created when local) and reaches its store.
    pub fn build(&self, ctx: &mut BuildContext<'_>) -> Result<Arc<dyn Sink>, BuildError> {
        let what = ctx.what;
        let location = Location::resolve(&self.path, "sink.path", ctx.base, true)
            .map_err(|e| format!("{what}: {e}"))?;
        ctx.handle
            .block_on(location.reach("sink.path"))
            .map_err(|e| BuildError::Unreachable(format!("{what}: {e}")))?;
        Ok(Arc::new(FilesSink::new(
            location,
            self.format,
            ctx.handle.clone(),
        )))
    }
}

/// `kind = "files"`: one object per batch and partition,
/// `<path>/<stream>/batch-<id>-part-<partition>.<ext>`. A partition's records come in several
/// writes (one per block); they stream into a multipart upload of
/// `<path>/_staging/<stream>/<run>/…` (`<run>` is this process's, so two drivers never write
/// the same staging object), and a batch never sits whole in memory.
///
/// `commit` completes every upload, then moves each into place **create-if-absent**: a part
/// already there was committed by an earlier attempt of the same batch (a restart recomputes a
/// batch from the same records, so it holds the same bytes) and is not written again. An upload
/// stays staged until its move succeeds, so a failed move is retried, never lost. Last comes the
/// batch's commit record, `<path>/<stream>/_commits/batch-<id>.json`, listing its parts: a batch
/// is committed when its record exists (readers that must never see a half-moved batch read
/// the records), and a restart asks for it ([`Sink::committed`]).
pub struct FilesSink {
    location: Location,
    format: Format,
    handle: Handle,
    open: Mutex<BTreeMap<(u64, u32), Staged>>,
    run: String,
    /// Parts a failed commit had already moved, by batch, for the commit record.
    parts_done: Mutex<BTreeMap<u64, Vec<String>>>,
}

struct Staged {
    staging: object_store::path::Path,
    target: object_store::path::Path,
    upload: Option<object_store::WriteMultipart>,
    /// The part's file name.
    name: String,
}

/// Parts of a staged upload are 8 MiB (S3 wants at least 5 MiB for all but the last).
const UPLOAD_PART: usize = 8 << 20;

impl FilesSink {
    /// A files sink writing under `location`.
    pub fn new(location: Location, format: impl Into<Format>, handle: Handle) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        FilesSink {
            location,
            format: format.into(),
            handle,
            open: Mutex::default(),
            run: format!("run-{}-{nanos}", std::process::id()),
            parts_done: Mutex::default(),
        }
    }

    fn commit_record(&self, stream: &str, batch_id: u64) -> object_store::path::Path {
        self.location
            .child(&format!("{stream}/_commits/batch-{batch_id:010}.json"))
    }

    fn block_on<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        self.handle.block_on(f)
    }

    /// Completes one staged upload and moves it into place (create-if-absent).
    fn commit_one(&self, s: &mut Staged) -> Result<(), SinkError> {
        if let Some(upload) = s.upload.take() {
            self.block_on(upload.finish())
                .map_err(|e| self.broken(format!("completing {}: {e}", s.staging)))?;
        }
        let store = &self.location.store;
        match self.block_on(store.rename_if_not_exists(&s.staging, &s.target)) {
            Ok(()) => Ok(()),
            // Several hosts: the next owner of the partition moved it (this host was paused
            // after recording the commit).
            Err(object_store::Error::NotFound { .. })
                if self.block_on(store.head(&s.target)).is_ok() =>
            {
                Ok(())
            }
            Err(object_store::Error::AlreadyExists { .. }) => {
                tracing::info!(part = %s.target, "This part was committed by an earlier attempt of the batch; it is kept as it is.");
                let _ = self.block_on(store.delete(&s.staging));
                Ok(())
            }
            Err(e) => Err(self.err(format!("committing {}: {e}", s.target))),
        }
    }

    fn err(&self, message: String) -> SinkError {
        SinkError::Io {
            sink: format!("files {}", self.location),
            message,
        }
    }

    fn broken(&self, message: String) -> SinkError {
        SinkError::Broken {
            sink: format!("files {}", self.location),
            message,
        }
    }

    /// Deletes every object under `prefix`; returns how many.
    fn delete_under(&self, prefix: &object_store::path::Path) -> Result<usize, SinkError> {
        self.delete_under_except(prefix, &|_| false)
    }

    /// Deletes every object under `prefix` but those in a first-level folder `keep` holds to.
    fn delete_under_except(
        &self,
        prefix: &object_store::path::Path,
        keep: &dyn Fn(&str) -> bool,
    ) -> Result<usize, SinkError> {
        use futures::TryStreamExt;
        let store = &self.location.store;
        let mut objects: Vec<_> = self
            .block_on(store.list(Some(prefix)).try_collect::<Vec<_>>())
            .map_err(|e| self.err(format!("listing {prefix}: {e}")))?;
        objects.retain(|o| {
            let folder = o.location.prefix_match(prefix).and_then(|mut p| p.next());
            !folder.is_some_and(|f| keep(f.as_ref()))
        });
        for o in &objects {
            match self.block_on(store.delete(&o.location)) {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.err(format!("deleting {}: {e}", o.location))),
            }
        }
        Ok(objects.len())
    }

    /// Takes every partition's staged upload of `batch_id`.
    fn take_batch(&self, batch_id: u64) -> Vec<Staged> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let rest = open.split_off(&(batch_id, 0));
        let (mine, later): (BTreeMap<_, _>, BTreeMap<_, _>) =
            rest.into_iter().partition(|((b, _), _)| *b == batch_id);
        open.extend(later);
        mine.into_values().collect()
    }

    fn staged(&self, ctx: &CallContext) -> Result<Staged, SinkError> {
        let key = (ctx.batch_id, ctx.partition);
        if let Some(s) = self
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key)
        {
            return Ok(s);
        }
        let file = format!(
            "batch-{:010}-part-{:05}.{}",
            ctx.batch_id,
            ctx.partition,
            self.format.extension()
        );
        let staging = self
            .location
            .child(&format!("_staging/{}/{}/{file}", ctx.stream, self.run));
        let target = self.location.child(&format!("{}/{file}", ctx.stream));
        let upload = self
            .handle
            .block_on(self.location.store.put_multipart(&staging))
            .map_err(|e| self.err(format!("starting {staging}: {e}")))?;
        Ok(Staged {
            staging,
            target,
            upload: Some(object_store::WriteMultipart::new_with_chunk_size(
                upload,
                UPLOAD_PART,
            )),
            name: file,
        })
    }
}

impl Sink for FilesSink {
    fn name(&self) -> String {
        format!("files {}", self.location)
    }

    fn unwritable(&self, batch: &RecordBatch) -> Vec<(usize, Unwritable)> {
        self.format.unwritable(batch)
    }

    fn write(&self, ctx: &CallContext, batch: &RecordBatch) -> Result<(), SinkError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut body = Vec::with_capacity(batch.values.data.len() + batch.len() * 8);
        for i in 0..batch.len() {
            self.format
                .write(batch, i, &mut body)
                .map_err(|reason| SinkError::unwritable(self.name(), ctx, i, reason))?;
            body.push(b'\n');
        }
        let mut staged = self.staged(ctx)?;
        let upload = staged.upload.as_mut().expect("an open upload");
        // Parts upload as tasks on the runtime; at most two in flight per object.
        let waited = {
            let _in_runtime = self.handle.enter();
            upload.put(body.into());
            self.handle.block_on(upload.wait_for_capacity(2))
        };
        let staging = staged.staging.clone();
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((ctx.batch_id, ctx.partition), staged);
        // A failed part breaks the whole upload: writing again would not mend it.
        waited.map_err(|e| self.broken(format!("writing {staging}: {e}")))
    }

    fn commit(&self, stream: &str, batch_id: u64) -> Result<(), SinkError> {
        self.commit_only(stream, batch_id, &|_| true)
    }

    fn location(&self) -> Option<Location> {
        Some(self.location.clone())
    }

    fn stage(&self, batch_id: u64) -> Result<Vec<super::StagedPart>, SinkError> {
        let mut staged = self.take_batch(batch_id);
        let mut result = Ok(());
        for s in &mut staged {
            if let (Some(upload), true) = (s.upload.take(), result.is_ok()) {
                result = self
                    .block_on(upload.finish())
                    .map(|_| ())
                    .map_err(|e| self.broken(format!("completing {}: {e}", s.staging)));
            }
        }
        let parts = staged
            .iter()
            .map(|s| super::StagedPart {
                partition: partition_of_name(&s.name),
                staged: s.staging.to_string(),
                target: s.target.to_string(),
            })
            .collect();
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        for s in staged {
            open.insert((batch_id, partition_of_name(&s.name)), s);
        }
        result.map(|()| parts)
    }

    fn commit_only(
        &self,
        stream: &str,
        batch_id: u64,
        keep: &dyn Fn(u32) -> bool,
    ) -> Result<(), SinkError> {
        let (mut staged, dropped): (Vec<Staged>, Vec<Staged>) = self
            .take_batch(batch_id)
            .into_iter()
            .partition(|s| keep(partition_of_name(&s.name)));
        for mut s in dropped {
            match s.upload.take() {
                Some(upload) => drop(self.block_on(upload.abort())),
                None => drop(self.block_on(self.location.store.delete(&s.staging))),
            }
        }
        let mut parts: Vec<String> = Vec::new();
        let mut failed = None;
        let mut left = Vec::new();
        for mut s in staged.drain(..) {
            if failed.is_some() {
                left.push(s);
                continue;
            }
            match self.commit_one(&mut s) {
                Ok(()) => parts.push(s.name.clone()),
                Err(e) => {
                    failed = Some(e);
                    left.push(s);
                }
            }
        }
        // Parts committed by an earlier call of this commit are listed in the record too.
        parts.extend(
            self.parts_done
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&batch_id)
                .unwrap_or_default(),
        );
        if let Some(e) = failed {
            // Kept staged: the retry moves what is left.
            let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            for s in left {
                let key = (batch_id, partition_of_name(&s.name));
                open.insert(key, s);
            }
            self.parts_done
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(batch_id, parts);
            return Err(e);
        }
        parts.sort();
        let record = serde_json::json!({ "batch": batch_id, "parts": parts });
        let opts = object_store::PutOptions {
            mode: object_store::PutMode::Create,
            ..Default::default()
        };
        let path = self.commit_record(stream, batch_id);
        match self.block_on(self.location.store.put_opts(
            &path,
            serde_json::to_vec(&record).unwrap_or_default().into(),
            opts,
        )) {
            Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(self.err(format!("writing the commit record {path}: {e}"))),
        }
    }

    fn committed(&self, stream: &str, batch_id: u64) -> Result<Option<bool>, SinkError> {
        let path = self.commit_record(stream, batch_id);
        match self.block_on(self.location.store.head(&path)) {
            Ok(_) => Ok(Some(true)),
            Err(object_store::Error::NotFound { .. }) => Ok(Some(false)),
            Err(e) => Err(self.err(format!("reading {path}: {e}"))),
        }
    }

    fn recover(&self, stream: &str) -> Result<(), SinkError> {
        let prefix = self.location.child(&format!("_staging/{stream}"));
        // On a local disk, a run still alive on this host (a second driver started by mistake,
        // about to be fenced) keeps its staging: it fails at the fence, not on a vanished file.
        let local = self.location.local.is_some();
        let keep = |run: &str| local && run_alive(run);
        let mut n = self.delete_under_except(&prefix, &keep)?;
        if let Some(dir) = &self.location.local {
            // A local multipart upload keeps its parts as `NAME#N` files, which listings skip.
            let staging = dir.join("_staging").join(stream);
            for run in std::fs::read_dir(&staging).into_iter().flatten().flatten() {
                if keep(&run.file_name().to_string_lossy()) {
                    continue;
                }
                n += 1;
                std::fs::remove_dir_all(run.path())
                    .map_err(|e| self.err(format!("removing {}: {e}", run.path().display())))?;
            }
            let _ = std::fs::remove_dir(&staging);
        }
        if n > 0 {
            tracing::info!(sink = %self.name(), objects = n, "Removed what a stopped run left staged; its batches are recomputed or were never committed.");
        }
        Ok(())
    }

    fn stop(&self, stream: &str) {
        if let Some(dir) = &self.location.local {
            let mine = dir.join("_staging").join(stream).join(&self.run);
            let _ = std::fs::remove_dir_all(&mine);
            // And the directories above it, when nothing else is staged there.
            let _ = std::fs::remove_dir(dir.join("_staging").join(stream));
            let _ = std::fs::remove_dir(dir.join("_staging"));
        }
    }

    fn has_output(&self, stream: &str) -> Result<bool, SinkError> {
        let prefix = self.location.child(stream);
        let mut list = self.location.store.list(Some(&prefix));
        let first = self.block_on(futures::StreamExt::next(&mut list));
        match first {
            None => Ok(false),
            Some(Ok(_)) => Ok(true),
            Some(Err(e)) => Err(self.err(format!("listing {prefix}: {e}"))),
        }
    }

    fn clear(&self, stream: &str) -> Result<usize, SinkError> {
        let a = self.delete_under(&self.location.child(stream))?;
        let b = self.delete_under(&self.location.child(&format!("_staging/{stream}")))?;
        Ok(a + b)
    }

    fn abort(&self, batch_id: u64) {
        for mut s in self.take_batch(batch_id) {
            if let Some(upload) = s.upload.take() {
                let _ = self.handle.block_on(upload.abort());
            } else {
                let _ = self.block_on(self.location.store.delete(&s.staging));
            }
        }
    }
}

/// Whether the run that staged under folder `run` (`run-<pid>-<nanos>`) is a process alive on
/// this host (another than this one).
fn run_alive(run: &str) -> bool {
    let pid = run
        .strip_prefix("run-")
        .and_then(|r| r.split('-').next())
        .and_then(|p| p.parse::<u32>().ok());
    pid.is_some_and(|p| {
        p != std::process::id() && std::path::Path::new(&format!("/proc/{p}")).exists()
    })
}

/// The partition number in a part file's name (`batch-…-part-00003.txt` → 3).
fn partition_of_name(name: &str) -> u32 {
    name.split("-part-")
        .nth(1)
        .and_then(|r| r.split('.').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests;
