//! `count-words`: word count's map side, combined in the guest. Splits every value on ASCII
//! whitespace (as `split-words` does) and outputs each distinct word of the call once: keyed
//! by the word, its value the word's count in the call in decimal (`"3"`). Followed by
//! `count-by-key` with `sum-values = true`, it gives the same counts as `split-words` →
//! `count-by-key`, with one record per distinct word of a block instead of one per word, and
//! without the word sent twice (as key and as value).
//!
//! Each output record's origin is the input record where the word first appeared, and the
//! records come in that order.
//!
//! Parameters: `lowercase` (`"true"` or `"false"`, default `"false"`): lower-case the ASCII
//! letters of each word first.

mod scan;
mod table;

use sluice_sdk::{Batch, Context, Error, Output, Params, Transform, export_transform};

use crate::table::{Counter, Table, Word};

/// The count map, kept across calls (the `table` module): each word named by its offset into the
/// call's text, so that counting a word allocates nothing and no word is copied. Clearing
/// keeps the capacity, so the next call starts with a table sized for the previous call's
/// distinct words.
#[derive(Debug, Default)]
pub struct WordCounts {
    table: Table,
    lower: Vec<u8>,
}

/// The words one [`WordCounts::count`] found: each distinct word, its count and its origin.
#[derive(Debug)]
pub struct Counted<'a> {
    text: &'a [u8],
    table: &'a Table,
}

impl<'a> Counted<'a> {
    /// How many distinct words.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether there were no words.
    pub fn is_empty(&self) -> bool {
        self.table.len() == 0
    }

    /// Every distinct word with its count and the index of the record where it first
    /// appeared, in order of first appearance.
    pub fn iter(&self) -> impl Iterator<Item = (&'a [u8], u32, u32)> + '_ {
        let text = self.text;
        self.table.iter().map(move |w: Word| {
            let start = w.start as usize;
            (&text[start..start + w.len as usize], w.count, w.origin)
        })
    }

    /// The bytes of all distinct words together.
    pub fn word_bytes(&self) -> usize {
        self.table.iter().map(|w| w.len as usize).sum()
    }
}

impl WordCounts {
    /// Counts the words of the values laid out as `data` with value `i` ending at `ends[i]`
    /// (a batch's values buffer), lower-cased first with `lowercase`. A word never spans two
    /// values. Forgets the previous call's counts, keeping its memory.
    ///
    /// The whole buffer is scanned for words at once (64 bytes at a time), the values' ends
    /// cutting words as whitespace does (a line's last word against the next line's first,
    /// values having no separator between them).
    pub fn count<'a>(&'a mut self, data: &'a [u8], ends: &[u32], lowercase: bool) -> Counted<'a> {
        self.table.clear();
        let text: &[u8] = if lowercase {
            self.lower.clear();
            self.lower.extend(data.iter().map(u8::to_ascii_lowercase));
            &self.lower
        } else {
            data
        };
        // Bytes after the last value's end are no value's.
        let len = ends.last().map_or(0, |&e| (e as usize).min(text.len()));
        let text = &text[..len];
        let mut add = Add {
            table: self.table.counter(),
            text,
            ends,
        };
        scan::for_each_word(text, ends, &mut add);
        drop(add);
        let table = &self.table;
        Counted { text, table }
    }
}

/// Adds each word the scan finds to the table.
struct Add<'a> {
    table: Counter<'a>,
    text: &'a [u8],
    ends: &'a [u32],
}

impl scan::Runs for Add<'_> {
    // Inlined into the scan: a call per word (a closure here was not inlined) cost as much
    // as the scan itself.
    #[inline(always)]
    fn run(&mut self, s: usize, e: usize) {
        // The record holding the word, asked only of a word not seen before.
        let ends = self.ends;
        self.table.add(self.text, s, e, || origin(ends, s));
    }
}

/// The index of the record holding the byte at `at`: the number of records ending at or
/// before it.
#[cold]
fn origin(ends: &[u32], at: usize) -> u32 {
    ends.partition_point(|&e| e as usize <= at) as u32
}

