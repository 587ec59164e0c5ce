//! The mapping of `body.rs`, on values built here and on messages as python-qpid-proton
//! encodes them (the hex below is `Message.encode()` of `tests/it/amqp_bodies.py`'s cases,
//! with sections appended as that script does), so the bodies a broker rewrites (RabbitMQ
//! 3.10 reverses several body sections and gives a bodiless message an empty data section)
//! are checked here byte for byte.

use fe2o3_amqp::types::messaging::message::DecodeIntoMessage;
use fe2o3_amqp::types::messaging::{AmqpSequence, AmqpValue, Batch, Data};
use fe2o3_amqp::types::primitives::{
    Array, Binary, Dec32, Dec64, Dec128, OrderedMap, Symbol, Timestamp, Uuid,
};
use serde_amqp::described::Described;

use super::*;

fn decode(hex_text: &str) -> Message<Body<Value>> {
    let bytes = hex::decode(hex_text).unwrap();
    Body::<Value>::decode_message_from_reader(serde_amqp::read::SliceReader::new(&bytes)).unwrap()
}

/// The record `message` becomes: (value, headers).
fn record(message: &Message<Body<Value>>) -> (Vec<u8>, Vec<(String, Vec<u8>)>) {
    let mut out = RecordBatch::default();
    Converter::default().push(&mut out, message, None, 1);
    out.validate().unwrap();
    let headers = out
        .headers_of(0)
        .map(|(n, v)| (String::from_utf8(n.to_vec()).unwrap(), v.to_vec()))
        .collect();
    (out.value(0).to_vec(), headers)
}

fn header<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_slice())
}

fn json(v: &Value) -> String {
    let mut out = Vec::new();
    write_json(v, &mut out);
    String::from_utf8(out).unwrap()
}

fn message(body: Body<Value>) -> Message<Body<Value>> {
    Message {
        header: None,
        delivery_annotations: None,
        message_annotations: None,
        properties: None,
        application_properties: None,
        body,
        footer: None,
    }
}

fn value_message(v: Value) -> Message<Body<Value>> {
    message(Body::Value(AmqpValue(v)))
}

