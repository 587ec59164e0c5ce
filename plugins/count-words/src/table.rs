//! The count map: an open-addressing table (linear probing) whose entries hold a word's key
//! (see [`key`]): a word of up to 15 bytes is its key, so finding it is one hash of two loads
//! and, mostly, one entry compared as two integers, without reading the text of the word it
//! matches. Longer words are hashed whole and compared byte by byte.

use std::hash::BuildHasher;

use foldhash::fast::FixedState;

/// One distinct word of a call: its key ([`key`]; `b` is 0 in a free entry, never in a key)
/// and its count. 24 bytes: the table of a thousand words at an eighth load is 192 KiB, in a
/// core's second-level cache.
#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    a: u64,
    b: u64,
    count: u32,
}

/// A distinct word as [`Table::iter`] gives it.
#[derive(Debug, Clone, Copy)]
pub struct Word {
    /// Offset of its first occurrence in the call's text.
    pub start: u32,
    /// Its length in bytes.
    pub len: u32,
    /// How many times it occurred.
    pub count: u32,
    /// The record where it first occurred.
    pub origin: u32,
}

/// Where a distinct word first occurred: offset, length and record.
#[derive(Debug, Clone, Copy)]
struct First {
    start: u32,
    len: u32,
    origin: u32,
}

/// The table: entries and, in order of first appearance, where each distinct word's entry
/// is and where it first occurred. Kept across calls: [`Table::clear`] frees only the entries
/// used, keeping the memory.
#[derive(Debug)]
pub struct Table {
    /// A power of two of them, never empty.
    entries: Vec<Entry>,
    /// 64 − log2(`entries.len()`): a hash shifted right by it is a slot.
    shift: u32,
    /// For each entry in use, its word's index in `order` and `firsts`.
    rank: Vec<u32>,
    order: Vec<u32>,
    firsts: Vec<First>,
    hasher: FixedState,
}

/// Entries of the first table: room for 1,024 distinct words at an eighth load.
const FIRST_CAPACITY: usize = 8192;

impl Default for Table {
    fn default() -> Self {
        Self {
            entries: vec![Entry::default(); FIRST_CAPACITY],
            shift: 64 - FIRST_CAPACITY.trailing_zeros(),
            rank: vec![0; FIRST_CAPACITY],
            order: Vec::new(),
            firsts: Vec::new(),
            hasher: FixedState::default(),
        }
    }
}

impl Table {
    /// Forgets every word, keeping the memory.
    pub fn clear(&mut self) {
        for &p in &self.order {
            self.entries[p as usize].b = 0;
        }
        self.order.clear();
        self.firsts.clear();
    }

