use super::*;
use crate::config::event_window::{EventWindowSpec, Shape, TimeSource};

fn spec(shape: Shape, aggregate: Aggregate, lateness: i64) -> EventWindowSpec {
    EventWindowSpec {
        shape,
        aggregate,
        allowed_lateness: lateness,
        early_updates: false,
        time: TimeSource::Timestamp,
        top: None,
        partitions: Some(1),
        snapshot_every: 3,
    }
}

/// Records (key, value, event time).
fn records(rs: &[(&str, &str, i64)]) -> RecordBatch {
    let mut b = RecordBatch::default();
    for (k, v, t) in rs {
        b.push(Some(k.as_bytes()), v.as_bytes(), Some(*t));
    }
    b
}

/// Runs batch `id` through `op`: its rows as `key start end value`, and the rejected indices
/// with their reasons.
fn batch(op: &EventWindowOp, id: u64, input: &RecordBatch) -> (Vec<String>, Vec<(usize, String)>) {
    let mut partial = Partial::default();
    // Two blocks, merged, as the scheduler does.
    let clock = op.clock(id);
    let half = input.len() / 2;
    let (a, b) = (
        input.gather(&(0..half as u32).collect::<Vec<_>>()),
        input.gather(&(half as u32..input.len() as u32).collect::<Vec<_>>()),
    );
    let mut rejected = Vec::new();
    for (offset, block) in [(0, a), (half, b)] {
        let mut local = Partial::default();
        rejected.extend(
            op.combine(&clock, 0, &block, &mut local)
                .into_iter()
                .map(|(i, r)| (i + offset, r)),
        );
        op.merge(&mut partial, local);
    }
    (rows(&op.apply_combined(id, partial, 1).out), rejected)
}

fn rows(out: &[RecordBatch]) -> Vec<String> {
    out.iter()
        .flat_map(|b| {
            (0..b.len()).map(move |i| {
                let v: serde_json::Value = serde_json::from_slice(b.value(i)).unwrap();
                assert_eq!(b.timestamp(i), v["end"].as_i64().map(|e| e - 1));
                format!(
                    "{} {} {} {}{}",
                    String::from_utf8_lossy(b.key(i).unwrap_or_default()),
                    v["start"],
                    v["end"],
                    v["value"],
                    if v["early"] == true { " early" } else { "" }
                )
            })
        })
        .collect()
}

#[test]
fn tumbling_windows_close_at_the_watermark_and_a_late_record_is_rejected_with_its_lateness() {
    let op = EventWindowOp::new(0, spec(Shape::Tumbling { length: 10 }, Aggregate::Sum, 5));
    // Out of order within the batch; max 24 → watermark 19 closes [0, 10).
    let (out, bad) = batch(
        &op,
        0,
        &records(&[("a", "1", 12), ("a", "2", 3), ("b", "5", 24), ("a", "4", 9)]),
    );
    assert_eq!(out, ["a 0 10 6"]);
    assert!(bad.is_empty());
    // 15 is on time ([10, 20) is open at watermark 19); 7 is late: [0, 10) closed.
    let (out, bad) = batch(
        &op,
        1,
        &records(&[("a", "10", 15), ("a", "100", 7), ("b", "1", 40)]),
    );
    assert_eq!(out, ["a 10 20 11", "b 20 30 5"]);
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].0, 1);
    assert!(
        bad[0].1.starts_with("late by 17 ms")
            && bad[0].1.contains("[0, 10) closed at watermark 19"),
        "{}",
        bad[0].1
    );
}

#[test]
fn a_sliding_window_holds_a_record_in_each_window_and_top_keeps_the_largest_with_ties() {
    let mut s = spec(
        Shape::Sliding {
            length: 10,
            slide: 5,
        },
        Aggregate::Count,
        0,
    );
    s.top = Some(1);
    let op = EventWindowOp::new(0, s);
    let (out, _) = batch(
        &op,
        0,
        &records(&[
            ("a", "", 7),
            ("b", "", 8),
            ("b", "", 12),
            ("a", "", 3),
            ("c", "", 30),
        ]),
    );
    // Windows [-5, 5): a; [0, 10): a a b → a; [5, 15): a b b → b; [10, 20): b; all closed at 30.
    assert_eq!(out, ["a -5 5 1", "a 0 10 2", "b 5 15 2", "b 10 20 1"]);
    let (out, _) = batch(
        &op,
        1,
        &records(&[("d", "", 31), ("e", "", 33), ("f", "", 50)]),
    );
    // [25, 35): c d e tie at 1; [30, 40): c d e; [35, 45): none.
    assert_eq!(
        out,
        [
            "c 25 35 1",
            "d 25 35 1",
            "e 25 35 1",
            "c 30 40 1",
            "d 30 40 1",
            "e 30 40 1"
        ]
    );
}

#[test]
fn sessions_merge_records_within_the_gap_and_close_after_it() {
    let op = EventWindowOp::new(0, spec(Shape::Session { gap: 10 }, Aggregate::Count, 0));
    let (out, _) = batch(
        &op,
        0,
        &records(&[("a", "", 1), ("a", "", 25), ("a", "", 8)]),
    );
    // Watermark 25: a's session [1, 18) closed; [25, 35) open.
    assert_eq!(out, ["a 1 18 2"]);
    // 16 joins nothing closed... it is late: 16 + 10 ≤ 25. 30 joins [25, 35); 44 bridges nothing.
    let (out, bad) = batch(
        &op,
        1,
        &records(&[("a", "", 14), ("a", "", 30), ("b", "", 60)]),
    );
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert_eq!(out, ["a 25 40 2"]);
    // Two sessions of one key bridged by a record between them (kept open by the lateness).
    let op = EventWindowOp::new(0, spec(Shape::Session { gap: 10 }, Aggregate::Count, 50));
    batch(&op, 0, &records(&[("a", "", 100), ("a", "", 115)]));
    let (out, _) = batch(&op, 1, &records(&[("a", "", 108), ("z", "", 200)]));
    assert_eq!(out, ["a 100 125 3"]);
}

