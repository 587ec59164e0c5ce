//! The files sink's commit against a store that fails.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

use super::*;
use crate::sink::OutputFormat;

/// A local store whose `fail_at`-th create-if-absent rename (counted from 1) fails once.
#[derive(Debug)]
struct FailingRename {
    inner: LocalFileSystem,
    fail_at: usize,
    renames: AtomicUsize,
}

impl std::fmt::Display for FailingRename {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FailingRename")
    }
}

#[async_trait::async_trait]
impl ObjectStore for FailingRename {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }
    async fn get_range(
        &self,
        location: &Path,
        range: Range<u64>,
    ) -> object_store::Result<bytes::Bytes> {
        self.inner.get_range(location, range).await
    }
    async fn delete(&self, location: &Path) -> object_store::Result<()> {
        self.inner.delete(location).await
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.inner.copy(from, to).await
    }
    async fn copy_if_not_exists(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.inner.copy_if_not_exists(from, to).await
    }
    async fn rename_if_not_exists(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        if self.renames.fetch_add(1, Ordering::SeqCst) + 1 == self.fail_at {
            return Err(object_store::Error::Generic {
                store: "FailingRename",
                source: "the store went away for a moment".into(),
            });
        }
        self.inner.rename_if_not_exists(from, to).await
    }
}

fn ctx(batch_id: u64, partition: u32) -> CallContext {
    CallContext {
        stream: "s".into(),
        partition,
        batch_id,
        batch_time_ms: 0,
        part: 0,
    }
}

#[test]
fn a_failed_rename_keeps_its_part_staged_and_the_retry_commits_the_whole_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = Arc::new(FailingRename {
        inner: LocalFileSystem::new_with_prefix(tmp.path()).unwrap(),
        fail_at: 2,
        renames: AtomicUsize::new(0),
    });
    let location = Location {
        store,
        prefix: Path::from("out"),
        display: "failing".into(),
        local: None,
    };
    let sink = FilesSink::new(location, OutputFormat::Lines, rt.handle().clone());
    for p in 0..3u32 {
        let line = format!("record of partition {p}");
        sink.write(&ctx(7, p), &RecordBatch::from_values([line.as_bytes()]))
            .unwrap();
    }
    let e = sink.commit("s", 7).unwrap_err();
    assert!(e.retryable(), "a failed rename is worth a retry: {e}");
    assert_eq!(sink.committed("s", 7).unwrap(), Some(false));
    let part = |p: u32| {
        tmp.path()
            .join(format!("out/s/batch-0000000007-part-{p:05}.txt"))
    };
    assert!(part(0).exists() && !part(1).exists());
    sink.commit("s", 7).unwrap();
    for p in 0..3 {
        assert_eq!(
            std::fs::read_to_string(part(p)).unwrap(),
            format!("record of partition {p}\n"),
            "partition {p} is committed after the retry"
        );
    }
    assert_eq!(sink.committed("s", 7).unwrap(), Some(true));
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(tmp.path().join("out/s/_commits/batch-0000000007.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(record["parts"].as_array().unwrap().len(), 3, "{record}");
    let staged: Vec<_> = walk(&tmp.path().join("out/_staging"));
    assert!(staged.is_empty(), "nothing stays staged: {staged:?}");
}

#[test]
fn a_part_committed_by_an_earlier_attempt_is_kept_and_not_written_again() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let location =
        Location::resolve(tmp.path().to_str().unwrap(), "sink.path", tmp.path(), true).unwrap();
    let first = FilesSink::new(location.clone(), OutputFormat::Lines, rt.handle().clone());
    first
        .write(&ctx(3, 0), &RecordBatch::from_values([&b"first"[..]]))
        .unwrap();
    first.commit("s", 3).unwrap();
    // A recomputed batch 3 (a restart after the part moved but before the record).
    std::fs::remove_file(tmp.path().join("s/_commits/batch-0000000003.json")).unwrap();
    let again = FilesSink::new(location, OutputFormat::Lines, rt.handle().clone());
    again.recover("s").unwrap();
    assert_eq!(again.committed("s", 3).unwrap(), Some(false));
    again
        .write(&ctx(3, 0), &RecordBatch::from_values([&b"second"[..]]))
        .unwrap();
    again.commit("s", 3).unwrap();
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("s/batch-0000000003-part-00000.txt")).unwrap(),
        "first\n",
        "a committed part is never replaced"
    );
    again.stop("s");
    assert!(walk(&tmp.path().join("_staging")).is_empty());
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
