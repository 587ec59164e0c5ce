//! How an AMQP 1.0 message becomes a record: its body as the value (by the AMQP type
//! system), its properties and application properties as headers. The README's "AMQP
//! messages as records" section is the user's reference; this module is its one
//! implementation, shared by the `amqp` and `eventhubs` receivers.
//!
//! **Value.** Data sections: their bytes, concatenated. An amqp-value that is a string,
//! binary or symbol: its bytes. Any other amqp-value, and amqp-sequence sections (their
//! elements, concatenated, as one JSON array): JSON, by the mapping of [`write_json`]. No body
//! section: an empty value. The header [`BODY_TYPE`] says which: `data`, `amqp-value:<type>`,
//! `amqp-sequence` or `none`.
//!
//! **Headers.** Each property present becomes `amqp.<property>` (names in [`props`]); each
//! application property `<name>` becomes `amqp.app.<name>`. A value of any type other than
//! string also gets a companion header giving its AMQP type (`amqp.message-id-type`,
//! `amqp.correlation-id-type`, `amqp.app-type.<name>`), so no two values read the same.
//!
//! **Cost.** A [`Converter`] keeps its buffers from one message to the next and writes the
//! headers straight into the batch's columns: after warming up it allocates nothing per
//! message, and a message with one data section is copied once, into the batch.

use std::io::Write as _;

use base64::Engine as _;
use fe2o3_amqp::types::messaging::{Body, Message, MessageId, Properties};
use fe2o3_amqp::types::primitives::{SimpleValue, Value};
use serde_amqp::descriptor::Descriptor;

use crate::batch::RecordBatch;

/// The header naming the body's kind: `data`, `amqp-value:<type>`, `amqp-sequence`, `none`.
pub const BODY_TYPE: &[u8] = b"amqp.body-type";
/// The prefix of an application property's header: `amqp.app.<name>`.
pub const APP_PREFIX: &[u8] = b"amqp.app.";
/// The prefix of an application property's type header (types other than string):
/// `amqp.app-type.<name>`.
pub const APP_TYPE_PREFIX: &[u8] = b"amqp.app-type.";

/// The header names of the message properties (AMQP 1.0 part 3.2.4).
pub mod props {
    /// `message-id`: a string as is, a ulong in decimal, a uuid as
    /// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, a binary as its bytes.
    pub const MESSAGE_ID: &[u8] = b"amqp.message-id";
    /// The type of a `message-id` that is not a string: `ulong`, `uuid` or `binary`.
    pub const MESSAGE_ID_TYPE: &[u8] = b"amqp.message-id-type";
    /// `user-id` (binary), as its bytes.
    pub const USER_ID: &[u8] = b"amqp.user-id";
    /// `to`.
    pub const TO: &[u8] = b"amqp.to";
    /// `subject`.
    pub const SUBJECT: &[u8] = b"amqp.subject";
    /// `reply-to`.
    pub const REPLY_TO: &[u8] = b"amqp.reply-to";
    /// `correlation-id`, rendered as `message-id` is.
    pub const CORRELATION_ID: &[u8] = b"amqp.correlation-id";
    /// The type of a `correlation-id` that is not a string.
    pub const CORRELATION_ID_TYPE: &[u8] = b"amqp.correlation-id-type";
    /// `content-type` (a symbol).
    pub const CONTENT_TYPE: &[u8] = b"amqp.content-type";
    /// `content-encoding` (a symbol).
    pub const CONTENT_ENCODING: &[u8] = b"amqp.content-encoding";
    /// `absolute-expiry-time`, in milliseconds since the Unix epoch.
    pub const ABSOLUTE_EXPIRY_TIME: &[u8] = b"amqp.absolute-expiry-time";
    /// `creation-time`, in milliseconds since the Unix epoch.
    pub const CREATION_TIME: &[u8] = b"amqp.creation-time";
    /// `group-id`.
    pub const GROUP_ID: &[u8] = b"amqp.group-id";
    /// `group-sequence`, in decimal.
    pub const GROUP_SEQUENCE: &[u8] = b"amqp.group-sequence";
    /// `reply-to-group-id`.
    pub const REPLY_TO_GROUP_ID: &[u8] = b"amqp.reply-to-group-id";
}

/// Turns messages into records, keeping its buffers from one message to the next.
#[derive(Debug, Default)]
pub struct Converter {
    value: Vec<u8>,
    name: Vec<u8>,
    text: Vec<u8>,
}