#[test]
fn every_amqp_type_maps_to_its_documented_json_and_type_name() {
    let uuid = Uuid::from([
        0x0f, 0x8f, 0xad, 0x5b, 0xd9, 0xcb, 0x46, 0x9f, 0xa1, 0x65, 0x70, 0x86, 0x77, 0x28, 0x95,
        0x0e,
    ]);
    let mut string_keys = OrderedMap::new();
    string_keys.insert(Value::String("a".into()), Value::Int(1));
    string_keys.insert(Value::String("$b".into()), Value::String("x".into()));
    let mut other_keys = OrderedMap::new();
    other_keys.insert(Value::Ulong(1), Value::String("one".into()));
    other_keys.insert(Value::Symbol(Symbol::from("s")), Value::Double(2.5.into()));
    let cases: Vec<(Value, &str, &str)> = vec![
        (Value::Null, "null", "null"),
        (Value::Bool(true), "true", "boolean"),
        (Value::Ubyte(255), "255", "ubyte"),
        (Value::Ushort(65535), "65535", "ushort"),
        (Value::Uint(u32::MAX), "4294967295", "uint"),
        (Value::Ulong(u64::MAX), "18446744073709551615", "ulong"),
        (Value::Byte(-128), "-128", "byte"),
        (Value::Short(-32768), "-32768", "short"),
        (Value::Int(i32::MIN), "-2147483648", "int"),
        (Value::Long(i64::MIN), "-9223372036854775808", "long"),
        (Value::Float(1.5f32.into()), "1.5", "float"),
        (Value::Float(0.1f32.into()), "0.1", "float"),
        (Value::Double(0.1.into()), "0.1", "double"),
        (Value::Double(2.0.into()), "2.0", "double"),
        (Value::Double(1e-7.into()), "1e-7", "double"),
        (
            Value::Double(f64::NAN.into()),
            r#"{"$double":"NaN"}"#,
            "double",
        ),
        (
            Value::Float(f32::NEG_INFINITY.into()),
            r#"{"$float":"-Infinity"}"#,
            "float",
        ),
        (
            Value::Double(f64::INFINITY.into()),
            r#"{"$double":"Infinity"}"#,
            "double",
        ),
        (
            Value::Decimal32(Dec32::from([0x32, 0, 0, 0x0f])),
            r#"{"$decimal32":"15E-1"}"#,
            "decimal32",
        ),
        (Value::Char('€'), r#"{"$char":"€"}"#, "char"),
        (
            Value::Timestamp(Timestamp::from_milliseconds(1700000000123)),
            r#"{"$timestamp":1700000000123}"#,
            "timestamp",
        ),
        (
            Value::Uuid(uuid),
            r#"{"$uuid":"0f8fad5b-d9cb-469f-a165-70867728950e"}"#,
            "uuid",
        ),
        (
            Value::Binary(Binary::from(vec![1, 2, 0xff])),
            r#"{"$binary":"AQL/"}"#,
            "binary",
        ),
        (
            Value::String("a \"q\"\n".into()),
            r#""a \"q\"\n""#,
            "string",
        ),
        (
            Value::Symbol(Symbol::from("sy")),
            r#"{"$symbol":"sy"}"#,
            "symbol",
        ),
        (
            Value::List(vec![Value::Long(1), Value::Null, Value::List(vec![])]),
            "[1,null,[]]",
            "list",
        ),
        (Value::Map(string_keys), r#"{"a":1,"$$b":"x"}"#, "map"),
        (
            Value::Map(other_keys),
            r#"{"$map":[[1,"one"],[{"$symbol":"s"},2.5]]}"#,
            "map",
        ),
        (
            Value::Array(Array::from(vec![Value::Int(1), Value::Int(2)])),
            r#"{"$array":[1,2]}"#,
            "array",
        ),
        (
            Value::Described(Box::new(Described {
                descriptor: Descriptor::Code(0x1234),
                value: Value::String("x".into()),
            })),
            r#"{"$described":[4660,"x"]}"#,
            "described",
        ),
        (
            Value::Described(Box::new(Described {
                descriptor: Descriptor::Name(Symbol::from("com.example:p")),
                value: Value::Null,
            })),
            r#"{"$described":[{"$symbol":"com.example:p"},null]}"#,
            "described",
        ),
    ];
    for (v, expected, type_name) in cases {
        assert_eq!(json(&v), expected, "{v:?}");
        assert_eq!(value_type(&v), format!("amqp-value:{type_name}"), "{v:?}");
        let (value, headers) = record(&value_message(v.clone()));
        let raw = matches!(v, Value::String(_) | Value::Binary(_) | Value::Symbol(_));
        if !raw {
            assert_eq!(String::from_utf8(value).unwrap(), expected, "{v:?}");
        }
        assert_eq!(
            header(&headers, "amqp.body-type"),
            Some(format!("amqp-value:{type_name}").as_bytes())
        );
    }
}

#[test]
fn decimals_read_as_exact_coefficient_and_exponent() {
    let case = |bytes: &[u8]| {
        let mut out = Vec::new();
        write_decimal(bytes, &mut out);
        String::from_utf8(out).unwrap()
    };
    // decimal32: 15 x 10^-1 (exponent bias 101).
    assert_eq!(case(&[0x32, 0x00, 0x00, 0x0f]), "15E-1");
    // decimal64: -(12345 x 10^-2), bias 398.
    assert_eq!(case(&0xb180_0000_0000_3039u64.to_be_bytes()), "-12345E-2");
    // decimal128: 7 x 10^3, bias 6176.
    assert_eq!(case(&((6176u128 + 3) << 113 | 7).to_be_bytes()), "7E3");
    // decimal32 with the large-coefficient form (11 then the exponent): 9,999,999 x 10^0.
    assert_eq!(
        case(&(0b11u32 << 29 | 101 << 21 | (9_999_999 & 0x1f_ffff)).to_be_bytes()),
        "9999999E0"
    );
    // A non-canonical coefficient (above 10^7 - 1) reads as 0.
    assert_eq!(
        case(&(0b11u32 << 29 | 101 << 21 | 0x1f_ffff).to_be_bytes()),
        "0E0"
    );
    assert_eq!(case(&[0x78, 0, 0, 0]), "Infinity");
    assert_eq!(case(&[0xf8, 0, 0, 0]), "-Infinity");
    assert_eq!(case(&[0x7c, 0, 0, 0]), "NaN");
    let d64 = Value::Decimal64(Dec64::from(0xb180_0000_0000_3039u64.to_be_bytes()));
    assert_eq!(json(&d64), r#"{"$decimal64":"-12345E-2"}"#);
    let d128 = Value::Decimal128(Dec128::from(((6176u128 + 3) << 113 | 7).to_be_bytes()));
    assert_eq!(json(&d128), r#"{"$decimal128":"7E3"}"#);
}

#[test]
fn several_data_sections_are_concatenated_in_order() {
    // proton: data "ab", data "", data "c\xff".
    let m = decode(
        "0053704500537345005374d10000001800000002a10463617365a10c646174612d7365766572616c005375b0000000026162005375b000000000005375b00000000263ff",
    );
    let (value, headers) = record(&m);
    assert_eq!(value, b"abc\xff");
    assert_eq!(header(&headers, "amqp.body-type"), Some(&b"data"[..]));
    assert_eq!(
        header(&headers, "amqp.app.case"),
        Some(&b"data-several"[..])
    );
    // One section, and an empty one: the section's bytes, nothing else.
    let one = message(Body::Data(Batch::new(vec![Data(Binary::from(
        b"\x00\xff".to_vec(),
    ))])));
    assert_eq!(
        record(&one),
        (
            b"\x00\xff".to_vec(),
            vec![("amqp.body-type".to_owned(), b"data".to_vec())]
        )
    );
}

#[test]
fn sequence_sections_become_one_json_array_of_their_elements() {
    // proton: amqp-sequence [1], amqp-sequence ["b", null].
    let m = decode(
        "0053704500537345005374d10000001c00000002a10463617365a11073657175656e63652d7365766572616c005376d000000006000000015401005376d00000000800000002a1016240",
    );
    let (value, headers) = record(&m);
    assert_eq!(String::from_utf8(value).unwrap(), r#"[1,"b",null]"#);
    assert_eq!(
        header(&headers, "amqp.body-type"),
        Some(&b"amqp-sequence"[..])
    );
    let empty = message(Body::Sequence(Batch::new(vec![AmqpSequence(vec![])])));
    assert_eq!(record(&empty).0, b"[]");
}

#[test]
fn a_message_without_a_body_is_an_empty_value_marked_none() {
    // proton: Message(properties={"case": "none"}).encode(): no body section at all.
    let m = decode("0053704500537345005374d10000001000000002a10463617365a1046e6f6e65");
    assert!(matches!(m.body, Body::Empty));
    let (value, headers) = record(&m);
    assert_eq!(value, b"");
    assert_eq!(header(&headers, "amqp.body-type"), Some(&b"none"[..]));
}

#[test]
fn string_binary_and_symbol_values_are_their_bytes() {
    for (hex_text, value, t) in [
        (
            "0053704500537345005374d10000001800000002a10463617365a10c76616c75652d737472696e67005377a10a68c3a96c6c6f20227122",
            "héllo \"q\"".as_bytes(),
            "amqp-value:string",
        ),
        (
            "0053704500537345005374d10000001800000002a10463617365a10c76616c75652d62696e617279005377a0030102ff",
            b"\x01\x02\xff",
            "amqp-value:binary",
        ),
        (
            "0053704500537345005374d10000001800000002a10463617365a10c76616c75652d73796d626f6c005377a308612d73796d626f6c",
            b"a-symbol",
            "amqp-value:symbol",
        ),
    ] {
        let (v, headers) = record(&decode(hex_text));
        assert_eq!(v, value);
        assert_eq!(header(&headers, "amqp.body-type"), Some(t.as_bytes()));
    }
}

#[test]
fn every_property_becomes_a_header_and_ids_keep_their_type() {
    // proton: id=ulong(42), user_id=b"guest", to, subject, reply_to, correlation_id=uuid,
    // content type and encoding, expiry and creation times, group id, sequence, reply group.
    let m = decode(
        "00537045005373c0780d532aa0056775657374a1102f71756575652f656c73657768657265a10b746865207375626a656374a10e2f71756575652f7265706c696573980f8fad5bd9cb469fa16570867728950ea30a746578742f706c61696ea304677a697083000001a3185c5000830000018bcfe569f4a10267315207a1027267005374d10000001600000002a10463617365a10a70726f70657274696573005375a00170",
    );
    let (value, headers) = record(&m);
    assert_eq!(value, b"p");
    let text: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), std::str::from_utf8(v).unwrap()))
        .collect();
    assert_eq!(
        text,
        [
            ("amqp.body-type", "data"),
            ("amqp.message-id", "42"),
            ("amqp.message-id-type", "ulong"),
            ("amqp.user-id", "guest"),
            ("amqp.to", "/queue/elsewhere"),
            ("amqp.subject", "the subject"),
            ("amqp.reply-to", "/queue/replies"),
            (
                "amqp.correlation-id",
                "0f8fad5b-d9cb-469f-a165-70867728950e"
            ),
            ("amqp.correlation-id-type", "uuid"),
            ("amqp.content-type", "text/plain"),
            ("amqp.content-encoding", "gzip"),
            ("amqp.absolute-expiry-time", "1800000000000"),
            ("amqp.creation-time", "1700000000500"),
            ("amqp.group-id", "g1"),
            ("amqp.group-sequence", "7"),
            ("amqp.reply-to-group-id", "rg"),
            ("amqp.app.case", "properties"),
        ]
    );
}

#[test]
fn application_properties_are_prefixed_and_typed_unless_strings() {
    // proton: id="42", correlation_id=b"\x01\xfe", and one property of each simple type.
    let m = decode(
        "00537045005373c00d06a102343240404040a00201fe005374d10000007600000016a10463617365a10e6170702d70726f70657274696573a10173a10474657874a1016954f9a1016c5509a1016242a10164823fd0000000000000a10362696ea002ff00a10373796da3027379a10175980f8fad5bd9cb469fa16570867728950ea1036e756c40a1027473830000000000000005005375a00161",
    );
    let (_, headers) = record(&m);
    let expected: Vec<(&str, &[u8])> = vec![
        ("amqp.body-type", b"data"),
        ("amqp.message-id", b"42"),
        ("amqp.correlation-id", b"\x01\xfe"),
        ("amqp.correlation-id-type", b"binary"),
        ("amqp.app.case", b"app-properties"),
        ("amqp.app.s", b"text"),
        ("amqp.app.i", b"-7"),
        ("amqp.app-type.i", b"int"),
        ("amqp.app.l", b"9"),
        ("amqp.app-type.l", b"long"),
        ("amqp.app.b", b"false"),
        ("amqp.app-type.b", b"boolean"),
        ("amqp.app.d", b"0.25"),
        ("amqp.app-type.d", b"double"),
        ("amqp.app.bin", b"\xff\x00"),
        ("amqp.app-type.bin", b"binary"),
        ("amqp.app.sym", b"sy"),
        ("amqp.app-type.sym", b"symbol"),
        (
            "amqp.app.u",
            br#"{"$uuid":"0f8fad5b-d9cb-469f-a165-70867728950e"}"#,
        ),
        ("amqp.app-type.u", b"uuid"),
        ("amqp.app.nul", b""),
        ("amqp.app-type.nul", b"null"),
        ("amqp.app.ts", br#"{"$timestamp":5}"#),
        ("amqp.app-type.ts", b"timestamp"),
    ];
    let got: Vec<(&str, &[u8])> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_slice()))
        .collect();
    assert_eq!(got, expected);
}

#[test]
fn message_id_keys_differ_whenever_the_ids_differ() {
    let ids = [
        MessageId::String("42".into()),
        MessageId::Ulong(42),
        MessageId::Binary(Binary::from(b"42".to_vec())),
        MessageId::Uuid(Uuid::from([0x34; 16])),
        MessageId::String(String::new()),
        MessageId::Binary(Binary::from(Vec::new())),
    ];
    let keys: Vec<Vec<u8>> = ids
        .iter()
        .map(|id| {
            let mut k = Vec::new();
            message_id_key(id, &mut k);
            k
        })
        .collect();
    let distinct: std::collections::BTreeSet<&Vec<u8>> = keys.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "{keys:?}");
    let mut again = Vec::new();
    message_id_key(&MessageId::String("42".into()), &mut again);
    assert_eq!(again, keys[0]);
}

