//! `json-upper` in Rust: keeps the string fields `user` (ASCII upper-cased) and `item` of each
//! JSON object, and rejects every other value with one of four reasons (see `../SPEC.md`).

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use sluice_sdk::{Batch, Context, Error, Output, Params, Transform, export_transform};

/// The plugin; it takes no parameters.
pub struct JsonUpper;

impl Transform for JsonUpper {
    fn init(params: &Params) -> Result<Self, String> {
        match params.iter().next() {
            Some((key, _)) => Err(format!("unknown parameter {key:?}: json-upper takes none")),
            None => Ok(Self),
        }
    }

    fn transform(&mut self, _ctx: &Context, input: &Batch, out: &mut Output) -> Result<(), Error> {
        upper(input, out);
        Ok(())
    }
}

export_transform!(JsonUpper);

/// Appends `{"user":U,"item":I}` for each record of `input` that is a JSON object with string
/// fields `user` and `item`, and rejects the others with the reason SPEC.md gives.
pub fn upper(input: &Batch, out: &mut Output) {
    for record in input.records() {
        match fields(record.value()) {
            Ok((mut user, item)) => out.push_with(record, |buf| {
                user.make_ascii_uppercase();
                buf.extend_from_slice(b"{\"user\":");
                write_string(buf, &user);
                buf.extend_from_slice(b",\"item\":");
                write_string(buf, &item);
                buf.push(b'}');
            }),
            Err(reason) => out.reject(record, reason),
        }
    }
}

/// Writes `s` as a JSON string, escaped as SPEC.md says (serde_json's escapes).
fn write_string(buf: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(buf, s).expect("writing to a Vec cannot fail");
}

/// The `user` and `item` strings of `value`, or the reason it is rejected.
fn fields(value: &[u8]) -> Result<(String, String), &'static str> {
    let text = std::str::from_utf8(value).map_err(|_| NOT_JSON)?;
    let mut de = serde_json::Deserializer::from_str(text);
    let picked = de::Deserializer::deserialize_any(&mut de, Top).map_err(|_| NOT_JSON)?;
    de.end().map_err(|_| NOT_JSON)?;
    let Some((user, item)) = picked else {
        return Err("not a JSON object");
    };
    let user = user.ok_or("field \"user\" is missing or not a string")?;
    let item = item.ok_or("field \"item\" is missing or not a string")?;
    Ok((user, item))
}

const NOT_JSON: &str = "not valid JSON";

/// `Some((user, item))` for an object (each `None` when missing or not a string), `None` for
/// any other JSON value.
type Picked = Option<(Option<String>, Option<String>)>;

struct Top;

macro_rules! not_an_object {
    ($($name:ident: $ty:ty),*) => {
        $(fn $name<E: de::Error>(self, _: $ty) -> Result<Picked, E> { Ok(None) })*
    };
}

impl<'de> Visitor<'de> for Top {
    type Value = Picked;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    not_an_object!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64, visit_str: &str);

    fn visit_unit<E: de::Error>(self) -> Result<Picked, E> {
        Ok(None)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Picked, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Picked, A::Error> {
        let (mut user, mut item) = (None, None);
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match key.as_ref() {
                // A field given twice counts with its last value.
                "user" => user = map.next_value_seed(StringOrNot)?,
                "item" => item = map.next_value_seed(StringOrNot)?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Some((user, item)))
    }
}

/// Reads any value: `Some` of it when it is a string, `None` otherwise.
struct StringOrNot;

impl<'de> DeserializeSeed<'de> for StringOrNot {
    type Value = Option<String>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        match <serde_json::Value as serde::Deserialize>::deserialize(d)? {
            serde_json::Value::String(s) => Ok(Some(s)),
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(values: &[&str]) -> (Vec<String>, Vec<String>) {
        let input = Batch::from_values(values.iter().map(|v| v.as_bytes()));
        let mut out = Output::new();
        upper(&input, &mut out);
        let kept = out
            .values()
            .map(|v| String::from_utf8(v.to_vec()).unwrap())
            .collect();
        let rejected = out.rejected().iter().map(|r| r.reason.clone()).collect();
        (kept, rejected)
    }

    #[test]
    fn keeps_user_upper_cased_and_item_with_json_escapes() {
        let (kept, _) = run(&[r#"{"item":"a\nb","user":"zo\u00eb x","n":[1,{"b":2}]}"#]);
        assert_eq!(kept, [r#"{"user":"ZOë X","item":"a\nb"}"#]);
    }

    #[test]
    fn rejects_with_the_four_reasons_in_order() {
        let (kept, rejected) = run(&["{", "[1]", r#"{"user":1}"#, r#"{"user":"u"}"#, "NaN"]);
        assert!(kept.is_empty());
        assert_eq!(
            rejected,
            [
                "not valid JSON",
                "not a JSON object",
                "field \"user\" is missing or not a string",
                "field \"item\" is missing or not a string",
                "not valid JSON"
            ]
        );
    }
}
