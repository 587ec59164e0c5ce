//! Finding the words of a text 64 bytes at a time: a bit mask of the ASCII whitespace bytes
//! of each 64-byte chunk (SIMD compares where the target has them: `simd128` on WebAssembly,
//! SSE2 on x86-64), whose transitions are the words' starts and ends.

/// Bit `i` set when `chunk[i]` is whitespace as [`u8::is_ascii_whitespace`] defines it
/// (space, `\t`, `\n`, form feed `\x0C`, `\r`; not vertical tab `\x0B`): the reference every
/// SIMD version must equal.
#[cfg(any(
    test,
    not(any(
        target_arch = "x86_64",
        all(target_arch = "wasm32", target_feature = "simd128")
    ))
))]
#[inline]
pub fn space_mask16_scalar(chunk: &[u8; 16]) -> u16 {
    let mut m = 0u16;
    for (i, &b) in chunk.iter().enumerate() {
        m |= u16::from(b.is_ascii_whitespace()) << i;
    }
    m
}

/// Bit `i` set when `chunk[i]` is whitespace.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline]
#[allow(unsafe_code)]
pub fn space_mask16(chunk: &[u8; 16]) -> u16 {
    use core::arch::wasm32::*;
    // `\t` `\n` `\x0C` `\r` looked up in a 16-byte table by the byte itself (a swizzle gives 0
    // for an index of 16 or more, so only the bytes 0..=15 can hit), the space compared:
    // five vector operations, where range compares take eight (an unsigned `<` alone is three
    // on x86-64).
    const LOW: v128 = u8x16(0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80, 0x80, 0, 0x80, 0x80, 0, 0);
    // SAFETY: `chunk` is 16 readable bytes; v128_load has no alignment requirement.
    let v = unsafe { v128_load(chunk.as_ptr().cast()) };
    let space = u8x16_eq(v, u8x16_splat(b' '));
    u8x16_bitmask(v128_or(u8x16_swizzle(LOW, v), space))
}

/// Bit `i` set when `chunk[i]` is whitespace.
#[cfg(target_arch = "x86_64")]
#[inline]
#[allow(unsafe_code)]
pub fn space_mask16(chunk: &[u8; 16]) -> u16 {
    use core::arch::x86_64::*;
    // SAFETY: SSE2 is part of x86-64; `chunk` is 16 readable bytes and the load is unaligned.
    unsafe {
        let v = _mm_loadu_si128(chunk.as_ptr().cast());
        let eq = |b: u8| _mm_cmpeq_epi8(v, _mm_set1_epi8(b as i8));
        let m = _mm_or_si128(
            _mm_or_si128(eq(b' '), eq(b'\t')),
            _mm_or_si128(_mm_or_si128(eq(b'\n'), eq(b'\r')), eq(0x0C)),
        );
        _mm_movemask_epi8(m) as u16
    }
}

/// Bit `i` set when `chunk[i]` is whitespace.
#[cfg(not(any(
    target_arch = "x86_64",
    all(target_arch = "wasm32", target_feature = "simd128")
)))]
#[inline]
pub fn space_mask16(chunk: &[u8; 16]) -> u16 {
    space_mask16_scalar(chunk)
}

/// Bit `i` set when `chunk[i]` is whitespace, for 64 bytes.
#[inline]
fn space_mask64(chunk: &[u8; 64]) -> u64 {
    let part = |i: usize| {
        let c: &[u8; 16] = chunk[i * 16..i * 16 + 16].try_into().expect("16 bytes");
        u64::from(space_mask16(c)) << (i * 16)
    };
    part(0) | part(1) | part(2) | part(3)
}

/// What [`for_each_word`] calls for each word.
pub trait Runs {
    /// The word `text[start..end]` (not empty), the words in order.
    fn run(&mut self, start: usize, end: usize);
}

impl<F: FnMut(usize, usize)> Runs for F {
    #[inline(always)]
    fn run(&mut self, start: usize, end: usize) {
        self(start, end)
    }
}

