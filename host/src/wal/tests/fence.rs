//! The fence: epochs, stale writers, stale segments (see [`super::super::epoch`]).

use std::sync::Arc;
use std::time::Instant;

use object_store::ObjectStore;
use object_store::memory::InMemory;

use super::{block, local, prefix, put_segment};
use crate::batch::RecordBatch;
use crate::wal::epoch::{self, EPOCH_VERSION, EpochRecord};
use crate::wal::{Recovery, Wal, WalError, WalOptions, bench, segment_name};

/// The (partition, first offset, records) of recovered blocks, to compare with what was written.
fn triples(rec: &Recovery) -> Vec<(u32, u64, RecordBatch)> {
    let blocks = rec.blocks.iter();
    blocks
        .map(|b| (b.partition, b.first_offset, b.records.clone()))
        .collect()
}

#[tokio::test]
async fn a_stalled_old_writer_that_appends_after_the_new_writer_truncated_is_fenced() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, opts) = local(tmp.path());
    let (a, _) = Wal::open(store.clone(), prefix(), opts.clone())
        .await
        .unwrap();
    a.append(0, 0, &block(0, 3, false)).await.unwrap();

    // B takes over: it recovers A's block, goes on, and its checkpoint truncates everything
    // written so far, which frees the names of A's segments and of its own first one.
    let (b, rec) = Wal::open(store.clone(), prefix(), opts.clone())
        .await
        .unwrap();
    assert_eq!(triples(&rec), [(0, 0, block(0, 3, false))]);
    b.append(0, 3, &block(1, 3, false)).await.unwrap();
    assert_eq!(b.truncate(&[6]).await.unwrap(), 2);
    b.append(0, 6, &block(2, 3, false)).await.unwrap();

    // A wakes up and appends what it still held.
    for (off, seed) in [(3, 10), (6, 11)] {
        let err = a.append(0, off, &block(seed, 3, false)).await.unwrap_err();
        assert!(
            matches!(
                err,
                WalError::Fenced {
                    epoch: 1,
                    newer: 2,
                    ..
                }
            ),
            "{err}"
        );
        assert!(!err.is_retryable());
        let msg = err.to_string();
        assert!(
            msg.contains("epoch 2") && msg.contains("another driver took over"),
            "{msg}"
        );
    }

    let (_c, rec) = Wal::open(store, prefix(), opts).await.unwrap();
    assert_eq!(
        triples(&rec),
        [(0, 6, block(2, 3, false))],
        "only B's un-truncated block"
    );
    assert!(rec.stale.is_empty() && rec.problems.is_empty());
    let names: Vec<_> = std::fs::read_dir(tmp.path().join("wal"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        !names
            .iter()
            .any(|n| n.to_string_lossy().starts_with(&epoch::epoch_name(1))),
        "{names:?}"
    );
}

#[tokio::test]
async fn a_stale_segment_that_slipped_past_the_check_is_ignored_by_recovery() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, opts) = local(tmp.path());
    let (a, _) = Wal::open(store.clone(), prefix(), opts.clone())
        .await
        .unwrap();
    a.append(0, 0, &block(0, 3, false)).await.unwrap(); // segment 1-0
    let (b, _) = Wal::open(store.clone(), prefix(), opts.clone())
        .await
        .unwrap();
    b.append(1, 0, &block(1, 3, false)).await.unwrap(); // segment 2-1
    // A checked the fence before B opened, stalled, then wrote: B never read this segment.
    let late = prefix().child(segment_name(1, 7));
    put_segment(&store, &late, &[(0, 3, &block(2, 3, false))]).await;

    let (c, rec) = Wal::open(store.clone(), prefix(), opts.clone())
        .await
        .unwrap();
    assert_eq!(
        triples(&rec),
        [(0, 0, block(0, 3, false)), (1, 0, block(1, 3, false))]
    );
    assert_eq!(rec.stale, std::slice::from_ref(&late));
    assert_eq!(rec.segments, 2);
    // Nothing is checkpointed, yet the stale segment goes at the first truncation.
    assert_eq!(c.truncate(&[]).await.unwrap(), 1);
    assert!(store.head(&late).await.is_err());
    drop(c);
    let (_d, rec) = Wal::open(store, prefix(), opts).await.unwrap();
    assert_eq!((rec.blocks.len(), rec.stale.len()), (2, 0), "reported once");
}

#[tokio::test]
async fn a_log_written_before_epochs_is_read_as_epoch_0_and_continued() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let old = prefix().child(format!("{:020}.seg", 4));
    put_segment(&store, &old, &[(0, 0, &block(0, 3, false))]).await;
    let (wal, rec) = Wal::open(store.clone(), prefix(), WalOptions::default())
        .await
        .unwrap();
    assert_eq!(triples(&rec), [(0, 0, block(0, 3, false))]);
    assert_eq!(
        (rec.blocks[0].epoch, rec.blocks[0].segment, rec.epoch),
        (0, 4, 1)
    );
    wal.append(0, 3, &block(1, 3, false)).await.unwrap();
    assert!(
        store
            .head(&prefix().child(segment_name(1, 5)))
            .await
            .is_ok()
    );
    drop(wal);
    let (wal, rec) = Wal::open(store.clone(), prefix(), WalOptions::default())
        .await
        .unwrap();
    assert_eq!(rec.blocks.len(), 2);
    assert_eq!(wal.truncate(&[6]).await.unwrap(), 2);
    assert!(store.head(&old).await.is_err());
}