impl Converter {
    /// Appends `message` to `out` as a record with `key` and `timestamp`: the body as the
    /// value, and the headers of the module doc. The caller may add more headers to the same
    /// record with [`RecordBatch::push_header`] right after.
    pub fn push(
        &mut self,
        out: &mut RecordBatch,
        message: &Message<Body<Value>>,
        key: Option<&[u8]>,
        timestamp: i64,
    ) {
        let body_type = match &message.body {
            // The common case, copied once: straight from the section into the batch.
            Body::Data(sections) if sections.len() == 1 => {
                out.push_with_headers(key, &sections[0].0, Some(timestamp), &[]);
                b"data".as_slice()
            }
            body => {
                let t = self.body_value(body);
                out.push_with_headers(key, &self.value, Some(timestamp), &[]);
                t
            }
        };
        out.push_header(BODY_TYPE, body_type);
        if let Some(p) = &message.properties {
            self.push_properties(out, p);
        }
        if let Some(app) = &message.application_properties {
            for (name, value) in app.0.iter() {
                self.push_app_property(out, name, value);
            }
        }
    }

    /// Writes the value of `body` into `self.value`; returns the [`BODY_TYPE`] header value.
    fn body_value(&mut self, body: &Body<Value>) -> &'static [u8] {
        let out = &mut self.value;
        out.clear();
        match body {
            Body::Data(sections) => {
                for d in sections.iter() {
                    out.extend_from_slice(&d.0);
                }
                b"data"
            }
            Body::Value(v) => {
                match &v.0 {
                    Value::String(s) => out.extend_from_slice(s.as_bytes()),
                    Value::Binary(b) => out.extend_from_slice(b),
                    Value::Symbol(s) => out.extend_from_slice(s.0.as_bytes()),
                    other => write_json(other, out),
                }
                value_type(&v.0).as_bytes()
            }
            Body::Sequence(sections) => {
                out.push(b'[');
                let items = sections.iter().flat_map(|s| s.0.iter());
                for (i, item) in items.enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_json(item, out);
                }
                out.push(b']');
                b"amqp-sequence"
            }
            Body::Empty => b"none",
        }
    }

    fn push_properties(&mut self, out: &mut RecordBatch, p: &Properties) {
        if let Some(id) = &p.message_id {
            self.push_id(out, props::MESSAGE_ID, props::MESSAGE_ID_TYPE, id);
        }
        if let Some(u) = &p.user_id {
            out.push_header(props::USER_ID, u);
        }
        let texts = [
            (props::TO, p.to.as_deref()),
            (props::SUBJECT, p.subject.as_deref()),
            (props::REPLY_TO, p.reply_to.as_deref()),
        ];
        for (name, text) in texts {
            if let Some(t) = text {
                out.push_header(name, t.as_bytes());
            }
        }
        if let Some(id) = &p.correlation_id {
            self.push_id(out, props::CORRELATION_ID, props::CORRELATION_ID_TYPE, id);
        }
        if let Some(s) = &p.content_type {
            out.push_header(props::CONTENT_TYPE, s.0.as_bytes());
        }
        if let Some(s) = &p.content_encoding {
            out.push_header(props::CONTENT_ENCODING, s.0.as_bytes());
        }
        let numbers = [
            (
                props::ABSOLUTE_EXPIRY_TIME,
                p.absolute_expiry_time.as_ref().map(|t| t.milliseconds()),
            ),
            (
                props::CREATION_TIME,
                p.creation_time.as_ref().map(|t| t.milliseconds()),
            ),
        ];
        for (name, n) in numbers {
            if let Some(n) = n {
                self.push_number(out, name, n);
            }
        }
        if let Some(g) = &p.group_id {
            out.push_header(props::GROUP_ID, g.as_bytes());
        }
        if let Some(n) = p.group_sequence {
            self.push_number(out, props::GROUP_SEQUENCE, i64::from(n));
        }
        if let Some(g) = &p.reply_to_group_id {
            out.push_header(props::REPLY_TO_GROUP_ID, g.as_bytes());
        }
    }

    fn push_number(&mut self, out: &mut RecordBatch, name: &[u8], n: i64) {
        self.text.clear();
        let _ = write!(self.text, "{n}");
        out.push_header(name, &self.text);
    }

    fn push_id(&mut self, out: &mut RecordBatch, name: &[u8], type_name: &[u8], id: &MessageId) {
        self.text.clear();
        let t = write_message_id(id, &mut self.text);
        out.push_header(name, &self.text);
        if t != "string" {
            out.push_header(type_name, t.as_bytes());
        }
    }

    /// `amqp.app.<name>`, and `amqp.app-type.<name>` unless the value is a string.
    fn push_app_property(&mut self, out: &mut RecordBatch, name: &str, value: &SimpleValue) {
        self.text.clear();
        let t = match value {
            SimpleValue::String(s) => {
                self.text.extend_from_slice(s.as_bytes());
                "string"
            }
            SimpleValue::Symbol(s) => {
                self.text.extend_from_slice(s.0.as_bytes());
                "symbol"
            }
            SimpleValue::Binary(b) => {
                self.text.extend_from_slice(b);
                "binary"
            }
            SimpleValue::Null => "null",
            SimpleValue::Described(d) => {
                write_described(d, &mut self.text);
                "described"
            }
            other => {
                let s = Scalar::of_simple(other);
                write_scalar(&s, &mut self.text);
                s.type_name()
            }
        };
        self.name.clear();
        self.name.extend_from_slice(APP_PREFIX);
        self.name.extend_from_slice(name.as_bytes());
        out.push_header(&self.name, &self.text);
        if t != "string" {
            self.name.clear();
            self.name.extend_from_slice(APP_TYPE_PREFIX);
            self.name.extend_from_slice(name.as_bytes());
            out.push_header(&self.name, t.as_bytes());
        }
    }
}