/// Calls `runs.run(start, end)` for every maximal run of non-whitespace bytes
/// `text[start..end]`, in order. Runs are found in 64-byte chunks; a run may cross chunks.
#[cfg(test)]
pub fn for_each_run(text: &[u8], runs: &mut impl Runs) {
    for_each_word(text, &[], runs);
}

/// Calls `runs.run(start, end)` for every word of `text` in order: every maximal run of
/// non-whitespace bytes, cut wherever a record ends (`ends`, ascending: the records of a
/// batch's values buffer have no separator between them, so a line's last word runs into the
/// next line's first).
///
/// A record's end is a boundary bit in its chunk's mask, so the words come out of the same
/// bit arithmetic whether they end at a space or at a record's end: nothing per word asks
/// which record it is in.
#[inline]
pub fn for_each_word(text: &[u8], ends: &[u32], runs: &mut impl Runs) {
    let mut scan = Scan {
        start: 0,
        carry: 0,
        next_end: 0,
    };
    let mut chunks = text.chunks_exact(64);
    let mut base = 0usize;
    for chunk in chunks.by_ref() {
        let chunk: &[u8; 64] = chunk.try_into().expect("64 bytes");
        let cuts = scan.cuts(ends, base);
        scan.chunk(runs, space_mask64(chunk), cuts, base);
        base += 64;
    }
    // The tail padded with spaces (all spaces when there is none): a word running to the end
    // of the text ends there.
    let rest = chunks.remainder();
    let mut last = [b' '; 64];
    last[..rest.len()].copy_from_slice(rest);
    let cuts = scan.cuts(ends, base);
    scan.chunk(runs, space_mask64(&last), cuts, base);
}

/// What the scan carries from one 64-byte chunk to the next.
struct Scan {
    /// Where the word left open by the chunks before starts.
    start: usize,
    /// 1 when the last byte of the chunk before was part of a word.
    carry: u64,
    /// The first record end not yet past.
    next_end: usize,
}

impl Scan {
    /// Bit `i` set when a record ends at `base + i` (between the bytes `base + i - 1` and
    /// `base + i`). Ends before `base` (out of order) are passed over.
    #[inline(always)]
    fn cuts(&mut self, ends: &[u32], base: usize) -> u64 {
        let mut cuts = 0u64;
        while let Some(&e) = ends.get(self.next_end) {
            let e = e as usize;
            if e >= base + 64 {
                break;
            }
            if e >= base {
                cuts |= 1 << (e - base);
            }
            self.next_end += 1;
        }
        cuts
    }

    /// The words that end in the 64-byte chunk at `base`, whose whitespace mask is `mask`
    /// and whose record ends are `cuts`.
    #[inline(always)]
    fn chunk(&mut self, runs: &mut impl Runs, mask: u64, cuts: u64, base: usize) {
        let inword = !mask;
        // Bit i: byte i - 1 is part of a word.
        let before = inword << 1 | self.carry;
        // A word starts at a word byte that follows a space or a record's end, and ends at
        // the first space or record end after it: starts and ends alternate (where one word
        // ends at a record's end and the next starts, the end comes first), so the k-th end
        // closes the k-th start (the first end closes the word left open by the chunk before
        // when it ran into this one).
        let mut starts = inword & !(before & !cuts);
        let mut ends = before & (mask | cuts);
        if self.carry == 1 && ends != 0 {
            runs.run(self.start, base + ends.trailing_zeros() as usize);
            ends &= ends - 1;
        }
        self.carry = inword >> 63;
        // As many ends as starts, or one fewer: one branch per word, on the ends. Two words
        // a turn: in the guest every turn of a loop checks the time budget.
        while ends != 0 {
            let s = base + starts.trailing_zeros() as usize;
            runs.run(s, base + ends.trailing_zeros() as usize);
            starts &= starts - 1;
            ends &= ends - 1;
            if ends == 0 {
                break;
            }
            let s = base + starts.trailing_zeros() as usize;
            runs.run(s, base + ends.trailing_zeros() as usize);
            starts &= starts - 1;
            ends &= ends - 1;
        }
        if starts != 0 {
            // Runs into the next chunk.
            self.start = base + starts.trailing_zeros() as usize;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every maximal run of non-whitespace, found one byte at a time.
    fn runs_naive(text: &[u8]) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < text.len() {
            while i < text.len() && text[i].is_ascii_whitespace() {
                i += 1;
            }
            let s = i;
            while i < text.len() && !text[i].is_ascii_whitespace() {
                i += 1;
            }
            if i > s {
                out.push((s, i));
            }
        }
        out
    }

    fn runs(text: &[u8]) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for_each_run(text, &mut |s, e| out.push((s, e)));
        out
    }

