//! `grep`: a filter that keeps the records whose value contains a pattern.
//!
//! Parameters: `pattern` (required, not empty): the bytes to look for; `invert` (`"true"` or
//! `"false"`, default `"false"`): keep the records that do *not* contain it instead.

use memchr::memmem::Finder;
use sluice_sdk::{Batch, Context, Error, Output, Params, Transform, export_transform};

/// The plugin: a compiled pattern and whether to invert the match.
#[derive(Debug)]
pub struct Grep {
    finder: Finder<'static>,
    invert: bool,
}

impl Grep {
    /// A filter for `pattern`, which must not be empty.
    pub fn new(pattern: &[u8], invert: bool) -> Result<Self, String> {
        if pattern.is_empty() {
            return Err("parameter `pattern` must not be empty".to_string());
        }
        Ok(Self {
            finder: Finder::new(pattern).into_owned(),
            invert,
        })
    }

    /// Appends to `out` the records of `input` whose value contains the pattern (or, inverted,
    /// does not).
    ///
    /// It searches the whole values buffer at once rather than record by record, so a run of
    /// records without a match costs one vectorised scan; a match that straddles two values
    /// does not count.
    pub fn filter(&self, input: &Batch, out: &mut Output) {
        let data = input.values_data();
        let ends = input.value_ends();
        let len = self.finder.needle().len();
        // Records before `next` are decided; `pos` is where the search goes on.
        let mut next = 0;
        let mut pos = 0;
        while let Some(offset) = self.finder.find(&data[pos..]) {
            let hit = pos + offset;
            // The record holding byte `hit`: the first whose end is past it. A linear walk, as
            // the records passed over are decided here anyway.
            let mut record = next;
            while ends[record] as usize <= hit {
                record += 1;
            }
            let end = ends[record] as usize;
            if hit + len > end {
                // Straddles into the next value: look again one byte on.
                pos = hit + 1;
                continue;
            }
            self.decide(input, next..record, false, out);
            self.decide(input, record..record + 1, true, out);
            next = record + 1;
            pos = end;
        }
        self.decide(input, next..ends.len(), false, out);
    }

    /// Keeps the records in `range`, which all contain the pattern or all do not.
    #[inline]
    fn decide(
        &self,
        input: &Batch,
        range: std::ops::Range<usize>,
        matched: bool,
        out: &mut Output,
    ) {
        if matched != self.invert {
            for i in range {
                out.push(i as u32, input.value(i));
            }
        }
    }
}

impl Transform for Grep {
    fn init(params: &Params) -> Result<Self, String> {
        params.allow_only(&["pattern", "invert"])?;
        let pattern = params.require("pattern")?;
        Self::new(pattern.as_bytes(), params.flag("invert")?)
    }

    fn transform(&mut self, _ctx: &Context, input: &Batch, out: &mut Output) -> Result<(), Error> {
        self.filter(input, out);
        // Once per batch, never per record: what was kept and what was dropped.
        sluice_sdk::metrics::counter_add("grep_kept_total", out.len() as u64);
        sluice_sdk::metrics::counter_add("grep_dropped_total", (input.len() - out.len()) as u64);
        Ok(())
    }
}

export_transform!(Grep);

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(grep: &Grep, values: &[&[u8]]) -> Vec<u32> {
        let input = Batch::from_values(values);
        let mut out = Output::new();
        grep.filter(&input, &mut out);
        (0..out.len())
            .map(|i| {
                assert_eq!(out.value(i), values[out.origin(i) as usize]);
                out.origin(i)
            })
            .collect()
    }

    #[test]
    fn records_containing_the_pattern_are_kept() {
        let grep = Grep::new(b"err", false).unwrap();
        let values: [&[u8]; 5] = [b"an error", b"ok", b"", b"err", b"fine"];
        assert_eq!(kept(&grep, &values), [0, 3]);
    }

    #[test]
    fn invert_keeps_the_others() {
        let grep = Grep::new(b"err", true).unwrap();
        let values: [&[u8]; 5] = [b"an error", b"ok", b"", b"err", b"fine"];
        assert_eq!(kept(&grep, &values), [1, 2, 4]);
    }

    #[test]
    fn a_match_across_two_values_does_not_count() {
        let grep = Grep::new(b"abc", false).unwrap();
        let values: [&[u8]; 4] = [b"xa", b"bc", b"ab", b"cabc"];
        assert_eq!(kept(&grep, &values), [3]);
    }

    #[test]
    fn the_whole_buffer_search_agrees_with_a_naive_one() {
        // A small deterministic generator, so that failures reproduce.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..200 {
            let values: Vec<Vec<u8>> = (0..next() % 30)
                .map(|_| {
                    (0..next() % 8)
                        .map(|_| b"ab"[(next() % 2) as usize])
                        .collect()
                })
                .collect();
            let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
            let pattern: &[u8] = [b"ab".as_slice(), b"aab", b"b", b"abba"][round % 4];
            for invert in [false, true] {
                let expected: Vec<u32> = (0..refs.len() as u32)
                    .filter(|&i| {
                        refs[i as usize]
                            .windows(pattern.len())
                            .any(|w| w == pattern)
                            != invert
                    })
                    .collect();
                let grep = Grep::new(pattern, invert).unwrap();
                assert_eq!(kept(&grep, &refs), expected, "{values:?} / {pattern:?}");
            }
        }
    }

    #[test]
    fn a_missing_or_empty_pattern_is_refused_by_name() {
        assert!(
            Grep::init(&Params::default())
                .unwrap_err()
                .contains("`pattern`")
        );
        let empty = Params::from_iter([("pattern", "")]);
        assert!(Grep::init(&empty).unwrap_err().contains("`pattern`"));
        let bad_flag = Params::from_iter([("pattern", "x"), ("invert", "yes")]);
        assert!(Grep::init(&bad_flag).unwrap_err().contains("`invert`"));
    }
}