    /// The distinct words, in order of first appearance.
    pub fn iter(&self) -> impl Iterator<Item = Word> + '_ {
        self.order.iter().zip(&self.firsts).map(|(&p, f)| Word {
            start: f.start,
            len: f.len,
            count: self.entries[p as usize].count,
            origin: f.origin,
        })
    }

    /// How many distinct words.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Starts adding a call's words: see [`Counter`].
    pub fn counter(&mut self) -> Counter<'_> {
        Counter {
            entries: std::mem::take(&mut self.entries),
            shift: self.shift,
            table: self,
        }
    }

    /// Adds one to the count of the word `text[s..e]`: [`Counter::add`] (tests add a word or
    /// two at a time).
    #[cfg(test)]
    pub fn add(&mut self, text: &[u8], s: usize, e: usize, origin: impl FnOnce() -> u32) {
        self.counter().add(text, s, e, origin);
    }

    /// Puts a new word in the free entry `p` of `entries`, held by a [`Counter`], which it
    /// gives back (moved, and grown when the table passes an eighth full).
    #[cold]
    #[inline(never)]
    fn insert_held(
        &mut self,
        entries: Vec<Entry>,
        text: &[u8],
        p: usize,
        (a, b): (u64, u64),
        (s, e, origin): (usize, usize, u32),
    ) -> Vec<Entry> {
        self.entries = entries;
        self.entries[p] = Entry { a, b, count: 1 };
        self.rank[p] = self.order.len() as u32;
        self.order.push(p as u32);
        self.firsts.push(First {
            start: s as u32,
            len: (e - s) as u32,
            origin,
        });
        if self.order.len() * 8 > self.entries.len() {
            self.grow(text);
        }
        std::mem::take(&mut self.entries)
    }

    /// The hash of the word `text[s..s + len]` whose key is `k`.
    #[inline]
    fn hash(&self, text: &[u8], (a, b): (u64, u64), s: usize, len: usize) -> u64 {
        if len >= 16 {
            return self.hasher.hash_one(&text[s..s + len]);
        }
        // Two independent multiplies (WebAssembly has 64-bit ones, no 128-bit one), the
        // slot taken from the top bits of their xor: the top bits of a product depend on
        // every bit of its factor, and the two multiplies run side by side, so the slot is
        // known one multiply after the key (a chain of two multiplies and a fold took twice
        // as long, on the path from a word's bytes to its entry).
        a.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ b.wrapping_mul(0xff51_afd7_ed55_8ccd)
    }

    /// Doubles the table, putting every word back in place (in order of first appearance:
    /// the order list stays valid).
    fn grow(&mut self, text: &[u8]) {
        let size = self.entries.len() * 2;
        let shift = self.shift - 1;
        let mut entries = vec![Entry::default(); size];
        let mut rank = vec![0; size];
        let mut order = std::mem::take(&mut self.order);
        for (p, f) in order.iter_mut().zip(&self.firsts) {
            let en = self.entries[*p as usize];
            let hash = self.hash(text, (en.a, en.b), f.start as usize, f.len as usize);
            let mut q = (hash >> shift) as usize;
            while entries[q].b != 0 {
                q = (q + 1) & (size - 1);
            }
            entries[q] = en;
            rank[q] = self.rank[*p as usize];
            *p = q as u32;
        }
        self.order = order;
        self.entries = entries;
        self.rank = rank;
        self.shift = shift;
    }
}

/// The table while a call's words are added: its entries and slot shift held by value (and
/// handed to [`Table::insert_held`] and back by value, never by reference), so that the
/// guest's code keeps them in locals instead of reading them through the table for every
/// word: the table lives in linear memory, which any count's store might change as far as
/// the compiler can tell. About 6% faster in the guest (12 alternating pairs). Gives the
/// entries back when dropped, so a panic does not leave the table without them.
#[derive(Debug)]
pub struct Counter<'a> {
    entries: Vec<Entry>,
    shift: u32,
    table: &'a mut Table,
}

impl Counter<'_> {
    /// Adds one to the count of the word `text[s..e]` (not empty); when the word is new,
    /// `origin()` is the record it was first seen in. Offsets fit in `u32` (a call's text is
    /// a WebAssembly buffer).
    #[inline(always)]
    pub fn add(&mut self, text: &[u8], s: usize, e: usize, origin: impl FnOnce() -> u32) {
        let len = e - s;
        let k = key(text, s, len);
        let mask = self.entries.len() - 1;
        let mut p = (self.table.hash(text, k, s, len) >> self.shift) as usize;
        debug_assert!(p < self.entries.len());
        // The word's own slot first, outside the loop over the slots after it: in the guest
        // every turn of a loop checks the time budget, and nearly every word is in its own
        // slot.
        if self.found(text, p, k, (s, e)) {
            return;
        }
        // SAFETY: as in `found`.
        #[allow(unsafe_code)]
        if unsafe { self.entries.get_unchecked(p) }.b != 0 {
            loop {
                p = (p + 1) & mask;
                if self.found(text, p, k, (s, e)) {
                    return;
                }
                // SAFETY: as in `found`.
                #[allow(unsafe_code)]
                if unsafe { self.entries.get_unchecked(p) }.b == 0 {
                    break;
                }
            }
        }
        let entries = std::mem::take(&mut self.entries);
        self.entries = self
            .table
            .insert_held(entries, text, p, k, (s, e, origin()));
        self.shift = self.table.shift;
    }

    /// Whether the word `text[s..e]` with key `k` is in slot `p` (below `entries.len()`); if
    /// so, adds one to its count. A word of up to 15 bytes is found by one branch on its key,
    /// the entry's two integers compared at once.
    #[inline(always)]
    fn found(&mut self, text: &[u8], p: usize, k: (u64, u64), (s, e): (usize, usize)) -> bool {
        // SAFETY: `entries.len()` is 2^(64 − shift) (as in the table, and both are taken back
        // from it after an insert), so a 64-bit hash shifted right by `shift` is below it,
        // and so is a slot masked by `entries.len() - 1`. (The bounds check here, in the
        // guest's innermost loop, is a compare and a branch the JIT keeps.)
        #[allow(unsafe_code)]
        let en = unsafe { self.entries.get_unchecked_mut(p) };
        let found = (en.a ^ k.0) | (en.b ^ k.1) == 0
            && (e - s < 16
                || same_as_first(text, self.table.firsts[self.table.rank[p] as usize], s, e));
        if found {
            en.count += 1;
        }
        found
    }
}