#[tokio::test]
async fn each_open_claims_the_next_epoch_and_only_the_newest_epoch_object_is_kept() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    for n in 1..=3 {
        let (wal, rec) = Wal::open(store.clone(), prefix(), WalOptions::default())
            .await
            .unwrap();
        assert_eq!((wal.epoch(), rec.epoch), (n, n));
        wal.append(0, n * 10, &block(n, 2, false)).await.unwrap();
    }
    assert_eq!(epoch::list(&store, &prefix()).await.unwrap(), [3]);
    let record = epoch::read(&store, &prefix(), 3).await.unwrap();
    let read: Vec<_> = record.read.iter().map(|r| (r.epoch, r.last_seq)).collect();
    assert_eq!(read, [(1, 0), (2, 1)]);
}

#[tokio::test]
async fn a_writer_that_loses_the_race_for_an_epoch_is_fenced() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let record = EpochRecord {
        version: EPOCH_VERSION,
        epoch: 1,
        opened_at_ms: 0,
        read: Vec::new(),
    };
    epoch::claim(&store, &prefix(), &record).await.unwrap();
    let err = epoch::claim(&store, &prefix(), &record).await.unwrap_err();
    assert!(
        matches!(
            err,
            WalError::Fenced {
                epoch: 1,
                newer: 1,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("at the same moment"), "{err}");
}

#[tokio::test]
async fn a_damaged_epoch_object_stops_the_open_with_its_location() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let path = epoch::epoch_path(&prefix(), 1);
    store
        .put(&path, b"{\"version\": 1, \"epo".to_vec().into())
        .await
        .unwrap();
    let err = Wal::open(store, prefix(), WalOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, WalError::BadEpoch { .. }) && !err.is_retryable(),
        "{err}"
    );
    assert!(
        err.to_string().contains("wal/epoch/00000000000000000001"),
        "{err}"
    );
}

/// Not a test: what the fence check adds to an append on a local disk, printed. Runs of the
/// benchmark with and without the check alternate, so that a busy machine weighs on both.
/// `cargo test --release -p sluice wal::tests::fence::measure -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run by hand, alone (it turns the fence check off)"]
async fn measure_the_fence_check_on_local_disk() {
    use std::sync::atomic::Ordering;
    let tmp = tempfile::tempdir().unwrap();
    let (store, fsynced) = local(tmp.path());
    let cases = [
        (
            "fsync, 1 partition, 10-record blocks",
            fsynced.clone(),
            1,
            10,
        ),
        ("fsync, 8 partitions, 1000-record blocks", fsynced, 8, 1000),
        (
            "no fsync, 1 partition, 10-record blocks",
            WalOptions::default(),
            1,
            10,
        ),
        (
            "no fsync, 8 partitions, 1000-record blocks",
            WalOptions::default(),
            8,
            1000,
        ),
    ];
    for (name, opts, partitions, records) in cases {
        let mut runs: [Vec<(f64, f64)>; 2] = Default::default();
        for round in 0..10 {
            let skip = round % 2 == 0;
            crate::wal::writer::SKIP_FENCE_CHECK.store(skip, Ordering::Relaxed);
            let cfg = bench::BenchConfig {
                partitions,
                blocks_per_partition: 400 / partitions,
                records_per_block: records,
                record_bytes: 100,
                opts: opts.clone(),
            };
            let r = bench::append_throughput(store.clone(), prefix(), &cfg)
                .await
                .unwrap();
            let per_segment = r.elapsed.as_secs_f64() * 1e3 / r.segments as f64;
            runs[skip as usize].push((r.p50.as_secs_f64() * 1e3, per_segment));
        }
        crate::wal::writer::SKIP_FENCE_CHECK.store(false, Ordering::Relaxed);
        let median = |v: &mut Vec<(f64, f64)>, i: usize| {
            let mut x: Vec<f64> = v.iter().map(|r| if i == 0 { r.0 } else { r.1 }).collect();
            x.sort_by(f64::total_cmp);
            x[x.len() / 2]
        };
        let [with, without] = &mut runs;
        println!(
            "{name}: append p50 {:.3} ms without the check, {:.3} ms with; wall time per segment {:.3} ms without, {:.3} ms with (medians of 5 runs of 400 blocks)",
            median(without, 0),
            median(with, 0),
            median(without, 1),
            median(with, 1),
        );
    }
    let start = Instant::now();
    for _ in 0..1000 {
        epoch::check(&store, &prefix(), u64::MAX).await.unwrap();
    }
    println!(
        "one fence check alone (a listing of epoch/): {:.1} us",
        start.elapsed().as_secs_f64() * 1e3
    );
}
