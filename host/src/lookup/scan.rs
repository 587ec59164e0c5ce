//! A JSON object read without building it: [`scan`] checks that bytes are one JSON object and
//! picks out what a lookup needs (the join key's value, whether a member is already there),
//! borrowing from the input, so a record costs no allocation unless its key needs unescaping.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// What [`scan`] found in a JSON object.
#[derive(Debug, PartialEq, Eq)]
pub struct Scanned<'a> {
    /// The join key: the value of the key field (a string's text; a number's or boolean's JSON
    /// text). `None` when the field is missing, null, an object or an array.
    pub key: Option<Cow<'a, [u8]>>,
    /// Whether the object has a member named `into` already.
    pub has_into: bool,
    /// Whether the object has no member at all.
    pub empty: bool,
}

/// Reads `text` as one JSON object (whitespace around it allowed), taking the value of member
/// `key_field` as a key and noting whether member `into` is there. An error when `text` is not
/// exactly one JSON object.
pub fn scan<'a>(
    text: &'a [u8],
    key_field: Option<&str>,
    into: Option<&str>,
) -> Result<Scanned<'a>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(text);
    let found = de.deserialize_map(Object { key_field, into })?;
    de.end()?;
    Ok(found)
}

struct Object<'f> {
    key_field: Option<&'f str>,
    into: Option<&'f str>,
}

impl<'de> Visitor<'de> for Object<'_> {
    type Value = Scanned<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Scanned {
            key: None,
            has_into: false,
            empty: true,
        };
        while let Some(Name(name)) = map.next_key()? {
            out.empty = false;
            if self.into == Some(&*name) {
                out.has_into = true;
            }
            if self.key_field == Some(&*name) {
                // A repeated member: the last one counts, as for every JSON reader here.
                out.key = map.next_value::<KeyValue>()?.0;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(out)
    }
}

/// A member name, borrowed unless it has escapes.
struct Name<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(Name(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Name(Cow::Owned(s.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// The key field's value as key bytes.
struct KeyValue<'de>(Option<Cow<'de, [u8]>>);

impl<'de> Deserialize<'de> for KeyValue<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = KeyValue<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(KeyValue(Some(Cow::Borrowed(s.as_bytes()))))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        Ok(KeyValue(Some(Cow::Owned(s.as_bytes().to_vec()))))
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
        Ok(KeyValue(Some(Cow::Owned(n.to_string().into_bytes()))))
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
        Ok(KeyValue(Some(Cow::Owned(n.to_string().into_bytes()))))
    }
    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Self::Value, E> {
        let text = serde_json::Number::from_f64(n).map_or_else(|| n.to_string(), |n| n.to_string());
        Ok(KeyValue(Some(Cow::Owned(text.into_bytes()))))
    }
    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Self::Value, E> {
        let text: &'static [u8] = if b { b"true" } else { b"false" };
        Ok(KeyValue(Some(Cow::Borrowed(text))))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(KeyValue(None))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(KeyValue(None))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(KeyValue(None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str, field: &str) -> Option<Vec<u8>> {
        scan(text.as_bytes(), Some(field), None)
            .unwrap()
            .key
            .map(Cow::into_owned)
    }

    #[test]
    fn a_key_is_a_strings_text_or_a_scalars_json_text() {
        assert_eq!(key(r#"{"a":1,"c":"x7"}"#, "c").unwrap(), b"x7");
        assert_eq!(key(r#"{"c":"a\"b"}"#, "c").unwrap(), b"a\"b");
        assert_eq!(key(r#"{"c":42}"#, "c").unwrap(), b"42");
        assert_eq!(key(r#"{"c":-3}"#, "c").unwrap(), b"-3");
        assert_eq!(key(r#"{"c":true}"#, "c").unwrap(), b"true");
        assert_eq!(key(r#"{"c":null}"#, "c"), None);
        assert_eq!(key(r#"{"c":{"d":1}}"#, "c"), None);
        assert_eq!(key(r#"{"c":[1]}"#, "c"), None);
        assert_eq!(key(r#"{"b":"x"}"#, "c"), None);
        assert_eq!(key(r#"{"c":"1","c":"2"}"#, "c").unwrap(), b"2");
    }

    #[test]
    fn only_one_whole_json_object_scans() {
        for bad in ["[1]", "\"s\"", "42", "{\"a\":1} x", "{\"a\":", "hello", ""] {
            assert!(scan(bad.as_bytes(), None, None).is_err(), "{bad}");
        }
        let s = scan(b"  {} \n", None, Some("x")).unwrap();
        assert!(s.empty && !s.has_into);
        let s = scan(br#"{"x":{"y":1}}"#, Some("y"), Some("x")).unwrap();
        assert!(!s.empty && s.has_into && s.key.is_none());
    }
}
