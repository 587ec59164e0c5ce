//! The block manager's tests.
use super::*;

fn chunk(values: &[&str]) -> RecordBatch {
    RecordBatch::from_values(values.iter().map(|v| v.as_bytes()))
}

fn drain(rx: &mut mpsc::UnboundedReceiver<Cut>) -> Vec<Cut> {
    std::iter::from_fn(|| rx.try_recv().ok()).collect()
}

fn block(c: &Cut) -> &Block {
    match c {
        Cut::Block(b) => b,
        Cut::Close { .. } => panic!("expected a block, got {c:?}"),
    }
}

#[tokio::test]
async fn blocks_are_cut_per_interval_in_order_and_a_close_follows_its_blocks() {
    let (m, mut rx) = BlockManager::new(2, 1 << 20, 1 << 20);
    assert_eq!(m.append(0, &chunk(&["a", "b"])).await, 0..2);
    m.cut_blocks(1);
    assert_eq!(m.append(0, &chunk(&["c"])).await, 2..3);
    m.append(1, &chunk(&["x"])).await;
    m.close_batch(0, 2);
    let cuts = drain(&mut rx);
    assert_eq!(cuts.len(), 4, "{cuts:?}");
    let (b0, b1, b2) = (block(&cuts[0]), block(&cuts[1]), block(&cuts[2]));
    assert_eq!((b0.id.partition, b0.id.seq, b0.first_offset), (0, 0, 0));
    assert_eq!(b0.records.len(), 2);
    assert_eq!((b1.id.partition, b1.id.seq, b1.first_offset), (0, 1, 2));
    assert_eq!(b2.id.partition, 1);
    assert!(matches!(cuts[3], Cut::Close { id: 0, .. }));
    // Offsets and block numbers continue across batches.
    m.append(0, &chunk(&["d"])).await;
    m.close_batch(1, 3);
    let cuts = drain(&mut rx);
    assert_eq!(block(&cuts[0]).first_offset, 3);
    assert_eq!(block(&cuts[0]).id.seq, 2);
}

fn note(object: &str) -> SetAside {
    SetAside {
        origin: crate::batch::aside::Origin::File {
            file: "f".into(),
            offset: 0,
        },
        length: 1,
        limit: 1,
        object: object.into(),
        preview: Vec::new(),
        timestamp: 0,
        offset: 0,
    }
}

#[tokio::test]
async fn a_record_set_aside_travels_with_the_next_block_even_one_without_records() {
    let (m, mut rx) = BlockManager::new(1, 1 << 20, 1 << 20);
    m.append(0, &chunk(&["a", "b"])).await;
    m.set_aside(0, note("x"), None, false).await;
    m.append(0, &chunk(&["c"])).await;
    m.cut_blocks(1);
    m.set_aside(0, note("y"), None, false).await;
    assert!(m.has_pending(), "a note waits to be cut");
    m.close_batch(0, 2);
    let cuts = drain(&mut rx);
    assert_eq!(cuts.len(), 3, "{cuts:?}");
    let (b0, b1) = (block(&cuts[0]), block(&cuts[1]));
    assert_eq!(b0.records.len(), 3);
    assert_eq!(b0.aside.len(), 1);
    assert_eq!((b0.aside[0].object.as_str(), b0.aside[0].offset), ("x", 2));
    assert!(b1.records.is_empty(), "a block of only a note");
    assert_eq!((b1.aside[0].object.as_str(), b1.aside[0].offset), ("y", 3));
    assert_eq!(b1.bytes, 0);
    m.append(0, &chunk(&["d"])).await;
    m.close_batch(1, 3);
    assert_eq!(
        block(&drain(&mut rx)[0]).first_offset,
        3,
        "a note takes no offset"
    );
}

#[tokio::test]
async fn a_block_is_cut_before_it_would_pass_its_size_and_once_it_is_full() {
    let (m, mut rx) = BlockManager::new(1, 1 << 20, 100);
    let sixty = RecordBatch::from_values([&[0u8; 60][..]]);
    m.append(0, &sixty).await;
    assert!(drain(&mut rx).is_empty());
    m.append(0, &sixty).await;
    let cuts = drain(&mut rx);
    assert_eq!(
        cuts.len(),
        1,
        "the first record's block is cut before the second joins it"
    );
    assert_eq!(block(&cuts[0]).records.len(), 1);
    let big = RecordBatch::from_values([&[0u8; 60][..], &[0u8; 60][..]]);
    m.append(0, &big).await;
    let cuts = drain(&mut rx);
    assert_eq!(
        cuts.len(),
        2,
        "the one record waiting is cut, then the full new block"
    );
    assert_eq!(block(&cuts[1]).records.len(), 2);
}

#[tokio::test]
async fn appends_move_the_durable_watermark() {
    let (m, _rx) = BlockManager::new(1, 1 << 20, 1 << 20);
    let durable = m.durable(0);
    m.append(0, &chunk(&["a", "b", "c"])).await;
    assert_eq!(*durable.borrow(), 3);
}