#[test]
fn a_warm_converter_adds_headers_to_the_batch_without_gathering_them() {
    // Two messages through one converter: the second's headers are its own.
    let mut conv = Converter::default();
    let mut out = RecordBatch::default();
    let first = decode(
        "00537045005373c00b06a00200ff404040405307005374d10000001500000002a10463617365a10969642d62696e617279005375a00162",
    );
    conv.push(&mut out, &first, None, 1);
    conv.push(&mut out, &value_message(Value::Int(3)), Some(b"k"), 2);
    out.validate().unwrap();
    assert_eq!(out.value(0), b"b");
    assert_eq!(out.value(1), b"3");
    assert_eq!(out.key(1), Some(&b"k"[..]));
    assert_eq!(out.timestamp(1), Some(2));
    assert_eq!(
        out.headers_of(1).collect::<Vec<_>>(),
        [(&b"amqp.body-type"[..], &b"amqp-value:int"[..])]
    );
    assert_eq!(
        out.headers_of(0)
            .find(|(n, _)| *n == b"amqp.message-id-type"),
        Some((&b"amqp.message-id-type"[..], &b"binary"[..]))
    );
}

/// The receiver's conversion before this module, kept here as the baseline the converter is
/// timed against: the body copied into a buffer, the id and properties gathered in vectors.
fn old_push(out: &mut RecordBatch, message: &Message<Body<Value>>, buf: &mut Vec<u8>) {
    buf.clear();
    if let Body::Data(sections) = &message.body {
        for d in sections.iter() {
            buf.extend_from_slice(&d.0);
        }
    }
    let id = message_id(message).map(|id| match id {
        MessageId::String(s) => s.clone(),
        MessageId::Ulong(n) => n.to_string(),
        MessageId::Uuid(u) => hex::encode(u.as_inner()),
        MessageId::Binary(b) => hex::encode(b),
    });
    let app: Vec<(String, String)> = Vec::new();
    let mut headers: Vec<(&[u8], &[u8])> = Vec::with_capacity(1 + app.len());
    if let Some(id) = &id {
        headers.push((b"message-id", id.as_bytes()));
    }
    out.push_with_headers(None, buf, Some(1), &headers);
}