/// `n` in decimal, written at the end of `buf`.
pub fn decimal(mut n: u32, buf: &mut [u8; 10]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

/// Appends one record per distinct word of `input` to `out`: the word as key, its count in
/// decimal as value, from the record where it first appeared.
pub fn count_words(counts: &mut WordCounts, input: &Batch, lowercase: bool, out: &mut Output) {
    let counted = counts.count(input.values_data(), input.value_ends(), lowercase);
    if out.is_empty() {
        // The SDK's output would reserve room for as much as the input holds: for a block of
        // a million lines, twice the block in the guest's memory for a thousand words.
        *out = Output::with_capacity(counted.len(), counted.len() * 4);
    }
    let mut num = [0u8; 10];
    for (word, count, origin) in counted.iter() {
        out.push_keyed(origin, word, decimal(count, &mut num));
    }
}

/// The plugin: whether to lower-case, and the count map it keeps across calls.
#[derive(Debug)]
pub struct CountWords {
    lowercase: bool,
    counts: WordCounts,
}

impl Transform for CountWords {
    fn init(params: &Params) -> Result<Self, String> {
        params.allow_only(&["lowercase"])?;
        Ok(Self {
            lowercase: params.flag("lowercase")?,
            counts: WordCounts::default(),
        })
    }

    fn transform(&mut self, _ctx: &Context, input: &Batch, out: &mut Output) -> Result<(), Error> {
        count_words(&mut self.counts, input, self.lowercase, out);
        Ok(())
    }
}

export_transform!(CountWords);

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::table::same_bytes;

    fn counted(
        counts: &mut WordCounts,
        input: &[&str],
        lowercase: bool,
    ) -> Vec<(String, u32, u32)> {
        let input = Batch::from_values(input);
        let mut out = Output::new();
        count_words(counts, &input, lowercase, &mut out);
        (0..out.len())
            .map(|i| {
                let count = std::str::from_utf8(out.value(i)).unwrap().parse().unwrap();
                let word = String::from_utf8(out.key(i).unwrap().to_vec()).unwrap();
                (word, count, out.origin(i))
            })
            .collect()
    }

    /// The counts `split-words` → `count-by-key` would give: every word counted one by one.
    fn naive(input: &[&str]) -> BTreeMap<String, u32> {
        let mut m = BTreeMap::new();
        for v in input {
            for w in v
                .split(|c: char| c.is_ascii_whitespace())
                .filter(|w| !w.is_empty())
            {
                *m.entry(w.to_string()).or_default() += 1;
            }
        }
        m
    }

    #[test]
    fn each_distinct_word_once_with_its_count_and_first_origin() {
        let mut counts = WordCounts::default();
        let got = counted(
            &mut counts,
            &["the fox the", "", " \t\n", "fox\r\nthe dog"],
            false,
        );
        let expected = [("the", 3, 0), ("fox", 2, 0), ("dog", 1, 3)];
        assert_eq!(got, expected.map(|(w, c, o)| (w.to_string(), c, o)));
    }

    #[test]
    fn a_word_never_spans_two_values() {
        let mut counts = WordCounts::default();
        let got = counted(&mut counts, &["ab", "ab", "a", "b"], false);
        let expected = [("ab", 2, 0), ("a", 1, 2), ("b", 1, 3)];
        assert_eq!(got, expected.map(|(w, c, o)| (w.to_string(), c, o)));
    }

    #[test]
    fn counts_equal_counting_word_by_word_across_reused_calls() {
        let mut counts = WordCounts::default();
        // Many distinct words (the table grows), then a smaller call on the same map: the
        // second must not see the first's words.
        let big: Vec<String> = (0..5000)
            .map(|i| format!("w{} w{} shared", i % 1700, i % 13))
            .collect();
        let big: Vec<&str> = big.iter().map(String::as_str).collect();
        for input in [&big[..], &["shared x", "x  y"][..], &big[..]] {
            let got: BTreeMap<String, u32> = counted(&mut counts, input, false)
                .into_iter()
                .map(|(w, c, _)| (w, c))
                .collect();
            assert_eq!(got, naive(input));
        }
    }

    #[test]
    fn lowercase_folds_ascii_letters_before_counting() {
        let mut counts = WordCounts::default();
        let got = counted(&mut counts, &["The ÉTÉ the THE été"], true);
        let expected = [("the", 3, 0), ("ÉtÉ", 1, 0), ("été", 1, 0)];
        assert_eq!(got, expected.map(|(w, c, o)| (w.to_string(), c, o)));
    }

    #[test]
    fn words_of_every_length_up_to_40_bytes_are_told_apart_and_found_again() {
        // Words that differ in one byte at every position, and in length only (zero bytes at
        // the end are not padding): each must be its own entry.
        let mut words = Vec::new();
        for len in 0..40usize {
            let base: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            for at in 0..len {
                let mut w = base.clone();
                w[at] = b'Z';
                words.push(w);
            }
            words.push(base.clone());
            words.push([base.as_slice(), &[0]].concat());
        }
        for (i, a) in words.iter().enumerate() {
            for b in &words[i + 1..] {
                assert_eq!(same_bytes(a, b), a == b, "{a:?} {b:?}");
            }
            assert!(same_bytes(a, a));
        }
        let mut data = Vec::new();
        let mut ends = Vec::new();
        for w in words.iter().chain(words.iter()) {
            data.extend_from_slice(w);
            data.push(b' ');
            ends.push(data.len() as u32);
        }
        let mut counts = WordCounts::default();
        let counted = counts.count(&data, &ends, false);
        let distinct: std::collections::BTreeSet<&[u8]> = words
            .iter()
            .filter(|w| !w.is_empty())
            .map(Vec::as_slice)
            .collect();
        assert_eq!(counted.len(), distinct.len());
        assert!(
            counted
                .iter()
                .all(|(w, n, _)| n == 2 && distinct.contains(w))
        );
    }

    #[test]
    fn counts_and_origins_equal_a_record_by_record_count_wherever_records_are_cut() {
        // Records cut anywhere (inside words, empty, only separators, across the 64-byte
        // chunks the scan reads): each word counted in its own record, the origin the first
        // record holding it, the order that of first appearance.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let pieces = [
            "ab",
            "a",
            "abcdefghijklmnopq",
            "é",
            " ",
            "\t",
            "\r\n",
            "\x0B",
            "zz",
        ];
        let mut counts = WordCounts::default();
        for _ in 0..300 {
            let text: String = (0..next(120)).map(|_| pieces[next(9) as usize]).collect();
            let mut cuts: Vec<usize> = (0..next(8))
                .map(|_| next(text.len() as u64 + 1) as usize)
                .filter(|&c| text.is_char_boundary(c))
                .collect();
            cuts.push(text.len());
            cuts.sort_unstable();
            let mut records = Vec::new();
            let mut from = 0;
            for c in cuts {
                records.push(&text[from..c]);
                from = c;
            }
            let mut want: Vec<(String, u32, u32)> = Vec::new();
            for (r, v) in records.iter().enumerate() {
                for w in v
                    .split(|c: char| c.is_ascii_whitespace())
                    .filter(|w| !w.is_empty())
                {
                    match want.iter_mut().find(|(x, _, _)| x == w) {
                        Some(e) => e.1 += 1,
                        None => want.push((w.to_string(), 1, r as u32)),
                    }
                }
            }
            assert_eq!(counted(&mut counts, &records, false), want, "{records:?}");
        }
    }

    #[test]
    fn decimal_writes_every_digit() {
        let mut buf = [0u8; 10];
        for n in [0, 7, 10, 1234, u32::MAX] {
            assert_eq!(decimal(n, &mut buf), n.to_string().as_bytes());
        }
    }

    #[test]
    fn lowercase_must_be_a_boolean() {
        let err = CountWords::init(&Params::from_iter([("lowercase", "1")])).unwrap_err();
        assert!(err.contains("`lowercase`"), "{err}");
    }
}