#[tokio::test]
async fn a_full_budget_makes_appends_wait_until_a_block_is_released() {
    let (m, mut rx) = BlockManager::new(1, 64 << 10, 1 << 20);
    let m = std::sync::Arc::new(m);
    let big = RecordBatch::from_values([&[0u8; 40 << 10][..]]);
    m.append(0, &big).await;
    let m2 = m.clone();
    let waiter = tokio::spawn(async move {
        m2.append(0, &RecordBatch::from_values([&[0u8; 40 << 10][..]]))
            .await;
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiter.is_finished(), "the second append waits for room");
    assert_eq!(m.backpressure_waits(), 1);
    m.cut_blocks(0);
    let cuts = drain(&mut rx);
    m.release(block(&cuts[0]).bytes);
    tokio::time::timeout(Duration::from_secs(2), waiter)
        .await
        .expect("released room lets it in")
        .unwrap();
    // Admission is checked before the append: the budget may be passed by one chunk.
    assert!(m.used() <= (64 + 40) << 10, "{} bytes held", m.used());
}

#[tokio::test]
async fn a_replay_fence_cuts_the_batch_at_its_recorded_end_and_holds_the_partition_there() {
    let (m, mut rx) = BlockManager::new(2, 1 << 20, 1 << 20);
    let m = std::sync::Arc::new(m);
    m.resume(0, 10);
    m.resume(1, 4);
    m.fence(&[13, 4]);
    assert_eq!(m.fence_reached(), Some(false));
    // A chunk crossing the fence is split there: 10..13 is the batch's, 13..15 the next.
    assert_eq!(
        m.append(0, &chunk(&["a", "b", "c", "d", "e"])).await,
        10..15
    );
    assert_eq!(m.fence_reached(), Some(true), "partition 1 needs nothing");
    let m2 = m.clone();
    let held = tokio::spawn(async move { m2.append(0, &chunk(&["f"])).await });
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert!(
        !held.is_finished(),
        "a partition at its fence takes no more records"
    );
    m.close_batch(9, 0);
    assert_eq!(
        held.await.unwrap(),
        15..16,
        "the fence is lifted by the close"
    );
    m.close_batch(10, 0);
    let cuts = drain(&mut rx);
    let b = block(&cuts[0]);
    assert_eq!((b.first_offset, b.records.len()), (10, 3));
    assert!(matches!(cuts[1], Cut::Close { id: 9, .. }));
    let rest = block(&cuts[2]);
    assert_eq!((rest.first_offset, rest.records.len()), (13, 3));
    assert_eq!(rest.records.value(0), b"d");
    assert_eq!(m.fence_reached(), None);
}

#[tokio::test]
async fn a_block_interval_cut_during_a_replay_stops_at_the_fence_and_the_rest_go_to_the_next_batch()
{
    let (m, mut rx) = BlockManager::new(1, 1 << 20, 1 << 20);
    m.resume(0, 10);
    m.fence(&[13]);
    m.append(0, &chunk(&["a", "b", "c", "d", "e"])).await;
    m.cut_blocks(0);
    m.cut_blocks(0);
    m.close_batch(9, 0);
    m.cut_blocks(0);
    let cuts = drain(&mut rx);
    assert_eq!(
        cuts.len(),
        3,
        "the batch's block, its close, the next batch's block"
    );
    let b = block(&cuts[0]);
    assert_eq!((b.first_offset, b.records.len()), (10, 3));
    assert!(matches!(cuts[1], Cut::Close { id: 9, .. }));
    let rest = block(&cuts[2]);
    assert_eq!((rest.first_offset, rest.records.len()), (13, 2));
}

/// The batch each block of `cuts` lands in: the id of the first close after it.
fn batches_of_blocks(cuts: &[Cut], partition: u32) -> Vec<u64> {
    let mut landed = Vec::new();
    let mut waiting = 0;
    for c in cuts {
        match c {
            Cut::Block(b) if b.id.partition == partition => waiting += 1,
            Cut::Block(_) => {}
            Cut::Close { id, .. } => {
                landed.extend(std::iter::repeat_n(*id, waiting));
                waiting = 0;
            }
        }
    }
    assert_eq!(waiting, 0, "every block is followed by a close");
    landed
}

#[tokio::test]
async fn a_partition_cut_on_its_own_names_a_batch_its_records_cannot_come_after() {
    let (m, mut rx) = BlockManager::new(2, 1 << 20, 1 << 20);
    m.append(0, &chunk(&["a"])).await;
    m.close_batch(7, 1);
    // The batch loop lags: closes 8 and 9 are out before the receiver of 0 is seen stopped.
    m.append(0, &chunk(&["b"])).await;
    m.close_batch(8, 2);
    m.append(0, &chunk(&["c"])).await;
    m.close_batch(9, 3);
    m.append(0, &chunk(&["d", "e"])).await;
    let bound = m.cut_partition(0);
    assert_eq!(
        bound, 10,
        "the records after close 9 go to batch 10 at the latest"
    );
    m.append(1, &chunk(&["x"])).await;
    m.close_batch(10, 4);
    m.close_batch(11, 5);
    let landed = batches_of_blocks(&drain(&mut rx), 0);
    assert_eq!(landed, vec![7, 8, 9, 10]);
    assert!(landed.iter().all(|&b| b <= bound));
    // Nothing was left in the buffer for a later batch.
    assert_eq!(m.cut_partition(0), 12);
    assert!(
        drain(&mut rx).is_empty(),
        "an empty partition cuts no block"
    );
}
