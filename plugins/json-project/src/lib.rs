//! `json-project`: keeps the named fields of JSON objects.
//!
//! Parameters: `fields` (required): the field names, comma-separated (`"a,b"`).
//!
//! Each value must be one JSON object. The output value is a compact JSON object with only the
//! named fields, in the order `fields` gives them; a field the input lacks is left out (so an
//! object with none of them becomes `{}`). A value that is not valid JSON, or is JSON but not
//! an object, is rejected with a reason that says which.

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use sluice_sdk::{Batch, Context, Error, Output, Params, Transform, export_transform};

/// The plugin: the fields to keep.
#[derive(Debug)]
pub struct JsonProject {
    fields: Vec<String>,
    /// `"name":` for each field, escaped, ready to copy.
    prefixes: Vec<Vec<u8>>,
}

impl JsonProject {
    /// A projection onto `fields`, which must be distinct and not empty.
    pub fn new<I, S>(fields: I) -> Result<Self, String>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let fields: Vec<String> = fields.into_iter().map(Into::into).collect();
        if fields.is_empty() {
            return Err("parameter `fields` must name at least one field".to_string());
        }
        for (i, field) in fields.iter().enumerate() {
            if field.is_empty() {
                return Err("parameter `fields` has an empty field name".to_string());
            }
            if fields[..i].contains(field) {
                return Err(format!("parameter `fields` names {field:?} twice"));
            }
        }
        let prefixes = fields
            .iter()
            .map(|f| {
                let mut prefix = Vec::with_capacity(f.len() + 3);
                write_json_string(&mut prefix, f);
                prefix.push(b':');
                prefix
            })
            .collect();
        Ok(Self { fields, prefixes })
    }

    /// Appends the projection of each record of `input` to `out`, and rejects the records that
    /// are not JSON objects.
    pub fn project(&self, input: &Batch, out: &mut Output) {
        let mut found: Vec<Option<&RawValue>> = vec![None; self.fields.len()];
        for record in input.records() {
            found.fill(None);
            match pick(record.value(), &self.fields, &mut found) {
                Ok(()) => out.push_with(record, |buf| self.write_object(buf, &found)),
                Err(reason) => out.reject(record, reason),
            }
        }
    }

    fn write_object(&self, buf: &mut Vec<u8>, found: &[Option<&RawValue>]) {
        buf.push(b'{');
        let mut first = true;
        for (prefix, raw) in self.prefixes.iter().zip(found) {
            let Some(raw) = raw else { continue };
            if !first {
                buf.push(b',');
            }
            first = false;
            buf.extend_from_slice(prefix);
            write_compact(buf, raw.get().as_bytes());
        }
        buf.push(b'}');
    }
}

/// Parses `value` as one JSON object and records the raw text of each of `fields` in `found`.
fn pick<'a>(
    value: &'a [u8],
    fields: &[String],
    found: &mut [Option<&'a RawValue>],
) -> Result<(), String> {
    let mut de = serde_json::Deserializer::from_slice(value);
    Pick { fields, found }
        .deserialize(&mut de)
        .and_then(|()| de.end())
        .map_err(|e| match e.classify() {
            serde_json::error::Category::Data => format!("value is JSON but not an object: {e}"),
            _ => format!("value is not valid JSON: {e}"),
        })
}

struct Pick<'f, 'a> {
    fields: &'f [String],
    found: &'f mut [Option<&'a RawValue>],
}

impl<'de> DeserializeSeed<'de> for Pick<'_, 'de> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Pick<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(field) = map.next_key_seed(FieldIndex(self.fields))? {
            match field {
                // A repeated key: the last one counts, as in most JSON readers.
                Some(i) => self.found[i] = Some(map.next_value()?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// Reads an object key as the index of the field it names, if any.
struct FieldIndex<'f>(&'f [String]);

impl<'de> DeserializeSeed<'de> for FieldIndex<'_> {
    type Value = Option<usize>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for FieldIndex<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self.0.iter().position(|f| f == key))
    }
}

/// Appends `raw`, valid JSON text, without the whitespace outside its strings.
fn write_compact(buf: &mut Vec<u8>, raw: &[u8]) {
    if !raw
        .iter()
        .any(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
    {
        buf.extend_from_slice(raw);
        return;
    }
    let mut in_string = false;
    let mut escaped = false;
    for &b in raw {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        } else if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            continue;
        }
        buf.push(b);
    }
}

