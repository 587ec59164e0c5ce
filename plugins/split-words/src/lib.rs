//! `split-words`: a flat-map that splits every value on ASCII whitespace and outputs each word
//! as a record whose key and value are both the word, so that a later step can count by key.
//!
//! Parameters: `lowercase` (`"true"` or `"false"`, default `"false"`): lower-case the ASCII
//! letters of each word first.

use sluice_sdk::{Batch, Context, Error, Output, Params, Transform, export_transform};

/// Appends every word of every value of `input` to `out`, keyed by itself; with `lowercase`,
/// ASCII letters are lower-cased. Empty values and values of only whitespace give no record.
pub fn split_words(input: &Batch, lowercase: bool, out: &mut Output) {
    let mut lower = Vec::new();
    for record in input.records() {
        for word in record
            .value()
            .split(u8::is_ascii_whitespace)
            .filter(|w| !w.is_empty())
        {
            if lowercase {
                lower.clear();
                lower.extend(word.iter().map(u8::to_ascii_lowercase));
                out.push_keyed(record, &lower, &lower);
            } else {
                out.push_keyed(record, word, word);
            }
        }
    }
}

/// The plugin: whether to lower-case.
#[derive(Debug)]
pub struct SplitWords {
    lowercase: bool,
}

impl Transform for SplitWords {
    fn init(params: &Params) -> Result<Self, String> {
        params.allow_only(&["lowercase"])?;
        Ok(Self {
            lowercase: params.flag("lowercase")?,
        })
    }

    fn transform(&mut self, _ctx: &Context, input: &Batch, out: &mut Output) -> Result<(), Error> {
        split_words(input, self.lowercase, out);
        Ok(())
    }
}

export_transform!(SplitWords);

#[cfg(test)]
mod tests {
    use super::*;

    fn words(input: &[&str], lowercase: bool) -> Vec<(String, u32)> {
        let input = Batch::from_values(input);
        let mut out = Output::new();
        split_words(&input, lowercase, &mut out);
        (0..out.len())
            .map(|i| {
                assert_eq!(out.key(i), Some(out.value(i)), "key and value are the word");
                (
                    String::from_utf8(out.value(i).to_vec()).unwrap(),
                    out.origin(i),
                )
            })
            .collect()
    }

    #[test]
    fn each_word_becomes_a_record_keyed_by_itself() {
        let got = words(&["the quick\tfox", "", "  \n ", "Jumps  Over\r\n"], false);
        let expected = [
            ("the", 0),
            ("quick", 0),
            ("fox", 0),
            ("Jumps", 3),
            ("Over", 3),
        ];
        assert_eq!(got, expected.map(|(w, o)| (w.to_string(), o)));
    }

    #[test]
    fn lowercase_folds_ascii_letters_only() {
        let got = words(&["The ÉTÉ Fox"], true);
        let expected = [("the", 0), ("ÉtÉ", 0), ("fox", 0)];
        assert_eq!(got, expected.map(|(w, o)| (w.to_string(), o)));
    }

    #[test]
    fn lowercase_must_be_a_boolean() {
        let err = SplitWords::init(&Params::from_iter([("lowercase", "1")])).unwrap_err();
        assert!(err.contains("`lowercase`"), "{err}");
    }
}
