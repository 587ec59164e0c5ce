//! The generator against the reference's rules: proportions, ids, times, determinism, resume.

use serde_json::Value;

use super::model::{self, FIRST_AUCTION_ID, FIRST_PERSON_ID, PROPORTION};
use super::*;

fn cfg(partitions: u32, seed: u64, rate: u64) -> NexmarkConfig {
    NexmarkConfig {
        partitions,
        seed,
        rate,
        ..NexmarkConfig::default()
    }
}

/// `n` events of `partition` from record offset `offset`, as a batch.
fn events(c: &NexmarkConfig, partition: u32, offset: u64, n: usize) -> RecordBatch {
    let mut g = EventGenerator::new(c, partition, offset);
    let mut out = RecordBatch::default();
    g.fill(&mut out, n);
    assert_eq!(g.position(), offset + n as u64);
    out
}

fn parsed(b: &RecordBatch) -> Vec<Value> {
    (0..b.len())
        .map(|i| serde_json::from_slice(b.value(i)).expect("every event is one JSON object"))
        .collect()
}

fn u(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {v}"))
}

#[test]
fn every_fifty_events_are_exactly_one_person_three_auctions_and_forty_six_bids_in_that_order() {
    let b = events(&cfg(1, 7, 0), 0, 0, 50 * 40);
    for (w, window) in parsed(&b).chunks(PROPORTION as usize).enumerate() {
        let kinds: Vec<&str> = window.iter().map(|e| e["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds[0], "person", "window {w}");
        assert!(kinds[1..4].iter().all(|k| *k == "auction"), "window {w}");
        assert!(kinds[4..].iter().all(|k| *k == "bid"), "window {w}");
        assert_eq!(kinds.len(), 50);
    }
}

#[test]
fn ids_count_up_from_1000_and_times_follow_the_rate_and_bids_name_existing_ids_or_a_few_ahead() {
    let rate = 2000;
    let b = events(&cfg(1, 3, rate), 0, 0, 50 * 200);
    let (mut persons, mut auctions) = (0u64, 0u64);
    let mut last_time = i64::MIN;
    for (n, e) in parsed(&b).iter().enumerate() {
        let n = n as u64;
        let time = u(e, "dateTime") as i64;
        assert_eq!(
            time,
            model::BASE_TIME_MS + (n * 1000 / rate) as i64,
            "event {n}"
        );
        assert_eq!(
            b.timestamp(n as usize),
            Some(time),
            "the record's timestamp is the event time"
        );
        assert!(time >= last_time, "event times never go back (event {n})");
        last_time = time;
        let key: u64 = std::str::from_utf8(b.key(n as usize).unwrap())
            .unwrap()
            .parse()
            .unwrap();
        match e["kind"].as_str().unwrap() {
            "person" => {
                assert_eq!(u(e, "id"), FIRST_PERSON_ID + persons, "event {n}");
                assert_eq!(key, u(e, "id"));
                persons += 1;
            }
            "auction" => {
                assert_eq!(u(e, "id"), FIRST_AUCTION_ID + auctions, "event {n}");
                assert_eq!(key, u(e, "id"));
                auctions += 1;
                assert!(
                    u(e, "expires") as i64 > time,
                    "an auction expires after it opens"
                );
                assert!(u(e, "reserve") >= u(e, "initialBid"));
                let seller = u(e, "seller");
                assert!((FIRST_PERSON_ID..FIRST_PERSON_ID + persons + 10).contains(&seller));
                assert!((10..15).contains(&u(e, "category")));
            }
            "bid" => {
                let auction = u(e, "auction");
                assert_eq!(key, auction);
                assert!(auction >= FIRST_AUCTION_ID && auction < FIRST_AUCTION_ID + auctions + 10);
                assert!(
                    auction + 100 + 1 >= FIRST_AUCTION_ID + auctions,
                    "in flight: {e}"
                );
                let bidder = u(e, "bidder");
                assert!(bidder >= FIRST_PERSON_ID && bidder < FIRST_PERSON_ID + persons + 10);
                assert!((100..=100_000_000).contains(&u(e, "price")), "{e}");
                assert!(
                    e["url"]
                        .as_str()
                        .unwrap()
                        .starts_with("https://www.nexmark.com/")
                );
                assert!(!e["channel"].as_str().unwrap().is_empty());
            }
            other => panic!("unknown kind {other}"),
        }
    }
    assert_eq!((persons, auctions), (200, 600));
}

#[test]
fn hot_auctions_and_bidders_take_most_bids_as_in_the_reference() {
    let b = events(&cfg(1, 11, 0), 0, 0, 50 * 400);
    let bids: Vec<Value> = parsed(&b)
        .into_iter()
        .filter(|e| e["kind"] == "bid")
        .collect();
    // Half the bids go to the hot auction of the latest batch of 100, a quarter of bidders are
    // random: with 18,400 bids the shares are well inside these bounds.
    let hot = |field: &str, off: u64| {
        bids.iter()
            .filter(|e| (u(e, field) - 1000) % 100 == off)
            .count() as f64
            / bids.len() as f64
    };
    assert!(
        (0.45..0.6).contains(&hot("auction", 0)),
        "{}",
        hot("auction", 0)
    );
    assert!(
        (0.7..0.85).contains(&hot("bidder", 1)),
        "{}",
        hot("bidder", 1)
    );
}

#[test]
fn the_same_seed_gives_the_same_events_and_another_seed_others() {
    let a = events(&cfg(1, 42, 0), 0, 0, 500);
    let b = events(&cfg(1, 42, 0), 0, 0, 500);
    let c = events(&cfg(1, 43, 0), 0, 0, 500);
    assert_eq!(a, b);
    assert_ne!(a.values, c.values);
    assert_eq!(
        a.timestamps, c.timestamps,
        "times depend on the number, not the seed"
    );
}

#[test]
fn resuming_at_a_position_gives_the_same_continuation() {
    let c = cfg(3, 5, 1000);
    for p in 0..3 {
        let whole = events(&c, p, 0, 700);
        let mut g = EventGenerator::new(&c, p, 0);
        let mut first = RecordBatch::default();
        g.fill(&mut first, 123);
        // A restart: a new generator at the position the first one reached.
        let mut resumed = EventGenerator::new(&c, p, g.position());
        let mut rest = RecordBatch::default();
        resumed.fill(&mut rest, 700 - 123);
        first.append(&rest);
        assert_eq!(first, whole, "partition {p}");
    }
}

#[test]
fn partitions_deal_out_the_event_numbers_and_together_make_the_one_partition_stream() {
    let one = events(&cfg(1, 9, 0), 0, 0, 300);
    let c = cfg(4, 9, 0);
    for p in 0..4 {
        let part = events(&c, p, 0, 75);
        for k in 0..75 {
            assert_eq!(
                part.value(k),
                one.value(k * 4 + p as usize),
                "partition {p} offset {k}"
            );
        }
    }
    let c = NexmarkConfig {
        events: Some(10),
        ..c
    };
    let counts: Vec<u64> = (0..4).map(|p| c.partition_events(p).unwrap()).collect();
    assert_eq!(counts, [3, 3, 2, 2]);
}

#[test]
fn the_extra_field_pads_each_kind_to_the_references_average_size() {
    let b = events(&cfg(1, 4, 0), 0, 0, 50 * 200);
    let mean = |kind: &str| {
        let extras: Vec<usize> = parsed(&b)
            .iter()
            .filter(|e| e["kind"] == kind)
            .map(|e| e["extra"].as_str().unwrap().len())
            .collect();
        extras.iter().sum::<usize>() as f64 / extras.len() as f64
    };
    // Bids: 100 bytes on average, of which the reference counts 32 for its four numbers.
    assert!((64.0..72.0).contains(&mean("bid")), "{}", mean("bid"));
    // Auctions (500) and persons (200) less their strings and numbers.
    assert!(
        (380.0..440.0).contains(&mean("auction")),
        "{}",
        mean("auction")
    );
    assert!(
        (110.0..150.0).contains(&mean("person")),
        "{}",
        mean("person")
    );
}