/// Appends `s` as a JSON string literal.
fn write_json_string(buf: &mut Vec<u8>, s: &str) {
    buf.push(b'"');
    for &b in s.as_bytes() {
        match b {
            b'"' => buf.extend_from_slice(b"\\\""),
            b'\\' => buf.extend_from_slice(b"\\\\"),
            b'\n' => buf.extend_from_slice(b"\\n"),
            b'\r' => buf.extend_from_slice(b"\\r"),
            b'\t' => buf.extend_from_slice(b"\\t"),
            0..0x20 => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                buf.extend_from_slice(b"\\u00");
                buf.push(HEX[(b >> 4) as usize]);
                buf.push(HEX[(b & 0xf) as usize]);
            }
            _ => buf.push(b),
        }
    }
    buf.push(b'"');
}

impl Transform for JsonProject {
    fn init(params: &Params) -> Result<Self, String> {
        params.allow_only(&["fields"])?;
        Self::new(params.require("fields")?.split(',').map(str::trim))
    }

    fn transform(&mut self, _ctx: &Context, input: &Batch, out: &mut Output) -> Result<(), Error> {
        self.project(input, out);
        Ok(())
    }
}

export_transform!(JsonProject);

#[cfg(test)]
mod tests {
    use super::*;

    fn project(fields: &str, values: &[&str]) -> (Vec<String>, Vec<(u32, String)>) {
        let plugin = JsonProject::init(&Params::from_iter([("fields", fields)])).unwrap();
        let input = Batch::from_values(values);
        let mut out = Output::new();
        plugin.project(&input, &mut out);
        let kept = out
            .values()
            .map(|v| String::from_utf8(v.to_vec()).unwrap())
            .collect();
        let rejected = out
            .rejected()
            .iter()
            .map(|r| (r.index, r.reason.clone()))
            .collect();
        (kept, rejected)
    }

    #[test]
    fn named_fields_are_kept_in_the_order_given_and_compacted() {
        let (kept, rejected) = project(
            "b, a",
            &[
                r#"{"a": 1, "c": {"x": [1, 2]}, "b": { "s": "x y\" z" } }"#,
                r#"{"a":true}"#,
                "{}",
            ],
        );
        assert!(rejected.is_empty());
        assert_eq!(
            kept,
            [r#"{"b":{"s":"x y\" z"},"a":1}"#, r#"{"a":true}"#, "{}"]
        );
    }

    #[test]
    fn escaped_keys_match_and_the_last_of_repeated_keys_counts() {
        let (kept, _) = project("a\"b,k", &[r#"{"a\"b": 1, "k": 1, "k": 2}"#]);
        assert_eq!(kept, [r#"{"a\"b":1,"k":2}"#]);
    }

    #[test]
    fn invalid_json_and_non_objects_are_rejected_with_the_reason() {
        let (kept, rejected) = project(
            "a",
            &["{\"a\":", "[1]", "\"s\"", "{\"a\":1} x", "{\"a\":1}"],
        );
        assert_eq!(kept, [r#"{"a":1}"#]);
        let reasons: Vec<(u32, bool)> = rejected
            .iter()
            .map(|(i, r)| (*i, r.starts_with("value is not valid JSON")))
            .collect();
        assert_eq!(reasons, [(0, true), (1, false), (2, false), (3, true)]);
        assert!(rejected[1].1.contains("not an object"), "{}", rejected[1].1);
    }

    #[test]
    fn invalid_utf8_is_rejected() {
        let plugin = JsonProject::new(["a"]).unwrap();
        let input = Batch::from_values([b"{\"a\":\"\xff\"}".as_slice()]);
        let mut out = Output::new();
        plugin.project(&input, &mut out);
        assert_eq!(out.len(), 0);
        assert_eq!(out.rejected().len(), 1);
    }

    #[test]
    fn bad_field_lists_are_refused_by_name() {
        for fields in ["", "a,,b", "a,a"] {
            let err = JsonProject::init(&Params::from_iter([("fields", fields)])).unwrap_err();
            assert!(err.contains("`fields`"), "{fields:?}: {err}");
        }
        assert!(
            JsonProject::init(&Params::default())
                .unwrap_err()
                .contains("`fields`")
        );
    }
}
