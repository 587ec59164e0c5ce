use std::time::Duration;

use super::*;

fn records(ids: &[&str]) -> RecordBatch {
    let mut out = RecordBatch::default();
    for id in ids {
        let headers: &[(&[u8], &[u8])] = if id.is_empty() {
            &[]
        } else {
            &[(ID_HEADER, id.as_bytes())]
        };
        out.push_with_headers(None, id.as_bytes(), Some(0), headers);
    }
    out
}

fn hash(id: &str) -> IdHash {
    id_of(&records(&[id]), 0).unwrap()
}

fn settings(window_ms: u64, max_ids: usize) -> Settings {
    Settings {
        window: Duration::from_millis(window_ms),
        max_ids,
    }
}

#[test]
fn the_window_forgets_ids_past_its_age_and_the_oldest_past_its_size() {
    let mut w = Window::new(settings(1000, 3));
    for (i, id) in ["a", "b", "c", "d"].iter().enumerate() {
        assert!(w.insert(hash(id), i as i64 * 100));
    }
    assert!(
        !w.insert(hash("a"), 400),
        "an id already there is not added again"
    );
    w.evict(400);
    assert!(!w.contains(&hash("a")) && w.contains(&hash("b")) && w.len() == 3);
    w.evict(1150);
    assert!(
        !w.contains(&hash("b")) && w.contains(&hash("c")),
        "b is 1050 ms old, c 950"
    );
    w.evict(10_000);
    assert!(w.is_empty());
}

#[test]
fn a_record_without_a_message_id_has_no_id() {
    let r = records(&["", "m-1"]);
    assert_eq!(id_of(&r, 0), None);
    assert_eq!(id_of(&r, 1), Some(hash("m-1")));
    assert_ne!(hash("m-1"), hash("m-2"));
}

#[test]
fn the_filter_drops_ids_in_the_window_and_repeated_in_a_chunk_and_counts_them() {
    let f = Filter::new(Detection::ById(settings(60_000, 100)), None);
    assert!(f.sift(&records(&["a", "b", ""]), 0).is_empty());
    assert_eq!(f.sift(&records(&["c", "a", "", "c", "d"]), 10), [1, 3]);
    f.replayed(&records(&["e"]), 20);
    assert_eq!(f.sift(&records(&["e", "f"]), 30), [0]);
    f.redelivered(2);
    assert_eq!(
        f.take_counts(),
        Counts {
            redeliveries: 2,
            duplicates: 3
        }
    );
    assert_eq!(
        f.take_counts(),
        Counts::default(),
        "the counts restart at 0"
    );
    let counting = Filter::new(Detection::Count, None);
    assert!(counting.sift(&records(&["a", "a"]), 0).is_empty());
}

#[test]
fn a_window_rebuilt_from_deltas_and_snapshots_equals_the_recorded_one() {
    // Small bounds so that both the age and the size evict along the way.
    let s = settings(5_000, 50);
    let mut rec = Recorder::new(Window::new(s));
    let mut chain: Vec<(i64, SeenIds)> = Vec::new();
    for batch in 0..40i64 {
        let ids: Vec<String> = (0..(batch % 7) * 5)
            .map(|k| format!("m-{}", (batch * 13 + k) % 150))
            .collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        rec.note(&records(&refs));
        let time = batch * 400;
        chain.push((time, rec.record(time, batch % 8 == 0)));
        // Rebuilt from the last snapshot on, as recovery reads the log.
        let from = chain.iter().rposition(|(_, s)| s.full).unwrap();
        let rebuilt = Window::rebuild(s, chain[from..].iter().map(|(t, s)| (*t, Some(s)))).unwrap();
        assert_eq!(
            rebuilt.order,
            rec.window().order,
            "batch {batch}: the rebuilt window differs"
        );
    }
    assert!(rec.window().len() <= 50);
}

#[test]
fn a_recomputed_batch_adds_nothing_to_the_next_delta() {
    let mut rec = Recorder::new(Window::new(Settings::default()));
    rec.note(&records(&["a"]));
    rec.record(0, false);
    rec.note(&records(&["a", "b"]));
    rec.discard();
    let next = rec.record(1, false);
    assert!(next.groups.is_empty(), "{next:?}");
}

#[test]
fn damaged_recorded_ids_are_an_error_with_their_batch_time() {
    let bad = SeenIds {
        full: false,
        groups: vec![IdGroup {
            time_ms: 77,
            ids: "AAAA".into(),
        }],
    };
    let e = Window::rebuild(Settings::default(), [(77, Some(&bad))]).unwrap_err();
    assert!(e.to_string().contains("77"), "{e}");
}
