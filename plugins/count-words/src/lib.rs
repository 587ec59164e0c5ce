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

use std::hash::BuildHasher;

use foldhash::fast::FixedState;
use hashbrown::HashTable;
use sluice_sdk::{Batch, Context, Error, Output, Params, Transform, export_transform};

/// One distinct word of a call: where its first occurrence is in the text, and its count.
#[derive(Debug, Clone, Copy)]
struct Slot {
    hash: u64,
    start: u32,
    len: u32,
    count: u32,
    origin: u32,
}

/// The count map, kept across calls: a hash table of indices into `slots`, each naming its
/// word by offset into the call's text, so that counting a word allocates nothing and no word
/// is copied. Clearing keeps the capacity, so the next call starts with a table sized for the
/// previous call's distinct words.
#[derive(Debug, Default)]
pub struct WordCounts {
    table: HashTable<u32>,
    slots: Vec<Slot>,
    lower: Vec<u8>,
    hasher: FixedState,
}

/// The words one [`WordCounts::count`] found: each distinct word, its count and its origin.
#[derive(Debug)]
pub struct Counted<'a> {
    text: &'a [u8],
    slots: &'a [Slot],
}

impl<'a> Counted<'a> {
    /// How many distinct words.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether there were no words.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Every distinct word with its count and the index of the record where it first
    /// appeared, in order of first appearance.
    pub fn iter(&self) -> impl Iterator<Item = (&'a [u8], u32, u32)> + '_ {
        self.slots.iter().map(|s| {
            let start = s.start as usize;
            (&self.text[start..start + s.len as usize], s.count, s.origin)
        })
    }

    /// The bytes of all distinct words together.
    pub fn word_bytes(&self) -> usize {
        self.slots.iter().map(|s| s.len as usize).sum()
    }
}

impl WordCounts {
    /// Counts the words of the values laid out as `data` with value `i` ending at `ends[i]`
    /// (a batch's values buffer), lower-cased first with `lowercase`. A word never spans two
    /// values. Forgets the previous call's counts, keeping its memory.
    pub fn count<'a>(&'a mut self, data: &'a [u8], ends: &[u32], lowercase: bool) -> Counted<'a> {
        self.table.clear();
        self.slots.clear();
        let text: &[u8] = if lowercase {
            self.lower.clear();
            self.lower.extend(data.iter().map(u8::to_ascii_lowercase));
            &self.lower
        } else {
            data
        };
        let (table, slots, hasher) = (&mut self.table, &mut self.slots, &self.hasher);
        let mut start = 0usize;
        for (origin, &end) in ends.iter().enumerate() {
            let end = (end as usize).min(text.len());
            let mut j = start;
            while j < end {
                while j < end && text[j].is_ascii_whitespace() {
                    j += 1;
                }
                let w = j;
                while j < end && !text[j].is_ascii_whitespace() {
                    j += 1;
                }
                if j > w {
                    add(table, slots, hasher, text, (w, j), origin as u32);
                }
            }
            start = end;
        }
        Counted { text, slots }
    }
}

/// Adds one to the count of the word `text[w..j]` (first seen in record `origin`).
#[inline]
fn add(
    table: &mut HashTable<u32>,
    slots: &mut Vec<Slot>,
    hasher: &FixedState,
    text: &[u8],
    (w, j): (usize, usize),
    origin: u32,
) {
    let word = &text[w..j];
    let hash = word_hash(hasher, word);
    let same = |&i: &u32| {
        let s = &slots[i as usize];
        s.hash == hash
            && s.len as usize == word.len()
            && same_bytes(&text[s.start as usize..(s.start + s.len) as usize], word)
    };
    if let Some(&i) = table.find(hash, same) {
        slots[i as usize].count += 1;
        return;
    }
    let i = slots.len() as u32;
    slots.push(Slot {
        hash,
        start: w as u32,
        len: (j - w) as u32,
        count: 1,
        origin,
    });
    table.insert_unique(hash, i, |&i| slots[i as usize].hash);
}

/// A word's hash: for a word of at most 16 bytes (nearly all), two overlapping 8-byte loads
/// and their length mixed with 64-bit multiplies only. foldhash's `hash_one` writes the length
/// and the bytes as two rounds of a 128-bit multiply, which WebAssembly has no instruction for
/// (a call to `__multi3` per round); longer words take that path.
#[inline]
fn word_hash(hasher: &FixedState, w: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let n = w.len();
    let (a, b) = match n {
        0 => (0, 0),
        1..=3 => (
            u64::from(w[0]) | u64::from(w[n / 2]) << 8 | u64::from(w[n - 1]) << 16,
            0,
        ),
        4..=7 => (u64::from(load4(w, 0)), u64::from(load4(w, n - 4))),
        8..=16 => (load8(w, 0), load8(w, n - 8)),
        _ => return hasher.hash_one(w),
    };
    // (a, b, n) names a word of up to 16 bytes; murmur3's finaliser spreads it over all bits
    // (hashbrown takes the top 7 for its control bytes and the low ones for the bucket).
    let mut h = (a ^ K).wrapping_mul(0xff51_afd7_ed55_8ccd) ^ b.rotate_left(29) ^ (n as u64) << 56;
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 29;
    h = h.wrapping_mul(K);
    h ^ h >> 32
}

#[inline]
fn load8(w: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&w[at..at + 8]);
    u64::from_le_bytes(b)
}

#[inline]
fn load4(w: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&w[at..at + 4]);
    u32::from_le_bytes(b)
}

/// Whether two words of the same length are equal: 8 bytes at a time, inline (a slice `==`
/// calls `memcmp`, which in a WebAssembly guest is a loop over single bytes).
#[inline]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    match n {
        0 => true,
        // Positions 0, n/2 and n-1 cover every byte of 1 to 3.
        1..=3 => a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1],
        4..=7 => load4(a, 0) == load4(b, 0) && load4(a, n - 4) == load4(b, n - 4),
        _ => {
            let mut i = 0;
            while i + 8 < n {
                if load8(a, i) != load8(b, i) {
                    return false;
                }
                i += 8;
            }
            load8(a, n - 8) == load8(b, n - 8)
        }
    }
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