    #[test]
    fn the_simd_mask_equals_the_scalar_one_for_every_byte_at_every_lane() {
        for b in 0..=255u8 {
            for lane in 0..16 {
                let mut chunk = [b'x'; 16];
                chunk[lane] = b;
                assert_eq!(
                    space_mask16(&chunk),
                    space_mask16_scalar(&chunk),
                    "byte {b:#04x} at lane {lane}"
                );
            }
        }
        // The separators and their neighbours that are not separators.
        let chunk = *b" \t\n\x0B\x0C\r\x08\x0E\x1F!\xA0\xC3\xA9x  ";
        assert_eq!(space_mask16(&chunk), 0b1100_0000_0011_0111);
    }

    #[test]
    fn runs_straddling_chunks_at_every_offset_are_found_whole() {
        // A word of every length from 1 to 150 at every offset around the 64-byte chunk
        // edges, the text ending inside the word, on the edge, or after a separator.
        for len in 1..150 {
            for at in 50..140 {
                for tail in [0usize, 1, 3] {
                    let mut text = vec![b' '; at];
                    text.extend(std::iter::repeat_n(b'w', len));
                    text.extend(std::iter::repeat_n(b'\t', tail));
                    assert_eq!(runs(&text), vec![(at, at + len)], "len {len} at {at}");
                }
            }
        }
    }

    #[test]
    fn record_ends_cut_words_at_every_offset_around_the_chunk_edges() {
        // One long word cut by one or two record ends anywhere (bit 0 and bit 63 of a chunk
        // included), and ends falling on a space or repeated (empty records) cut nothing more.
        let text = [vec![b'w'; 140], vec![b' '], vec![b'v'; 60]].concat();
        let words = |ends: &[u32]| {
            let mut out = Vec::new();
            for_each_word(&text, ends, &mut |s, e| out.push((s, e)));
            out
        };
        let naive = |ends: &[u32]| {
            let mut out = Vec::new();
            let mut from = 0;
            for &e in ends.iter().chain([text.len() as u32].iter()) {
                let e = e as usize;
                out.extend(
                    runs_naive(&text[from..e])
                        .into_iter()
                        .map(|(s, t)| (s + from, t + from)),
                );
                from = e;
            }
            out
        };
        for a in 0..=text.len() as u32 {
            for b in [a, a + 1, 63, 64, 65, 127, 128, 140, 141, 200] {
                if b >= a && b <= text.len() as u32 {
                    assert_eq!(words(&[a, b]), naive(&[a, b]), "ends {a} {b}");
                }
            }
        }
    }

    #[test]
    fn runs_equal_a_byte_by_byte_scan_on_mixed_text() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let alphabet = b"ab \t\n\r\x0B\x0C\xC3\xA9z\x00";
        for n in [0usize, 1, 15, 16, 17, 63, 64, 65, 127, 128, 129, 1000] {
            for _ in 0..50 {
                let text: Vec<u8> = (0..n)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        alphabet[(state % alphabet.len() as u64) as usize]
                    })
                    .collect();
                assert_eq!(runs(&text), runs_naive(&text), "{text:?}");
            }
        }
        let all_words = vec![b'q'; 128];
        assert_eq!(runs(&all_words), vec![(0, 128)]);
    }
}
