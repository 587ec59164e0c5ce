use std::path::Path;

use super::read::{Claim, Letter, Store, parse_file};
use super::show::{Counts, value_text};
use super::{DeadLetterError, Filter};
use crate::block::BlockManager;
use crate::store::Location;

fn line(batch: u64, partition: u32, offset: u64, plugin: &str, value: &str) -> String {
    serde_json::json!({
        "stream": "input", "batch": batch, "partition": partition, "offset": offset,
        "step": 0, "plugin": plugin, "digest": "ab", "reason": "fixture: the value is `bad`",
        "key": null, "timestamp": 5, "value": value,
    })
    .to_string()
}

fn file(name: &str, lines: &[String]) -> super::read::LetterFile {
    parse_file(name, name, &lines.join("\n")).unwrap()
}

#[test]
fn a_letter_with_value_base64_is_decoded_to_its_bytes() {
    let text =
        r#"{"batch":3,"partition":1,"offset":7,"plugin":"p","reason":"r","value_base64":"/wA="}"#;
    let l = Letter::parse("batch-0000000003.jsonl", 1, text).unwrap();
    assert_eq!(l.value.as_deref(), Some(&b"\xff\x00"[..]));
    assert_eq!((l.batch, l.partition, l.offset, l.step), (3, 1, 7, None));
}

#[test]
fn a_malformed_line_names_the_file_the_line_and_what_is_missing() {
    let lines = [
        line(1, 0, 0, "p", "a"),
        r#"{"batch":1,"offset":2,"reason":"r"}"#.into(),
    ];
    let e = parse_file(
        "batch-1.jsonl",
        "/dl/input/batch-1.jsonl",
        &lines.join("\n"),
    )
    .unwrap_err();
    assert!(
        matches!(e, DeadLetterError::Malformed { line: 2, .. }),
        "{e}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("/dl/input/batch-1.jsonl line 2") && msg.contains("`partition`"),
        "{msg}"
    );
    let e = parse_file("b", "b", "not json").unwrap_err();
    assert!(
        e.to_string()
            .contains("line 1: not a dead letter: not a JSON object"),
        "{e}"
    );
    let e = parse_file(
        "b",
        "b",
        r#"{"batch":1,"partition":0,"offset":0,"reason":"r","value_base64":"!!"}"#,
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("`value_base64` is not base64"),
        "{e}"
    );
}

#[test]
fn a_letters_id_does_not_depend_on_its_line_and_twins_get_distinct_ids() {
    let a = line(1, 0, 4, "p", "x");
    let b = line(1, 1, 9, "p", "y");
    let one = file("batch-0000000001.jsonl", &[a.clone(), b.clone()]);
    let two = file("batch-0000000001.jsonl", &[b, a.clone()]);
    assert_eq!(one.letters[0].id, two.letters[1].id);
    assert_eq!(one.letters[1].id, two.letters[0].id);
    assert_ne!(one.letters[0].id, one.letters[1].id);
    assert!(
        one.letters[0].id.starts_with("batch-0000000001/p0-o4-"),
        "{}",
        one.letters[0].id
    );
    let twins = file("batch-0000000001.jsonl", &[a.clone(), a]);
    assert_ne!(twins.letters[0].id, twins.letters[1].id);
    assert_eq!(one.batch, Some(1));
}

#[test]
fn the_filter_takes_batch_step_and_partition_together_and_stops_at_the_limit() {
    let files = [
        file(
            "batch-0000000001.jsonl",
            &[line(1, 0, 0, "p", "a"), line(1, 1, 1, "q", "b")],
        ),
        file(
            "batch-0000000002.jsonl",
            &[line(2, 0, 5, "p", "c"), line(2, 0, 6, "p", "d")],
        ),
    ];
    let values = |f: &Filter| -> Vec<String> {
        f.select(&files)
            .iter()
            .map(|l| String::from_utf8(l.value.clone().unwrap()).unwrap())
            .collect()
    };
    assert_eq!(values(&Filter::default()), ["a", "b", "c", "d"]);
    let by_step = Filter {
        step: Some("p".into()),
        ..Default::default()
    };
    assert_eq!(values(&by_step), ["a", "c", "d"]);
    let narrow = Filter {
        batch: Some(2),
        partition: Some(0),
        limit: Some(1),
        ..Default::default()
    };
    assert_eq!(values(&narrow), ["c"]);
    let none = Filter {
        partition: Some(1),
        batch: Some(2),
        ..Default::default()
    };
    assert!(values(&none).is_empty());
}