impl Drop for Counter<'_> {
    fn drop(&mut self) {
        self.table.entries = std::mem::take(&mut self.entries);
    }
}

/// Whether the word of 16 bytes or more first seen as `first` is `text[s..e]`.
#[cold]
fn same_as_first(text: &[u8], first: First, s: usize, e: usize) -> bool {
    let at = first.start as usize;
    first.len as usize == e - s && same_bytes(&text[at..at + (e - s)], &text[s..e])
}

/// A word's key: its first 15 bytes (zero past its end) as two little-endian integers, and
/// in the top byte its length when below 16, 0xff from 16 on. A word of up to 15 bytes is
/// its key (the length tells apart words that differ only in trailing zero bytes), so it
/// is found by comparing one key; a longer one is compared byte by byte too.
#[inline]
fn key(text: &[u8], s: usize, len: usize) -> (u64, u64) {
    // Masks and tag looked up by length, no branch on it (the corpus's words are 3 to 9
    // bytes: a branch on 8 would be mispredicted often) and no shifts and selects to make them.
    let (ma, mb, tag) = KEY_MASKS[len.min(16)];
    let (a, b) = if s + 16 <= text.len() {
        // SAFETY: `s + 16 <= text.len()`: both 8-byte reads are inside `text`.
        #[allow(unsafe_code)]
        unsafe {
            let p = text.as_ptr().add(s);
            (
                p.cast::<u64>().read_unaligned(),
                p.add(8).cast::<u64>().read_unaligned(),
            )
        }
    } else {
        // Near the end of the text: a copy, so as not to read past it.
        let mut buf = [0u8; 16];
        let n = len.min(16);
        buf[..n].copy_from_slice(&text[s..s + n]);
        (load8(&buf, 0), load8(&buf, 8))
    };
    (u64::from_le(a) & ma, (u64::from_le(b) & mb) | tag)
}

/// For each length up to 16 (16: 16 and more), the masks of a key's two integers that keep
/// a word of that many bytes (15 at most), and the tag ORed into the second's top byte.
const KEY_MASKS: [(u64, u64, u64); 17] = {
    let mut m = [(0, 0, 0); 17];
    let mut n = 0;
    while n <= 16 {
        let keep = if n < 16 { n } else { 15 };
        let tag = if n < 16 { n as u64 } else { 0xff };
        m[n] = (
            low_bytes(keep),
            low_bytes(keep.saturating_sub(8)),
            tag << 56,
        );
        n += 1;
    }
    m
};

/// A mask of the low `n` bytes of a `u64` (all of them from 8 on).
const fn low_bytes(n: usize) -> u64 {
    if n >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * n)) - 1
    }
}

#[inline]
fn load8(w: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&w[at..at + 8]);
    u64::from_le_bytes(b)
}

