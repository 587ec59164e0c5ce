//! The write-ahead log on Azure Blob, through Azurite (started by `scripts/services`): the
//! same round trip, damage reports, truncation and fencing as on a local directory.
//!
//! A missing Azurite fails them, unless `SLUICE_SKIP_SERVICES=1` opts into skipping (each skip
//! printed and recorded: see `sluice_tests::services`).

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::path::Path;
use sluice::batch::RecordBatch;
use sluice::wal::{Damage, Wal, WalError, WalOptions, bench, format, segment_name};
use sluice_tests::*;

fn block(seed: u64, n: usize) -> RecordBatch {
    let mut b = RecordBatch::default();
    for i in 0..n as u64 {
        let key = format!("key-{}", (seed + i) % 5);
        b.push(
            (i % 2 == 0).then_some(key.as_bytes()),
            format!("record {seed}/{i}").as_bytes(),
            Some(1_700_000_000_000 + i as i64),
        );
    }
    b
}

fn opts() -> WalOptions {
    WalOptions {
        group_window: std::time::Duration::from_millis(20),
        ..WalOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_blocks_round_trip_through_azurite_in_grouped_segments() {
    let Some(store) = azurite("wal_blocks_round_trip_through_azurite_in_grouped_segments") else {
        return;
    };
    let prefix = unique_prefix("wal-round-trip");
    let (wal, rec) = Wal::open(store.clone(), prefix.clone(), opts())
        .await
        .unwrap();
    assert_eq!(rec.segments, 0);
    // Eight partitions, each appending five blocks one after another, all at once.
    let tasks: Vec<_> = (0..8u32)
        .map(|p| {
            let wal = wal.clone();
            tokio::spawn(async move {
                for i in 0..5u64 {
                    wal.append(p, i * 20, &block(p as u64 * 100 + i, 20))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let stats = wal.stats();
    assert_eq!(stats.blocks_written, 40);
    assert!(
        stats.segments_written < 40,
        "40 concurrent appends were not grouped: {} segments",
        stats.segments_written
    );
    eprintln!("azurite: 40 blocks in {} segments", stats.segments_written);
    drop(wal);

    let (wal, rec) = Wal::open(store, prefix, opts()).await.unwrap();
    assert!(rec.problems.is_empty(), "{:?}", rec.problems);
    assert_eq!(rec.blocks.len(), 40);
    for (i, b) in rec.blocks.iter().enumerate() {
        let (p, k) = ((i / 5) as u32, (i % 5) as u64);
        assert_eq!((b.partition, b.first_offset), (p, k * 20));
        assert_eq!(b.records, block(p as u64 * 100 + k, 20));
    }
    assert_eq!(
        wal.truncate(&[100; 8]).await.unwrap() as u64,
        stats.segments_written
    );
}

/// Writes one segment of three blocks of partition 0 and returns it, read back.
async fn one_segment(store: &Arc<dyn ObjectStore>, prefix: &Path, seq: u64) -> (Path, Vec<u8>) {
    let (wal, _) = Wal::open(store.clone(), prefix.clone(), opts())
        .await
        .unwrap();
    let blocks: Vec<_> = (0..3u64).map(|i| block(seq * 10 + i, 10)).collect();
    let calls = blocks
        .iter()
        .enumerate()
        .map(|(i, b)| wal.append(0, seq * 30 + i as u64 * 10, b));
    for r in futures::future::join_all(calls).await {
        r.unwrap();
    }
    assert_eq!(wal.stats().segments_written, 1);
    let path = prefix.child(segment_name(wal.epoch(), seq));
    let bytes = store.get(&path).await.unwrap().bytes().await.unwrap();
    (path, bytes.to_vec())
}

#[tokio::test]
async fn a_torn_and_a_corrupt_segment_on_azurite_are_reported_with_their_locations() {
    let Some(store) = azurite("a_torn_and_a_corrupt_segment_on_azurite_are_reported") else {
        return;
    };
    let prefix = unique_prefix("wal-damage");
    let (corrupt, mut bytes0) = one_segment(&store, &prefix, 0).await;
    let (torn, bytes1) = one_segment(&store, &prefix, 1).await;
    // Segment 0: a flipped byte in its last frame's payload. Segment 1: cut short.
    let last = bytes0.len() - 5;
    bytes0[last] ^= 0x40;
    store.put(&corrupt, bytes0.into()).await.unwrap();
    let cut = bytes1.len() - 7;
    store
        .put(&torn, bytes1[..cut].to_vec().into())
        .await
        .unwrap();

    let (wal, rec) = Wal::open(store, prefix, opts()).await.unwrap();
    assert_eq!(rec.problems.len(), 2, "{:?}", rec.problems);
    let (p0, p1) = (&rec.problems[0], &rec.problems[1]);
    assert_eq!(p0.segment, corrupt);
    assert!(matches!(p0.damage, Damage::FrameChecksum { .. }), "{p0}");
    assert_eq!((p0.blocks_read, p0.frames_lost), (2, Some(1)));
    assert_eq!(p1.segment, torn);
    assert!(matches!(p1.damage, Damage::Torn { .. }), "{p1}");
    assert_eq!(p1.bytes_unreadable + p1.position, cut as u64);
    assert!(p1.position > format::HEADER_LEN as u64);
    assert!(p1.to_string().contains(torn.as_ref()), "{p1}");
    // Two readable blocks from each; the damaged segments are kept.
    assert_eq!(rec.blocks.len(), 4);
    assert_eq!(wal.truncate(&[u64::MAX]).await.unwrap(), 0);
}

#[tokio::test]
async fn a_stalled_old_writer_on_azurite_that_appends_after_the_new_writer_truncated_is_fenced() {
    let Some(store) = azurite("a_stalled_old_writer_on_azurite_is_fenced") else {
        return;
    };
    let prefix = unique_prefix("wal-fence");
    let (a, _) = Wal::open(store.clone(), prefix.clone(), opts())
        .await
        .unwrap();
    a.append(0, 0, &block(0, 2)).await.unwrap();
    let (b, rec) = Wal::open(store.clone(), prefix.clone(), opts())
        .await
        .unwrap();
    assert_eq!(rec.blocks.len(), 1);
    b.append(0, 2, &block(1, 2)).await.unwrap();
    assert_eq!(b.truncate(&[4]).await.unwrap(), 2);
    b.append(0, 4, &block(2, 2)).await.unwrap();
    for _ in 0..2 {
        let err = a.append(0, 2, &block(9, 2)).await.unwrap_err();
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
    }
    // A segment the old writer slipped past the check is not replayed, and goes.
    let late = prefix.child(segment_name(1, 9));
    let (_, bytes) = one_segment(&store, &unique_prefix("wal-fence-late"), 0).await;
    store.put(&late, bytes.into()).await.unwrap();
    let (c, rec) = Wal::open(store, prefix, opts()).await.unwrap();
    let got: Vec<_> = rec
        .blocks
        .iter()
        .map(|b| (b.partition, b.first_offset, b.records.clone()))
        .collect();
    assert_eq!(got, [(0, 4, block(2, 2))], "only B's un-truncated block");
    assert_eq!(rec.stale, [late]);
    assert_eq!(c.truncate(&[]).await.unwrap(), 1);
}

/// Not a test: the WAL's append throughput on a local disk and on Azurite, printed.
/// `cargo test --release -p sluice-tests --test it wal::measure -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run by hand"]
async fn measure_wal_append_throughput() {
    let configs = [
        ("1 partition, 1000 x 100 B blocks", 1, 200, 1000),
        ("8 partitions, 1000 x 100 B blocks", 8, 50, 1000),
        ("8 partitions, 10000 x 100 B blocks", 8, 10, 10_000),
        (
            "2 partitions, 20000 x 100 B blocks (2 MB, a full-speed block)",
            2,
            40,
            20_000,
        ),
    ];
    let tmp = tempfile::tempdir().unwrap();
    let local: Arc<dyn ObjectStore> =
        Arc::new(object_store::local::LocalFileSystem::new_with_prefix(tmp.path()).unwrap());
    let root = Some(tmp.path().to_owned());
    let mut stores = vec![
        (
            "local disk (fsync, direct)",
            local.clone(),
            root.clone(),
            true,
        ),
        ("local disk (no fsync)", local.clone(), root, false),
        (
            "local disk through object_store (no fsync)",
            local,
            None,
            false,
        ),
    ];
    if let Some(az) = azurite("measure_wal_append_throughput") {
        stores.push(("azurite", az, None, true));
    }
    for (store_name, store, local_root, fsync) in stores {
        for (name, partitions, blocks, records) in configs {
            let cfg = bench::BenchConfig {
                partitions,
                blocks_per_partition: blocks,
                records_per_block: records,
                record_bytes: 100,
                opts: WalOptions {
                    local_root: local_root.clone(),
                    fsync,
                    ..WalOptions::default()
                },
            };
            let report = bench::append_throughput(store.clone(), unique_prefix("wal-bench"), &cfg)
                .await
                .unwrap();
            println!("{store_name}, {name}: {report}");
        }
    }
}