/// Writes the header text of a message id (or correlation id) into `out` and returns its
/// AMQP type: a string as is, a ulong in decimal, a uuid as `8-4-4-4-12` lowercase hex, a
/// binary as its bytes. Two ids of the same type give the same text only when they are equal.
pub fn write_message_id(id: &MessageId, out: &mut Vec<u8>) -> &'static str {
    match id {
        MessageId::String(s) => {
            out.extend_from_slice(s.as_bytes());
            "string"
        }
        MessageId::Ulong(n) => {
            let _ = write!(out, "{n}");
            "ulong"
        }
        MessageId::Uuid(u) => {
            write_uuid(u.as_inner(), out);
            "uuid"
        }
        MessageId::Binary(b) => {
            out.extend_from_slice(b);
            "binary"
        }
    }
}

/// Appends a key for `id` that two ids share only when they are the same id of the same type
/// (duplicate detection): one type byte (`s` string, `u` ulong, `g` uuid, `b` binary), then
/// the UTF-8 text, the 8 big-endian bytes, the 16 bytes or the binary's bytes.
pub fn message_id_key(id: &MessageId, out: &mut Vec<u8>) {
    match id {
        MessageId::String(s) => {
            out.push(b's');
            out.extend_from_slice(s.as_bytes());
        }
        MessageId::Ulong(n) => {
            out.push(b'u');
            out.extend_from_slice(&n.to_be_bytes());
        }
        MessageId::Uuid(u) => {
            out.push(b'g');
            out.extend_from_slice(u.as_inner());
        }
        MessageId::Binary(b) => {
            out.push(b'b');
            out.extend_from_slice(b);
        }
    }
}

/// The message id of `message`, if it has one.
pub fn message_id(message: &Message<Body<Value>>) -> Option<&MessageId> {
    message.properties.as_ref()?.message_id.as_ref()
}

/// The [`BODY_TYPE`] of an amqp-value holding `v`: `amqp-value:` and the AMQP type name
/// (`described` for any described type).
pub fn value_type(v: &Value) -> &'static str {
    match v {
        Value::Described(_) => "amqp-value:described",
        Value::Null => "amqp-value:null",
        Value::Bool(_) => "amqp-value:boolean",
        Value::Ubyte(_) => "amqp-value:ubyte",
        Value::Ushort(_) => "amqp-value:ushort",
        Value::Uint(_) => "amqp-value:uint",
        Value::Ulong(_) => "amqp-value:ulong",
        Value::Byte(_) => "amqp-value:byte",
        Value::Short(_) => "amqp-value:short",
        Value::Int(_) => "amqp-value:int",
        Value::Long(_) => "amqp-value:long",
        Value::Float(_) => "amqp-value:float",
        Value::Double(_) => "amqp-value:double",
        Value::Decimal32(_) => "amqp-value:decimal32",
        Value::Decimal64(_) => "amqp-value:decimal64",
        Value::Decimal128(_) => "amqp-value:decimal128",
        Value::Char(_) => "amqp-value:char",
        Value::Timestamp(_) => "amqp-value:timestamp",
        Value::Uuid(_) => "amqp-value:uuid",
        Value::Binary(_) => "amqp-value:binary",
        Value::String(_) => "amqp-value:string",
        Value::Symbol(_) => "amqp-value:symbol",
        Value::List(_) => "amqp-value:list",
        Value::Map(_) => "amqp-value:map",
        Value::Array(_) => "amqp-value:array",
    }
}

