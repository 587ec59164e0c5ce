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

/// What [`for_each_run`] calls for each run of non-whitespace bytes.
pub trait Runs {
    /// The run `text[start..end]` (not empty), the runs in order.
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
#[inline]
pub fn for_each_run(text: &[u8], runs: &mut impl Runs) {
    // Where the word left open by the chunks before starts, and (bit 0 of `carry`) whether
    // the byte before the chunk was part of a word.
    let mut start = 0usize;
    let mut carry = 0u64;
    let mut chunks = text.chunks_exact(64);
    let mut base = 0usize;
    for chunk in chunks.by_ref() {
        let chunk: &[u8; 64] = chunk.try_into().expect("64 bytes");
        chunk_runs(runs, space_mask64(chunk), base, &mut carry, &mut start);
        base += 64;
    }
    // The tail padded with spaces (all spaces when there is none): a word running to the end
    // of the text ends there.
    let rest = chunks.remainder();
    let mut last = [b' '; 64];
    last[..rest.len()].copy_from_slice(rest);
    chunk_runs(runs, space_mask64(&last), base, &mut carry, &mut start);
}

/// The runs that end in the 64-byte chunk at `base` whose whitespace mask is `mask`.
#[inline(always)]
fn chunk_runs(runs: &mut impl Runs, mask: u64, base: usize, carry: &mut u64, start: &mut usize) {
    let inword = !mask;
    let before = inword << 1 | *carry;
    // A word starts where a word byte follows a space, and ends at the first space after it:
    // starts and ends alternate, so the k-th end closes the k-th start (the first end closes
    // the word left open by the chunk before when it ran into this one).
    let mut starts = inword & !before;
    let mut ends = !inword & before;
    if *carry == 1 && ends != 0 {
        runs.run(*start, base + ends.trailing_zeros() as usize);
        ends &= ends - 1;
    }
    *carry = inword >> 63;
    while starts != 0 {
        let s = base + starts.trailing_zeros() as usize;
        starts &= starts - 1;
        if ends == 0 {
            // Runs into the next chunk.
            *start = s;
            break;
        }
        runs.run(s, base + ends.trailing_zeros() as usize);
        ends &= ends - 1;
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