/// Whether two words of more than 16 bytes are equal: 8 bytes at a time, inline (a slice
/// `==` calls `memcmp`, which in a WebAssembly guest is a loop over single bytes).
#[inline]
pub fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if n < 8 {
        return a == b;
    }
    let mut i = 0;
    while i + 8 < n {
        if load8(a, i) != load8(b, i) {
            return false;
        }
        i += 8;
    }
    load8(a, n - 8) == load8(b, n - 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_the_words_bytes_zero_padded_and_tagged_wherever_the_word_lies() {
        // The same word keyed in the middle of a text and at its very end must agree.
        for len in 1..=20 {
            let word: Vec<u8> = (0..len as u8).map(|i| b'a' + i).collect();
            let inside = [word.as_slice(), b" and more text after it"].concat();
            let at_end = [b"x ".as_slice(), &word].concat();
            let k = key(&inside, 0, len);
            assert_eq!(k, key(&at_end, 2, len), "len {len}");
            let mut padded = [0u8; 16];
            let kept = len.min(15);
            padded[..kept].copy_from_slice(&word[..kept]);
            padded[15] = if len < 16 { len as u8 } else { 0xff };
            assert_eq!(k, (load8(&padded, 0), load8(&padded, 8)), "len {len}");
        }
    }

    #[test]
    fn low_bytes_masks_exactly_the_first_n_bytes() {
        for n in 0..20usize {
            let want = (0..8)
                .filter(|&i| i < n)
                .fold(0u64, |m, i| m | 0xff << (8 * i));
            assert_eq!(low_bytes(n), want, "{n}");
        }
    }

    #[test]
    fn key_masks_keep_exactly_a_words_bytes_of_each_length() {
        for (n, &(ma, mb, tag)) in KEY_MASKS.iter().enumerate() {
            let keep = |from: usize| {
                (0..8)
                    .filter(|&i| from + i < n.min(15))
                    .fold(0u64, |m, i| m | 0xff << (8 * i))
            };
            assert_eq!((ma, mb), (keep(0), keep(8)), "{n}");
            assert_eq!(tag >> 56, if n < 16 { n as u64 } else { 0xff }, "{n}");
            assert_eq!(tag << 8, 0, "{n}");
        }
    }

    #[test]
    fn a_long_word_is_not_the_same_as_a_longer_one_it_begins() {
        // Keys hold 15 bytes of a long word: two long words, one the other's beginning, share
        // a key, and probing can pass the longer one's entry on the way to the shorter's.
        let text = b"abcdefghijklmnopq abcdefghijklmnop abcdefghijklmnopq";
        let longer = First {
            start: 0,
            len: 17,
            origin: 0,
        };
        assert_eq!(key(text, 0, 17), key(text, 18, 16));
        assert!(!same_as_first(text, longer, 18, 34));
        assert!(same_as_first(text, longer, 35, 52));
        let shorter = First {
            start: 18,
            len: 16,
            origin: 0,
        };
        assert!(!same_as_first(text, shorter, 0, 17));
    }

    #[test]
    fn long_words_sharing_16_bytes_are_told_apart() {
        let text = b"abcdefghijklmnopqr abcdefghijklmnopqs abcdefghijklmnopqr";
        let mut t = Table::default();
        t.add(text, 0, 18, || 0);
        t.add(text, 19, 37, || 0);
        t.add(text, 38, 56, || 1);
        let got: Vec<(u32, u32)> = t.iter().map(|w| (w.start, w.count)).collect();
        assert_eq!(got, [(0, 2), (19, 1)]);
    }

    #[test]
    fn growing_keeps_every_count_and_the_order() {
        let text: Vec<u8> = (0..5000u32)
            .flat_map(|i| format!("w{i:05} ").into_bytes())
            .collect();
        let mut t = Table::default();
        for round in 0..2 {
            for i in 0..5000 {
                t.add(&text, i * 7, i * 7 + 6, || round);
            }
        }
        assert_eq!(t.len(), 5000);
        assert!(
            t.iter()
                .enumerate()
                .all(|(i, e)| e.start as usize == i * 7 && e.count == 2 && e.origin == 0)
        );
        t.clear();
        assert_eq!(t.len(), 0);
        t.add(&text, 0, 6, || 3);
        assert_eq!(
            t.iter().map(|e| (e.count, e.origin)).collect::<Vec<_>>(),
            [(1, 3)]
        );
    }
}
