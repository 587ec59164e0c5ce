use base64::Engine as _;
use serde_json::Value;

use super::*;

/// Decodes `obj[name]` or `obj[name_base64]` back to bytes, as the README tells users to.
fn decode(obj: &Value, name: &str) -> Option<Vec<u8>> {
    if let Some(text) = obj[name].as_str() {
        assert!(
            obj.get(format!("{name}_base64")).is_none(),
            "both forms in {obj}"
        );
        return Some(text.as_bytes().to_vec());
    }
    let b64 = obj[format!("{name}_base64")].as_str()?;
    Some(
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap(),
    )
}

fn line(format: Format, batch: &RecordBatch, i: usize) -> Result<Vec<u8>, Unwritable> {
    let mut out = Vec::new();
    format.write(batch, i, &mut out).map(|()| out)
}

const ALL: Format = Format {
    kind: OutputFormat::Jsonl,
    fields: Fields::ALL,
};

#[test]
fn jsonl_with_every_field_gives_back_each_key_value_and_header_byte_for_byte() {
    let every_byte: Vec<u8> = (0..=255).collect();
    let mut batch = RecordBatch::default();
    let headers: [(&[u8], &[u8]); 3] = [
        (b"message-id", b"m-1"),
        (b"\xff\xfename", b"\xed\xa0\x80 surrogate"),
        (b"message-id", b"again, \"quoted\"\n"),
    ];
    batch.push_with_headers(Some(b"\xc0\xaf"), &every_byte, Some(-5), &headers);
    let first: Value = serde_json::from_slice(&line(ALL, &batch, 0).unwrap()).unwrap();
    assert_eq!(decode(&first, "key").unwrap(), b"\xc0\xaf");
    assert_eq!(decode(&first, "value").unwrap(), every_byte);
    assert_eq!(first["timestamp"], -5);
    let got: Vec<(Vec<u8>, Vec<u8>)> = first["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (decode(h, "name").unwrap(), decode(h, "value").unwrap()))
        .collect();
    let want: Vec<(Vec<u8>, Vec<u8>)> = headers
        .iter()
        .map(|(n, v)| (n.to_vec(), v.to_vec()))
        .collect();
    assert_eq!(got, want, "every header, repeats and order kept");
    let mut plain = RecordBatch::default();
    plain.push_with_headers(None, b"plain", None, &[]);
    assert_eq!(
        line(ALL, &plain, 0).unwrap(),
        br#"{"key":null,"value":"plain","timestamp":null,"headers":[]}"#
    );
}

#[test]
fn jsonl_writes_no_replacement_character_for_any_single_byte() {
    let format = Format::from(OutputFormat::Jsonl);
    for b in 0..=255u8 {
        let batch = RecordBatch::from_values([[b].as_slice()]);
        let out = line(format, &batch, 0).unwrap();
        let text = String::from_utf8(out).expect("a jsonl line is UTF-8");
        assert!(
            !text.contains('\u{fffd}') && !text.contains("\\ufffd"),
            "{text}"
        );
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(decode(&v, "value").unwrap(), [b], "{text}");
        assert_eq!(v["value_base64"].is_string(), b >= 0x80, "{text}");
    }
}

#[test]
fn jsonl_by_default_writes_key_value_and_timestamp_as_before() {
    let mut batch = RecordBatch::default();
    batch.push(Some(b"k"), b"say \"hi\"\n", Some(7));
    assert_eq!(
        line(Format::from(OutputFormat::Jsonl), &batch, 0).unwrap(),
        br#"{"key":"k","value":"say \"hi\"\n","timestamp":7}"#
    );
    let only_value = Format {
        kind: OutputFormat::Jsonl,
        fields: Fields::of(&[Field::Value, Field::Value]),
    };
    assert_eq!(
        line(only_value, &batch, 0).unwrap(),
        br#"{"value":"say \"hi\"\n"}"#
    );
    let listed_backwards = Format {
        kind: OutputFormat::Jsonl,
        fields: Fields::of(&[Field::Timestamp, Field::Key]),
    };
    assert_eq!(
        line(listed_backwards, &batch, 0).unwrap(),
        br#"{"key":"k","timestamp":7}"#
    );
}

#[test]
fn lines_and_kv_refuse_what_would_split_a_record_and_write_the_rest_as_is() {
    let mut batch = RecordBatch::default();
    batch.push(Some(b"k\x00"), b"\x00\r\xff\tv", None);
    batch.push(None, b"one\ntwo", None);
    batch.push(Some(b"a\tb"), b"v", None);
    batch.push(Some(b"a\nb"), b"v", None);
    let lines = Format::from(OutputFormat::Lines);
    let kv = Format::from(OutputFormat::Kv);
    assert_eq!(line(lines, &batch, 0).unwrap(), b"\x00\r\xff\tv");
    assert_eq!(line(kv, &batch, 0).unwrap(), b"k\x00\t\x00\r\xff\tv");
    assert_eq!(
        lines.unwritable(&batch),
        [(
            1,
            Unwritable::LineFeedInValue {
                format: "lines",
                at: 3
            }
        )]
    );
    assert_eq!(
        kv.unwritable(&batch),
        [
            (
                1,
                Unwritable::LineFeedInValue {
                    format: "kv",
                    at: 3
                }
            ),
            (2, Unwritable::SeparatorInKey { what: "tab", at: 1 }),
            (
                3,
                Unwritable::SeparatorInKey {
                    what: "line feed",
                    at: 1
                }
            ),
        ]
    );
    let mut out = b"kept".to_vec();
    assert!(lines.write(&batch, 1, &mut out).is_err());
    assert_eq!(out, b"kept", "a refused record writes nothing");
    assert!(
        Format::from(OutputFormat::Jsonl)
            .unwritable(&batch)
            .is_empty()
    );
}

#[test]
fn base64_is_the_standard_padded_alphabet() {
    assert_eq!(json_bytes(b"\xff"), ("_base64", "/w==".into()));
    assert_eq!(json_bytes(b"\xfb\xff"), ("_base64", "+/8=".into()));
    assert_eq!(json_bytes(b"Man"), ("", "Man".into()));
}