#[test]
fn early_updates_show_open_windows_and_a_rerun_batch_counts_once() {
    let mut s = spec(Shape::Tumbling { length: 10 }, Aggregate::Count, 100);
    s.early_updates = true;
    let op = EventWindowOp::new(0, s);
    let (out, _) = batch(&op, 0, &records(&[("a", "", 1), ("a", "", 2)]));
    assert_eq!(out, ["a 0 10 2 early"]);
    let (first, _) = batch(&op, 1, &records(&[("a", "", 3)]));
    let (again, _) = batch(&op, 1, &records(&[("a", "", 3)]));
    assert_eq!(first, ["a 0 10 3 early"]);
    assert_eq!(
        again, first,
        "the rerun starts from the state before batch 1"
    );
}

#[test]
fn whole_state_and_changes_read_back_give_the_same_windows() {
    for shape in [
        Shape::Tumbling { length: 10 },
        Shape::Sliding {
            length: 10,
            slide: 5,
        },
        Shape::Session { gap: 6 },
    ] {
        let op = EventWindowOp::new(0, spec(shape, Aggregate::Max, 3));
        let inputs: Vec<RecordBatch> = (0..6)
            .map(|b| {
                records(&[
                    ("a", &format!("{}", b * 7 % 5), b * 9),
                    ("b", "4", b * 9 + 2),
                    ("a", "9", b * 9 - 4),
                ])
            })
            .collect();
        let mut saved = Vec::new();
        let mut outs = Vec::new();
        for (id, input) in inputs.iter().enumerate() {
            let clock = op.clock(id as u64);
            let mut p = Partial::default();
            op.combine(&clock, (id % 2) as u32, input, &mut p);
            let a = op.apply_combined(id as u64, p, 1);
            outs.push(rows(&a.out));
            saved.push((a.whole, a.contribution));
        }
        // Whole state at batch 3, then batch 4's changes; batch 5 must come out the same.
        let back = EventWindowOp::new(0, spec(shape, Aggregate::Max, 3));
        back.restore_whole(saved[3].0.as_ref().unwrap()).unwrap();
        back.restore_changes(&saved[4].1).unwrap();
        assert_eq!(back.clock(5), op.clock(5), "{shape:?}");
        let mut p = Partial::default();
        back.combine(&back.clock(5), 1, &inputs[5], &mut p);
        assert_eq!(
            rows(&back.apply_combined(5, p, 1).out),
            outs[5],
            "{shape:?}"
        );
        assert!(!outs.concat().is_empty());
    }
}

#[test]
fn an_event_time_field_is_read_as_ms_or_rfc_3339_and_its_absence_is_named() {
    let mut s = spec(Shape::Tumbling { length: 1000 }, Aggregate::Count, 0);
    s.time = TimeSource::Field("ts".into());
    let op = EventWindowOp::new(0, s);
    let mut b = RecordBatch::default();
    for v in [
        r#"{"ts":1500}"#,
        r#"{"ts":"1970-01-01T00:00:02.5Z"}"#,
        r#"{"x":1}"#,
        r#"{"ts":"soon"}"#,
        "nope",
    ] {
        b.push(None, v.as_bytes(), None);
    }
    let mut p = Partial::default();
    let bad = op.combine(&op.clock(0), 0, &b, &mut p);
    let reasons: Vec<&str> = bad.iter().map(|(_, r)| r.as_str()).collect();
    assert_eq!(bad.iter().map(|b| b.0).collect::<Vec<_>>(), [2, 3, 4]);
    assert!(
        reasons[0].contains("no event time field `ts`"),
        "{reasons:?}"
    );
    assert!(reasons[1].contains("neither ms"), "{reasons:?}");
    assert!(reasons[2].contains("not a JSON object"), "{reasons:?}");
    assert_eq!(parse_time(b"1970-01-01T00:00:02.5Z"), Some(2500));
}

#[test]
fn the_watermark_follows_the_slowest_source_partition() {
    let op = EventWindowOp::new(0, spec(Shape::Tumbling { length: 10 }, Aggregate::Count, 0));
    let mut p = Partial::default();
    op.combine(&op.clock(0), 0, &records(&[("a", "", 95)]), &mut p);
    let mut q = Partial::default();
    op.combine(&op.clock(0), 1, &records(&[("a", "", 12)]), &mut q);
    op.merge(&mut p, q);
    assert!(
        rows(&op.apply_combined(0, p, 1).out).is_empty(),
        "watermark 12, not 95"
    );
    // Partition 1 is at 12: the watermark is 12, so 15 is on time and 3 late; partition 1
    // reaching 25 closes [10, 20).
    let mut p = Partial::default();
    let bad = op.combine(
        &op.clock(1),
        1,
        &records(&[("a", "", 15), ("a", "", 3), ("b", "", 25)]),
        &mut p,
    );
    assert_eq!(bad.iter().map(|b| b.0).collect::<Vec<_>>(), [1]);
    assert_eq!(rows(&op.apply_combined(1, p, 1).out), ["a 10 20 2"]);
}
