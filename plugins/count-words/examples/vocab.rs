//! How the count's native speed depends on the vocabulary: nanoseconds per word over half a
//! million lines of ten words drawn from `N` distinct words (3 to 9 bytes), the best of 15
//! calls. `cargo run --release -p count-words --example vocab -- 1000`. A small vocabulary
//! keeps the count table in the first-level cache; the difference to a large one is what the
//! table's cache misses cost.

use std::time::Instant;

fn main() {
    let vocab: usize = std::env::args()
        .nth(1)
        .map_or(Ok(1000), |v| v.parse())
        .expect("the vocabulary size, a number");
    // A 64-bit linear congruential generator (Knuth's MMIX constants), its top bits.
    let mut state = 1u64;
    let mut next = move |n: u64| {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) % n
    };
    let words: Vec<Vec<u8>> = (0..vocab)
        .map(|_| (0..3 + next(7)).map(|_| b'a' + next(26) as u8).collect())
        .collect();
    let (lines, per_line) = (500_000, 10);
    let mut data = Vec::new();
    let mut ends = Vec::new();
    for _ in 0..lines {
        for w in 0..per_line {
            if w > 0 {
                data.push(b' ');
            }
            data.extend_from_slice(&words[next(vocab as u64) as usize]);
        }
        ends.push(data.len() as u32);
    }
    let mut counts = count_words::WordCounts::default();
    let best = (0..15)
        .map(|_| {
            let t = Instant::now();
            let distinct = counts.count(&data, &ends, false).len();
            assert!(distinct <= vocab);
            t.elapsed().as_secs_f64()
        })
        .fold(f64::MAX, f64::min);
    let ns = best * 1e9 / (lines * per_line) as f64;
    println!("vocabulary {vocab}: {ns:.2} ns per word");
}