#[test]
fn counts_group_by_step_and_by_failure_or_reason() {
    let mut poison = Letter::parse("f", 1, &line(1, 0, 0, "panic", "x")).unwrap();
    poison.failure = Some("panicked".into());
    let f = file("f", &[line(1, 0, 1, "p", "a"), line(1, 0, 2, "p", "b")]);
    let counts = Counts::of(f.letters.iter().chain([&poison]));
    assert_eq!(
        counts.text(),
        "p: 2 × fixture: the value is `bad`; panic: 1 × panicked"
    );
}

#[test]
fn a_value_is_shown_as_text_when_utf8_and_escaped_with_base64_when_not() {
    assert_eq!(
        value_text(Some(b"a\nb")),
        "  value (3 bytes, text): \"a\\nb\"\n"
    );
    let shown = value_text(Some(b"\xffA"));
    assert!(
        shown.contains("\"\\xffA\"") && shown.contains("value_base64: /0E="),
        "{shown}"
    );
    assert!(value_text(None).contains("cannot be replayed"));
}

#[test]
fn consecutive_offsets_of_a_partition_become_one_block_and_gaps_start_another() {
    let f = file(
        "f",
        &[
            line(1, 0, 5, "p", "b"),
            line(1, 0, 4, "p", "a"),
            line(1, 0, 9, "p", "c"),
            line(1, 1, 10, "p", "d"),
        ],
    );
    let letters: Vec<&Letter> = f.letters.iter().collect();
    let (manager, _cuts) = BlockManager::new(2, u64::MAX, 1 << 20);
    let blocks = super::replay::blocks_of(&letters, &manager);
    let shape: Vec<(u32, u64, Vec<&[u8]>)> = blocks
        .iter()
        .map(|b| {
            let values = (0..b.records.len()).map(|i| b.records.value(i)).collect();
            (b.id.partition, b.first_offset, values)
        })
        .collect();
    assert_eq!(
        shape,
        vec![
            (0, 4, vec![&b"a"[..], b"b"]),
            (0, 9, vec![&b"c"[..]]),
            (1, 10, vec![&b"d"[..]]),
        ]
    );
}

fn local_store(dir: &Path) -> Store {
    Store::new(
        Location::resolve(
            dir.to_str().unwrap(),
            "dead-letter.path",
            Path::new("/"),
            true,
        )
        .unwrap(),
        "input",
    )
}

#[test]
fn the_store_reads_batch_and_replay_files_and_a_letter_is_claimed_once() {
    let tmp = tempfile::tempdir().unwrap();
    let stream = tmp.path().join("input");
    std::fs::create_dir_all(stream.join("replay-000001")).unwrap();
    std::fs::create_dir_all(stream.join("_replays")).unwrap();
    std::fs::write(
        stream.join("batch-0000000002.jsonl"),
        line(2, 0, 1, "p", "a") + "\n",
    )
    .unwrap();
    std::fs::write(
        stream.join("replay-000001/batch-0000000000.jsonl"),
        line(0, 0, 1, "p", "a"),
    )
    .unwrap();
    std::fs::write(stream.join("_replays/replay-000001.json"), "{}").unwrap();
    std::fs::write(stream.join("notes.txt"), "not a letter").unwrap();
    let store = local_store(tmp.path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let files = store.files().await.unwrap();
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "batch-0000000002.jsonl",
                "replay-000001/batch-0000000000.jsonl"
            ]
        );
        let letter = &files[0].letters[0];
        assert!(store.replayed().await.unwrap().is_empty());
        let name = store.begin(&serde_json::json!({})).await.unwrap();
        assert_eq!(name, "replay-000002", "one past the highest replay there");
        assert_eq!(
            store.claim(letter, &name, false).await.unwrap(),
            Claim::Claimed
        );
        assert_eq!(
            store.claim(letter, "replay-000003", false).await.unwrap(),
            Claim::Taken("replay-000002".into())
        );
        assert_eq!(
            store.claim(letter, "replay-000003", true).await.unwrap(),
            Claim::Claimed
        );
        let marks = store.replayed().await.unwrap();
        assert_eq!(
            marks.get(&letter.id).map(String::as_str),
            Some("replay-000003")
        );
        store.release(letter).await;
        assert!(store.replayed().await.unwrap().is_empty());
        assert_eq!(
            store.files().await.unwrap().len(),
            2,
            "markers are not letters"
        );
    });
}
