//! `uppercase`: a map that upper-cases the ASCII letters of every value. Other bytes (digits,
//! punctuation, UTF-8 beyond ASCII) are kept as they are, so every value keeps its length.

use sluice_sdk::{Batch, Context, Error, Output, Params, Transform, export_transform};

/// Upper-cases the ASCII letters of every value of `input` into `out`.
///
/// One loop runs over the whole values buffer at once; the value offsets are shared with the
/// input, so there is no per-record work. The loop is branch-free, and LLVM turns it into
/// 16-byte SIMD (`simd128`) operations.
pub fn uppercase(input: &Batch, out: &mut Output) {
    upper_in_place(out.map_same_shape(input));
}

/// Upper-cases the ASCII letters of `bytes` in place.
#[inline]
fn upper_in_place(bytes: &mut [u8]) {
    // 512 bytes per step, as four 128-byte blocks that LLVM unrolls into 32 16-byte SIMD
    // operations. A plain loop over the buffer gets one vector per iteration, and then the
    // loop overhead left by Cranelift costs about 2x (measured with wasmtime on 1 MB batches);
    // at 128 bytes a step, Cranelift's epoch check and its reloads of the three constants each
    // iteration still cost about 7% of the call (`sluice bench plugins`: 83-86 us against
    // 77-80 at 512).
    let mut blocks = bytes.chunks_exact_mut(512);
    for block in &mut blocks {
        let (a, b) = block.split_at_mut(256);
        let (a0, a1) = a.split_at_mut(128);
        let (b0, b1) = b.split_at_mut(128);
        upper_bytes(a0);
        upper_bytes(a1);
        upper_bytes(b0);
        upper_bytes(b1);
    }
    let mut rest = blocks.into_remainder().chunks_exact_mut(128);
    for block in &mut rest {
        upper_bytes(block);
    }
    upper_bytes(rest.into_remainder());
}

#[inline(always)]
fn upper_bytes(bytes: &mut [u8]) {
    for b in bytes {
        // Adding `0x80 - b'a'` moves `b'a'..=b'z'` to the 26 smallest signed bytes, so one
        // signed compare finds them (SIMD has a signed byte compare, not an unsigned one);
        // flipping bit 5, which every lower-case letter has set, upper-cases it.
        let shifted = b.wrapping_add(0x80 - b'a') as i8;
        let is_lower = shifted < i8::MIN + 26;
        *b ^= (is_lower as u8) << 5;
    }
}

/// The plugin: it has no parameters and no state.
#[derive(Debug)]
pub struct Uppercase;

impl Transform for Uppercase {
    fn init(params: &Params) -> Result<Self, String> {
        params.allow_only(&[])?;
        Ok(Self)
    }

    fn transform(&mut self, _ctx: &Context, input: &Batch, out: &mut Output) -> Result<(), Error> {
        uppercase(input, out);
        Ok(())
    }

    /// Every value keeps its length, so the component rewrites the host's buffer in place.
    fn map_in_place(&mut self, _ctx: &Context, values: &mut [u8]) -> Result<bool, Error> {
        upper_in_place(values);
        Ok(true)
    }
}

export_transform!(Uppercase);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_letters_are_upper_cased_and_other_bytes_kept() {
        let input = Batch::from_values([
            b"hello, World 42!".as_slice(),
            b"",
            "é~{`z".as_bytes(),
            b"\xff",
        ]);
        let mut out = Output::new();
        uppercase(&input, &mut out);
        let values: Vec<&[u8]> = out.values().collect();
        assert_eq!(
            values,
            [
                b"HELLO, WORLD 42!".as_slice(),
                b"",
                "é~{`Z".as_bytes(),
                b"\xff"
            ]
        );
        let parts = out.finish(input).unwrap();
        assert!(parts.origins.is_empty(), "a map sends no origins");
    }

    #[test]
    fn every_byte_value_matches_the_standard_library() {
        let all: Vec<u8> = (0..=255).collect();
        let mut upper = all.clone();
        upper_in_place(&mut upper);
        assert_eq!(upper, all.to_ascii_uppercase());
    }

    #[test]
    fn values_of_every_length_around_the_block_size_are_upper_cased() {
        let text: Vec<u8> = (0..1200).map(|i| b"aZ{`z@ q"[i % 8]).collect();
        let lengths = [
            0, 1, 15, 16, 127, 128, 129, 255, 256, 257, 400, 511, 512, 513,
        ];
        for len in lengths
            .into_iter()
            .chain([639, 640, 641, 1023, 1024, 1025, 1200])
        {
            let input = Batch::from_values([&text[..len], b"x"]);
            let mut out = Output::new();
            uppercase(&input, &mut out);
            assert_eq!(
                out.value(0),
                text[..len].to_ascii_uppercase(),
                "length {len}"
            );
            assert_eq!(out.value(1), b"X");
        }
    }

    #[test]
    fn the_in_place_path_gives_the_same_values_as_transform() {
        let text: Vec<u8> = (0..1000).map(|i| (i * 7 % 256) as u8).collect();
        let input = Batch::from_values(text.chunks(13));
        let mut out = Output::new();
        let mut plugin = Uppercase;
        plugin
            .transform(&Context::default(), &input, &mut out)
            .unwrap();
        let mut values = input.values_data().to_vec();
        assert!(
            plugin
                .map_in_place(&Context::default(), &mut values)
                .unwrap()
        );
        let parts = out.finish(input).unwrap();
        assert_eq!(values, parts.values.data);
    }

    #[test]
    fn parameters_are_refused() {
        let err = Uppercase::init(&Params::from_iter([("mode", "x")])).unwrap_err();
        assert!(err.contains("`mode`"), "{err}");
    }
}