/// `cargo test --release -p sluice --lib converting_a_data_message -- --ignored --nocapture`:
/// the hot path (one data section of 100 bytes, with a string message id as `sluice bench
/// amqp` publishes, and without) through the converter and through the code it replaced,
/// alternating. With an id the converter is faster (no String, no Vec per message); without
/// any property it writes one header more (`amqp.body-type`), a few nanoseconds, where a
/// per-message allocation would cost tens.
#[test]
#[ignore = "a timing, run by hand in release"]
fn converting_a_data_message_costs_at_most_a_header_more_than_before() {
    use fe2o3_amqp::types::messaging::Properties;
    const N: usize = 1024;
    const ROUNDS: usize = 400;
    let data = |id: Option<String>| {
        let mut m = message(Body::Data(Batch::new(vec![Data(Binary::from(vec![
            b'x';
            100
        ]))])));
        m.properties = id.map(|id| Properties::builder().message_id(id).build());
        m
    };
    for with_id in [true, false] {
        let messages: Vec<_> = (0..N)
            .map(|i| data(with_id.then(|| format!("b-{i}"))))
            .collect();
        let (mut old_best, mut new_best) = (f64::MAX, f64::MAX);
        let mut conv = Converter::default();
        let mut buf = Vec::new();
        let mut out = RecordBatch::default();
        for _ in 0..ROUNDS {
            out.clear();
            let t = std::time::Instant::now();
            for m in &messages {
                old_push(&mut out, m, &mut buf);
            }
            old_best = old_best.min(t.elapsed().as_secs_f64() * 1e9 / N as f64);
            out.clear();
            let t = std::time::Instant::now();
            for m in &messages {
                conv.push(&mut out, m, None, 1);
            }
            new_best = new_best.min(t.elapsed().as_secs_f64() * 1e9 / N as f64);
        }
        println!(
            "data body, 100 bytes, message id: {with_id}: before {old_best:.1} ns/message, now {new_best:.1} ns/message"
        );
        assert!(
            new_best <= old_best + 10.0,
            "the converter takes {new_best:.1} ns a message against {old_best:.1} before"
        );
    }
}
