//! Secrets from the pipeline file (shared access keys, connection strings, passwords): kept
//! out of every log line, error, `Debug` dump and checkpoint by construction.
//!
//! A [`Secret`] prints as `***` through both `Debug` and `Display`; the only way to its text is
//! [`Secret::expose`], called where the secret is used (signing a token, a SASL exchange).

use std::fmt;

use serde::{Deserialize, Deserializer};

/// A string that never prints.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(text: impl Into<String>) -> Self {
        Secret(text.into())
    }

    /// The secret itself: only for the code that uses it, never for a message.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Removes every occurrence of this secret (and of its URL-encoded form) from `text`: for
    /// messages that come from outside (a broker's error description) and might echo it.
    pub fn scrub(&self, text: &str) -> String {
        if self.0.len() < 4 {
            return text.to_owned();
        }
        let encoded =
            percent_encoding::utf8_percent_encode(&self.0, percent_encoding::NON_ALPHANUMERIC)
                .to_string();
        text.replace(&self.0, "***").replace(&encoded, "***")
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Through a visitor of our own, so a wrong type never quotes the value in the error.
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret::new(v))
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_prints() {
        let s = Secret::new("hunter2-very-secret");
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Holder {
            key: Secret,
        }
        let dump = format!("{:?}", Holder { key: s.clone() });
        assert!(!dump.contains("hunter2"), "{dump}");
        assert_eq!(
            s.scrub("refused hunter2-very-secret and hunter2%2Dvery%2Dsecret"),
            "refused *** and ***"
        );
    }
}
