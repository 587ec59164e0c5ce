//! The count map: an open-addressing table (linear probing) whose entries hold a word of up to
//! 16 bytes as two integers, so that finding a word is one hash of two loads and, mostly, one
//! entry compared as integers, without reading the text of the word it matches. Longer words
//! are hashed whole and compared byte by byte.

use std::hash::BuildHasher;

use foldhash::fast::FixedState;

/// One distinct word of a call: its first 16 bytes (zero past its end) as two little-endian
/// integers, its length (0: the entry is free) and its count. 24 bytes: the table of a
/// thousand words at an eighth load is 192 KiB, in a core's second-level cache (the load of
/// a word's entry is where the guest waits most, a fifth of its time in the 2026-12-05
/// profile of word count).
#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    a: u64,
    b: u64,
    len: u32,
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

/// The table: entries and, in order of first appearance, where each distinct word's entry
/// is and where it first occurred (offset and record). Kept across calls: [`Table::clear`]
/// frees only the entries used, keeping the memory.
#[derive(Debug, Default)]
pub struct Table {
    entries: Vec<Entry>,
    /// For each entry in use, its word's index in `order` and `firsts`.
    rank: Vec<u32>,
    order: Vec<u32>,
    firsts: Vec<(u32, u32)>,
    hasher: FixedState,
}

/// Entries of the first table: room for 1,024 distinct words at an eighth load.
const FIRST_CAPACITY: usize = 8192;

impl Table {
    /// Forgets every word, keeping the memory.
    pub fn clear(&mut self) {
        for &p in &self.order {
            self.entries[p as usize].len = 0;
        }
        self.order.clear();
        self.firsts.clear();
    }

    /// The distinct words, in order of first appearance.
    pub fn iter(&self) -> impl Iterator<Item = Word> + '_ {
        self.order
            .iter()
            .zip(&self.firsts)
            .map(|(&p, &(start, origin))| {
                let e = &self.entries[p as usize];
                Word {
                    start,
                    len: e.len,
                    count: e.count,
                    origin,
                }
            })
    }

    /// How many distinct words.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Adds one to the count of the word `text[s..e]` (not empty); when the word is new,
    /// `origin()` is the record it was first seen in. Offsets fit in `u32` (a call's text is
    /// a WebAssembly buffer).
    #[inline(always)]
    pub fn add(&mut self, text: &[u8], s: usize, e: usize, origin: impl FnOnce() -> u32) {
        let len = e - s;
        let (a, b) = key(text, s, len);
        let hash = self.hash(text, (a, b), s, len);
        if self.entries.is_empty() {
            self.entries = vec![Entry::default(); FIRST_CAPACITY];
            self.rank = vec![0; FIRST_CAPACITY];
        }
        let (entries, rank, firsts) = (&mut self.entries[..], &self.rank, &self.firsts);
        let mask = entries.len() - 1;
        let mut p = slot(hash, entries.len());
        loop {
            // SAFETY: `entries.len()` is a power of two, so `p & mask` is below it. (The
            // bounds check here, in the guest's innermost loop, is a compare and a branch the
            // JIT keeps.)
            #[allow(unsafe_code)]
            let en = unsafe { entries.get_unchecked_mut(p & mask) };
            if en.len == 0 {
                break;
            }
            if en.a == a
                && en.b == b
                && en.len as usize == len
                && (len <= 16 || same_as_first(text, firsts[rank[p & mask] as usize].0, s, e))
            {
                en.count += 1;
                return;
            }
            p += 1;
        }
        self.insert(
            text,
            p & mask,
            Entry {
                a,
                b,
                len: len as u32,
                count: 1,
            },
            (s, origin()),
        );
    }

    /// Puts a new word in the free entry `p`.
    #[cold]
    #[inline(never)]
    fn insert(&mut self, text: &[u8], p: usize, entry: Entry, (s, origin): (usize, u32)) {
        self.entries[p] = entry;
        self.rank[p] = self.order.len() as u32;
        self.order.push(p as u32);
        self.firsts.push((s as u32, origin));
        if self.order.len() * 8 > self.entries.len() {
            self.grow(text);
        }
    }

    /// The hash of the word `text[s..s + len]` whose key is `(a, b)`.
    #[inline]
    fn hash(&self, text: &[u8], (a, b): (u64, u64), s: usize, len: usize) -> u64 {
        if len > 16 {
            return self.hasher.hash_one(&text[s..s + len]);
        }
        // Two independent multiplies (WebAssembly has 64-bit ones, no 128-bit one), the
        // slot taken from the top bits of their xor: the top bits of a product depend on
        // every bit of its factor, and the two multiplies run side by side, so the slot is
        // known one multiply after the key (a chain of two multiplies and a fold took twice
        // as long, on the path from a word's bytes to its entry). The length needs no say:
        // entries are compared on it.
        a.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ b.wrapping_mul(0xff51_afd7_ed55_8ccd)
    }

    /// Doubles the table, putting every word back in place (in order of first appearance:
    /// the order list stays valid).
    fn grow(&mut self, text: &[u8]) {
        let size = self.entries.len() * 2;
        let mut entries = vec![Entry::default(); size];
        let mut rank = vec![0; size];
        let mut order = std::mem::take(&mut self.order);
        for (p, &(start, _)) in order.iter_mut().zip(&self.firsts) {
            let en = self.entries[*p as usize];
            let hash = self.hash(text, (en.a, en.b), start as usize, en.len as usize);
            let mut q = slot(hash, size);
            while entries[q].len != 0 {
                q = (q + 1) & (size - 1);
            }
            entries[q] = en;
            rank[q] = self.rank[*p as usize];
            *p = q as u32;
        }
        self.order = order;
        self.entries = entries;
        self.rank = rank;
    }
}