/// An AMQP value that is neither composite nor described, borrowed.
enum Scalar<'a> {
    Null,
    Bool(bool),
    Unsigned(u64, &'static str),
    Signed(i64, &'static str),
    Float(f32),
    Double(f64),
    Decimal(&'a [u8], &'static str),
    Char(char),
    Timestamp(i64),
    Uuid(&'a [u8; 16]),
    Binary(&'a [u8]),
    String(&'a str),
    Symbol(&'a str),
}

impl<'a> Scalar<'a> {
    /// `v` as a scalar, or `None` for a list, map, array or described value.
    fn of(v: &'a Value) -> Option<Self> {
        Some(match v {
            Value::Null => Scalar::Null,
            Value::Bool(b) => Scalar::Bool(*b),
            Value::Ubyte(n) => Scalar::Unsigned(u64::from(*n), "ubyte"),
            Value::Ushort(n) => Scalar::Unsigned(u64::from(*n), "ushort"),
            Value::Uint(n) => Scalar::Unsigned(u64::from(*n), "uint"),
            Value::Ulong(n) => Scalar::Unsigned(*n, "ulong"),
            Value::Byte(n) => Scalar::Signed(i64::from(*n), "byte"),
            Value::Short(n) => Scalar::Signed(i64::from(*n), "short"),
            Value::Int(n) => Scalar::Signed(i64::from(*n), "int"),
            Value::Long(n) => Scalar::Signed(*n, "long"),
            Value::Float(f) => Scalar::Float(f.0),
            Value::Double(f) => Scalar::Double(f.0),
            Value::Decimal32(d) => Scalar::Decimal(d.as_inner(), "decimal32"),
            Value::Decimal64(d) => Scalar::Decimal(d.as_inner(), "decimal64"),
            Value::Decimal128(d) => Scalar::Decimal(d.as_inner(), "decimal128"),
            Value::Char(c) => Scalar::Char(*c),
            Value::Timestamp(t) => Scalar::Timestamp(t.milliseconds()),
            Value::Uuid(u) => Scalar::Uuid(u.as_inner()),
            Value::Binary(b) => Scalar::Binary(b),
            Value::String(s) => Scalar::String(s),
            Value::Symbol(s) => Scalar::Symbol(&s.0),
            Value::Described(_) | Value::List(_) | Value::Map(_) | Value::Array(_) => {
                return None;
            }
        })
    }

    /// An application property's value; described values are written apart.
    fn of_simple(v: &'a SimpleValue) -> Self {
        match v {
            SimpleValue::Null | SimpleValue::Described(_) => Scalar::Null,
            SimpleValue::Bool(b) => Scalar::Bool(*b),
            SimpleValue::Ubyte(n) => Scalar::Unsigned(u64::from(*n), "ubyte"),
            SimpleValue::Ushort(n) => Scalar::Unsigned(u64::from(*n), "ushort"),
            SimpleValue::Uint(n) => Scalar::Unsigned(u64::from(*n), "uint"),
            SimpleValue::Ulong(n) => Scalar::Unsigned(*n, "ulong"),
            SimpleValue::Byte(n) => Scalar::Signed(i64::from(*n), "byte"),
            SimpleValue::Short(n) => Scalar::Signed(i64::from(*n), "short"),
            SimpleValue::Int(n) => Scalar::Signed(i64::from(*n), "int"),
            SimpleValue::Long(n) => Scalar::Signed(*n, "long"),
            SimpleValue::Float(f) => Scalar::Float(f.0),
            SimpleValue::Double(f) => Scalar::Double(f.0),
            SimpleValue::Decimal32(d) => Scalar::Decimal(d.as_inner(), "decimal32"),
            SimpleValue::Decimal64(d) => Scalar::Decimal(d.as_inner(), "decimal64"),
            SimpleValue::Decimal128(d) => Scalar::Decimal(d.as_inner(), "decimal128"),
            SimpleValue::Char(c) => Scalar::Char(*c),
            SimpleValue::Timestamp(t) => Scalar::Timestamp(t.milliseconds()),
            SimpleValue::Uuid(u) => Scalar::Uuid(u.as_inner()),
            SimpleValue::Binary(b) => Scalar::Binary(b),
            SimpleValue::String(s) => Scalar::String(s),
            SimpleValue::Symbol(s) => Scalar::Symbol(&s.0),
        }
    }

    /// The AMQP type name.
    fn type_name(&self) -> &'static str {
        match self {
            Scalar::Null => "null",
            Scalar::Bool(_) => "boolean",
            Scalar::Unsigned(_, t) | Scalar::Signed(_, t) | Scalar::Decimal(_, t) => t,
            Scalar::Float(_) => "float",
            Scalar::Double(_) => "double",
            Scalar::Char(_) => "char",
            Scalar::Timestamp(_) => "timestamp",
            Scalar::Uuid(_) => "uuid",
            Scalar::Binary(_) => "binary",
            Scalar::String(_) => "string",
            Scalar::Symbol(_) => "symbol",
        }
    }
}

/// Appends `v` as JSON, by the mapping the README tables (AMQP messages as records):
///
/// - null, boolean, string, list: JSON's own (`null`, `true`, `"text"`, `[…]`);
/// - the integers (ubyte … ulong, byte … long): a JSON number, exact, with no fraction or
///   exponent;
/// - float and double: a JSON number that always has a fraction or an exponent (`2.0`,
///   `1e-7`), the shortest that reads back as the same float or double; NaN and the
///   infinities as `{"$float":"NaN"}`, `{"$double":"-Infinity"}`;
/// - a map whose keys are all strings: a JSON object in the map's order, each key that starts
///   with `$` written with one more `$` in front; any other map: `{"$map":[[key,value],…]}`;
/// - every other type as a one-key object whose key is `$` and the type name:
///   `{"$binary":"<base64>"}`, `{"$symbol":"…"}`, `{"$char":"…"}`,
///   `{"$timestamp":<ms since the epoch>}`, `{"$uuid":"8-4-4-4-12 hex"}`,
///   `{"$decimal64":"<coefficient>E<exponent>"}`, `{"$array":[…]}`,
///   `{"$described":[<descriptor>,<value>]}` (a descriptor code as a number, a name as
///   `{"$symbol":…}`).
///
/// So an object key that starts with one `$` is a type tag, never a map key.
pub fn write_json(v: &Value, out: &mut Vec<u8>) {
    if let Some(s) = Scalar::of(v) {
        return write_scalar(&s, out);
    }
    match v {
        Value::List(items) => write_list(items, out),
        Value::Array(items) => {
            out.extend_from_slice(b"{\"$array\":");
            write_list(&items.0, out);
            out.push(b'}');
        }
        Value::Map(map) => {
            if map.iter().all(|(k, _)| matches!(k, Value::String(_))) {
                out.push(b'{');
                for (i, (k, v)) in map.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    if let Value::String(k) = k {
                        write_key(k, out);
                    }
                    out.push(b':');
                    write_json(v, out);
                }
                out.push(b'}');
            } else {
                out.extend_from_slice(b"{\"$map\":[");
                for (i, (k, v)) in map.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.push(b'[');
                    write_json(k, out);
                    out.push(b',');
                    write_json(v, out);
                    out.push(b']');
                }
                out.extend_from_slice(b"]}");
            }
        }
        Value::Described(d) => write_described(d, out),
        _ => unreachable!("every scalar was written above"),
    }
}

fn write_list(items: &[Value], out: &mut Vec<u8>) {
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_json(item, out);
    }
    out.push(b']');
}

/// A map key: `$` doubled at the start, so it never reads as a type tag.
fn write_key(k: &str, out: &mut Vec<u8>) {
    if k.starts_with('$') {
        // Rare: a key that would read as a type tag gets another `$`.
        write_str(&format!("${k}"), out);
    } else {
        write_str(k, out);
    }
}

fn write_described(d: &serde_amqp::described::Described<Value>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"$described\":[");
    match &d.descriptor {
        Descriptor::Code(c) => {
            let _ = write!(out, "{c}");
        }
        Descriptor::Name(s) => tagged_str("symbol", &s.0, out),
    }
    out.push(b',');
    write_json(&d.value, out);
    out.extend_from_slice(b"]}");
}

