//! Finding every newline of a text 64 bytes at a time: a bit mask of a chunk's `\n` bytes
//! (SSE2 compares on x86-64, where every CPU has them), whose set bits are walked in order.
//! Where lines are short (the benchmarks' are about 65 bytes), this costs a few instructions
//! per line, where a `memchr` call per line pays its set-up each time.

/// Calls `f(i)` for each `i` where `text[i] == b'\n'`, in order, until `f` returns false.
#[inline(always)]
pub(crate) fn for_each(text: &[u8], mut f: impl FnMut(usize) -> bool) {
    let mut chunks = text.chunks_exact(64);
    let mut base = 0;
    for chunk in chunks.by_ref() {
        let mut mask = mask64(chunk.try_into().expect("64 bytes"));
        while mask != 0 {
            if !f(base + mask.trailing_zeros() as usize) {
                return;
            }
            mask &= mask - 1;
        }
        base += 64;
    }
    for i in memchr::memchr_iter(b'\n', chunks.remainder()) {
        if !f(base + i) {
            return;
        }
    }
}

/// Bit `i` set when `chunk[i]` is `\n`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(unsafe_code)]
fn mask64(chunk: &[u8; 64]) -> u64 {
    use std::arch::x86_64::{_mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8};
    let part = |i: usize| {
        // SAFETY: SSE2 is part of x86-64; `i + 16 <= 64`, so the unaligned load reads 16
        // bytes of `chunk`.
        let bits = unsafe {
            let v = _mm_loadu_si128(chunk.as_ptr().add(i).cast());
            _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(b'\n' as i8)))
        };
        u64::from(bits as u16) << i
    };
    part(0) | part(16) | part(32) | part(48)
}

/// Bit `i` set when `chunk[i]` is `\n`.
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn mask64(chunk: &[u8; 64]) -> u64 {
    chunk
        .iter()
        .enumerate()
        .fold(0, |m, (i, &b)| m | u64::from(b == b'\n') << i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_newline_is_found_once_in_order_at_every_offset() {
        for len in 0..200 {
            for at in 0..len {
                for also in [None, Some(0), Some(63), Some(64), Some(len - 1)] {
                    let mut text = vec![b'x'; len];
                    text[at] = b'\n';
                    if let Some(j) = also.filter(|&j| j < len) {
                        text[j] = b'\n';
                    }
                    let want: Vec<usize> = (0..len).filter(|&i| text[i] == b'\n').collect();
                    let mut got = Vec::new();
                    for_each(&text, |i| {
                        got.push(i);
                        true
                    });
                    assert_eq!(got, want, "len {len}, newline at {at}, also {also:?}");
                }
            }
        }
        // Other bytes near `\n` are not newlines.
        let text: Vec<u8> = (0..=255u8).collect();
        let mut got = Vec::new();
        for_each(&text, |i| {
            got.push(i);
            true
        });
        assert_eq!(got, [10]);
    }

    #[test]
    fn it_stops_when_told() {
        let text = vec![b'\n'; 300];
        let mut seen = 0;
        for_each(&text, |_| {
            seen += 1;
            seen < 70
        });
        assert_eq!(seen, 70);
    }
}