/// Whether the word of more than 16 bytes first seen at `at` is `text[s..e]`.
#[cold]
fn same_as_first(text: &[u8], at: u32, s: usize, e: usize) -> bool {
    let at = at as usize;
    same_bytes(&text[at..at + (e - s)], &text[s..e])
}

/// The slot of `hash` in a table of `size` entries (a power of two): its top bits.
#[inline]
fn slot(hash: u64, size: usize) -> usize {
    (hash >> (64 - size.trailing_zeros())) as usize
}

/// The first 16 bytes of the word `text[s..s + len]` as two little-endian integers, the
/// bytes past its end zero.
#[inline]
fn key(text: &[u8], s: usize, len: usize) -> (u64, u64) {
    if s + 16 <= text.len() {
        // Masks looked up by length, no branch on it (the corpus's words are 3 to 9 bytes: a
        // branch on 8 would be mispredicted often) and no shifts and selects to make them.
        let (ma, mb) = KEY_MASKS[len.min(16)];
        // SAFETY: `s + 16 <= text.len()`: both 8-byte reads are inside `text`.
        #[allow(unsafe_code)]
        let (a, b) = unsafe {
            let p = text.as_ptr().add(s);
            (
                p.cast::<u64>().read_unaligned(),
                p.add(8).cast::<u64>().read_unaligned(),
            )
        };
        (u64::from_le(a) & ma, u64::from_le(b) & mb)
    } else {
        // Near the end of the text: a copy, so as not to read past it.
        let mut buf = [0u8; 16];
        let n = len.min(16);
        buf[..n].copy_from_slice(&text[s..s + n]);
        (load8(&buf, 0), load8(&buf, 8))
    }
}

/// For each length up to 16, the masks of a key's two integers that keep a word of that
/// many bytes.
const KEY_MASKS: [(u64, u64); 17] = {
    let mut m = [(0, 0); 17];
    let mut n = 0;
    while n <= 16 {
        m[n] = (low_bytes(n), low_bytes(n.saturating_sub(8)));
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
    fn keys_are_the_words_bytes_zero_padded_wherever_the_word_lies() {
        // The same word keyed in the middle of a text and at its very end must agree.
        for len in 1..=16 {
            let word: Vec<u8> = (0..len as u8).map(|i| b'a' + i).collect();
            let inside = [word.as_slice(), b" and more text after it"].concat();
            let at_end = [b"x ".as_slice(), &word].concat();
            let k = key(&inside, 0, len);
            assert_eq!(k, key(&at_end, 2, len), "len {len}");
            let mut padded = [0u8; 16];
            padded[..len].copy_from_slice(&word);
            assert_eq!(k, (load8(&padded, 0), load8(&padded, 8)));
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
        for (n, &(ma, mb)) in KEY_MASKS.iter().enumerate() {
            let keep = |from: usize| {
                (0..8)
                    .filter(|&i| from + i < n)
                    .fold(0u64, |m, i| m | 0xff << (8 * i))
            };
            assert_eq!((ma, mb), (keep(0), keep(8)), "{n}");
        }
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