fn write_scalar(s: &Scalar<'_>, out: &mut Vec<u8>) {
    match s {
        Scalar::Null => out.extend_from_slice(b"null"),
        Scalar::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Scalar::Unsigned(n, _) => {
            let _ = write!(out, "{n}");
        }
        Scalar::Signed(n, _) => {
            let _ = write!(out, "{n}");
        }
        Scalar::Float(f) if f.is_finite() => {
            let _ = serde_json::to_writer(&mut *out, f);
        }
        Scalar::Double(f) if f.is_finite() => {
            let _ = serde_json::to_writer(&mut *out, f);
        }
        Scalar::Float(f) => tagged_str("float", non_finite(f64::from(*f)), out),
        Scalar::Double(f) => tagged_str("double", non_finite(*f), out),
        Scalar::Decimal(bytes, t) => {
            out.extend_from_slice(b"{\"$");
            out.extend_from_slice(t.as_bytes());
            out.extend_from_slice(b"\":\"");
            write_decimal(bytes, out);
            out.extend_from_slice(b"\"}");
        }
        Scalar::Char(c) => tagged_str("char", c.encode_utf8(&mut [0; 4]), out),
        Scalar::Timestamp(ms) => {
            let _ = write!(out, "{{\"$timestamp\":{ms}}}");
        }
        Scalar::Uuid(u) => {
            out.extend_from_slice(b"{\"$uuid\":\"");
            write_uuid(u, out);
            out.extend_from_slice(b"\"}");
        }
        Scalar::Binary(b) => {
            out.extend_from_slice(b"{\"$binary\":\"");
            let start = out.len();
            let n = base64::encoded_len(b.len(), true).unwrap_or(0);
            out.resize(start + n, 0);
            let _ = base64::engine::general_purpose::STANDARD.encode_slice(b, &mut out[start..]);
            out.extend_from_slice(b"\"}");
        }
        Scalar::String(s) => write_str(s, out),
        Scalar::Symbol(s) => tagged_str("symbol", s, out),
    }
}

fn non_finite(f: f64) -> &'static str {
    if f.is_nan() {
        "NaN"
    } else if f > 0.0 {
        "Infinity"
    } else {
        "-Infinity"
    }
}

/// `{"$<tag>":"<s>"}`.
fn tagged_str(tag: &str, s: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"$");
    out.extend_from_slice(tag.as_bytes());
    out.extend_from_slice(b"\":");
    write_str(s, out);
    out.push(b'}');
}

/// `s` as a JSON string literal.
fn write_str(s: &str, out: &mut Vec<u8>) {
    let _ = serde_json::to_writer(&mut *out, s);
}

fn write_uuid(u: &[u8; 16], out: &mut Vec<u8>) {
    for (i, b) in u.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push(b'-');
        }
        let _ = write!(out, "{b:02x}");
    }
}

/// An IEEE 754-2008 decimal in the binary integer decimal encoding (AMQP's decimal32, 64
/// and 128: 4, 8 or 16 big-endian bytes) as `[-]<coefficient>E<exponent>`, exact; `NaN`,
/// `Infinity`, `-Infinity`. A coefficient beyond the format's precision is non-canonical
/// and reads as 0, as the standard says.
pub fn write_decimal(bytes: &[u8], out: &mut Vec<u8>) {
    // (exponent bits, bias, largest coefficient) per width.
    let (exp_bits, bias, max): (u32, i64, u128) = match bytes.len() {
        4 => (8, 101, 9_999_999),
        8 => (10, 398, 9_999_999_999_999_999),
        _ => (14, 6176, 10u128.pow(34) - 1),
    };
    let n = bytes.len() as u32 * 8;
    let v = bytes.iter().fold(0u128, |acc, b| acc << 8 | u128::from(*b));
    let mask = |bits: u32| (1u128 << bits) - 1;
    let negative = v >> (n - 1) & 1 == 1;
    // The bits after the sign: 11 11x is a special value, 11 then the exponent, or the
    // exponent at once.
    let coef_bits = n - 1 - exp_bits;
    if v >> (n - 5) & 0xf == 0xf {
        let text = if v >> (n - 6) & 1 == 1 {
            "NaN"
        } else if negative {
            "-Infinity"
        } else {
            "Infinity"
        };
        out.extend_from_slice(text.as_bytes());
        return;
    }
    let (exponent, coefficient) = if v >> (n - 3) & 3 == 3 {
        (
            v >> (coef_bits - 2) & mask(exp_bits),
            (0b100 << (coef_bits - 2)) | (v & mask(coef_bits - 2)),
        )
    } else {
        (v >> coef_bits & mask(exp_bits), v & mask(coef_bits))
    };
    let coefficient = if coefficient > max { 0 } else { coefficient };
    let sign = if negative { "-" } else { "" };
    let _ = write!(out, "{sign}{coefficient}E{}", exponent as i64 - bias);
}

#[cfg(test)]
#[path = "body_tests.rs"]
mod tests;
