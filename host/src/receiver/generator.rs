//! The `generator` source: deterministic text lines from a seed, a vocabulary and a rate.
//! The embedded default source for the demo, the tests and the benchmarks.

use std::sync::Arc;

use super::{BuildContext, BuildError, Receiver, Resume, Source};
use crate::batch::{BytesColumn, RecordBatch};

/// `kind = "generator"`: the keys and defaults are in `config::RawSource`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratorConfig {
    /// The stream's name.
    pub name: String,
    /// Partitions.
    pub partitions: u32,
    /// The same seed gives the same lines.
    pub seed: u64,
    /// Distinct words.
    pub vocabulary: u32,
    /// Words in each line.
    pub words_per_line: u32,
    /// Lines per second per partition; 0 is as fast as possible.
    pub rate: u64,
    /// Lines per partition, then the partition ends.
    pub limit: Option<u64>,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            name: "input".to_owned(),
            partitions: 1,
            seed: 42,
            vocabulary: 1000,
            words_per_line: 10,
            rate: 1000,
            limit: None,
        }
    }
}

impl GeneratorConfig {
    /// The generator needs nothing outside itself: it is its own built source.
    pub fn build(&self, _ctx: &mut BuildContext<'_>) -> Result<Arc<dyn Source>, BuildError> {
        Ok(Arc::new(self.clone()))
    }
}

impl Source for GeneratorConfig {
    fn kind(&self) -> &'static str {
        "generator"
    }

    fn partitions(&self) -> u32 {
        self.partitions
    }

    /// Its lines are a function of their number: a restart makes them again exactly.
    fn replayable(&self) -> bool {
        true
    }

    fn receiver(self: Arc<Self>, partition: u32, resume: Resume) -> Receiver {
        Receiver::Generator(GeneratorReceiver::new(&self, partition, &resume))
    }
}

const SYLLABLES: [&str; 32] = [
    "ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ba", "de", "fi", "go", "hu", "ja", "ke", "li",
    "ma", "no", "pu", "ra", "se", "to", "vu", "wa", "ye", "zo", "an", "el", "in", "or", "um", "ex",
];

/// How many distinct lines a partition cycles through.
const RING: usize = 1 << 14;

/// Makes the lines of one partition, in order. The same seed, vocabulary, words per line and
/// partition always give the same lines.
///
/// The partition's first [`RING`] lines are drawn word by word when it starts (16,384 lines:
/// with a 1,000-word vocabulary, every word appears); after them the same lines come round
/// again. Producing a line is then one copy, so at full speed the generator costs little next
/// to the pipeline it feeds.
#[derive(Debug, Clone)]
pub struct LineGenerator {
    ring: BytesColumn,
    produced: u64,
}

impl LineGenerator {
    /// The generator of `partition`.
    pub fn new(cfg: &GeneratorConfig, partition: u32) -> Self {
        let words = vocabulary(cfg.seed, cfg.vocabulary.max(1));
        let words_per_line = cfg.words_per_line.max(1);
        let mut state =
            splitmix(cfg.seed ^ (0xA076_1D64_78BD_642F_u64.wrapping_mul(partition as u64 + 1)));
        let mut next = || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            splitmix(state)
        };
        let mut ring = BytesColumn::with_capacity(RING, RING * 8 * words_per_line as usize);
        let mut line = Vec::with_capacity(128);
        for _ in 0..RING {
            line.clear();
            for w in 0..words_per_line {
                if w > 0 {
                    line.push(b' ');
                }
                // Zipf-like skew: small indices are more frequent, as in real text.
                let r = next();
                let a = (r % words.len() as u64) as usize;
                let b = ((r >> 32) % words.len() as u64) as usize;
                line.extend_from_slice(&words[a.min(b)]);
            }
            ring.push(&line);
        }
        LineGenerator { ring, produced: 0 }
    }

    /// How many lines were made so far.
    pub fn produced(&self) -> u64 {
        self.produced
    }

    /// Goes on from line `n` (a restart): the lines are a function of their number, so the
    /// source replays exactly.
    pub fn skip_to(&mut self, n: u64) {
        self.produced = n;
    }

    /// The bytes the next `n` lines will take in a batch (values, ends and timestamps).
    pub fn size_of_next(&self, n: usize) -> usize {
        let avg = self.ring.data.len() / RING.max(1);
        n * (avg + 12)
    }

    /// Appends the next `n` lines to `out`, each with timestamp `ts`; no allocation per line.
    pub fn fill(&mut self, out: &mut RecordBatch, n: usize, ts: i64) {
        let mut left = n;
        while left > 0 {
            let at = (self.produced % RING as u64) as usize;
            let take = left.min(RING - at);
            out.values.extend_from(&self.ring, at..at + take);
            self.produced += take as u64;
            left -= take;
        }
        if out.timestamps.len() + n == out.values.len() {
            out.timestamps.resize(out.values.len(), ts);
        }
    }
}

fn splitmix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The `n` distinct words of the vocabulary for `seed`.
pub fn vocabulary(seed: u64, n: u32) -> Vec<Vec<u8>> {
    let mut words = Vec::with_capacity(n as usize);
    let mut seen = std::collections::HashSet::new();
    let mut s = seed;
    while words.len() < n as usize {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut r = splitmix(s);
        let syllables = 1 + (r % 3) as usize + usize::from(words.len() > 64);
        r >>= 2;
        let mut w = Vec::new();
        for _ in 0..syllables {
            w.extend_from_slice(SYLLABLES[(r % 32) as usize].as_bytes());
            r >>= 5;
        }
        if seen.insert(w.clone()) {
            words.push(w);
        }
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> GeneratorConfig {
        GeneratorConfig::default()
    }

    #[test]
    fn the_same_seed_gives_the_same_lines_whatever_the_chunking() {
        let mut a = LineGenerator::new(&cfg(), 3);
        let mut b = LineGenerator::new(&cfg(), 3);
        let mut one = RecordBatch::default();
        a.fill(&mut one, 100, 0);
        let mut many = RecordBatch::default();
        for _ in 0..10 {
            b.fill(&mut many, 10, 0);
        }
        assert_eq!(one.values, many.values);
        let line = std::str::from_utf8(one.value(0)).unwrap();
        assert_eq!(line.split(' ').count(), 10);
    }

    #[test]
    fn partitions_get_different_lines() {
        let mut a = LineGenerator::new(&cfg(), 0);
        let mut b = LineGenerator::new(&cfg(), 1);
        let (mut x, mut y) = (RecordBatch::default(), RecordBatch::default());
        a.fill(&mut x, 5, 0);
        b.fill(&mut y, 5, 0);
        assert_ne!(x.values, y.values);
    }
}

/// The `generator` receiver of one partition.
#[derive(Debug)]
pub struct GeneratorReceiver {
    lines: LineGenerator,
    rate: u64,
    limit: Option<u64>,
}

impl GeneratorReceiver {
    /// The receiver of `partition`, starting at line `resume.offset` (a restart goes on
    /// where the committed batches end, or where the batch being recomputed starts).
    pub fn new(cfg: &GeneratorConfig, partition: u32, resume: &super::Resume) -> Self {
        let mut lines = LineGenerator::new(cfg, partition);
        lines.skip_to(resume.offset);
        GeneratorReceiver {
            lines,
            rate: cfg.rate,
            limit: cfg.limit,
        }
    }

    /// Generates at the configured rate (or as fast as the budget lets it) until the limit.
    pub async fn run(
        &mut self,
        out: &super::PartitionWriter,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Result<super::Finished, super::ReceiverError> {
        const CHUNK: u64 = 4096;
        let started = std::time::Instant::now();
        let start_count = self.lines.produced();
        loop {
            if *stop.borrow() {
                return Ok(super::Finished::Stopped);
            }
            let remaining = self
                .limit
                .map_or(u64::MAX, |l| l.saturating_sub(self.lines.produced()));
            if remaining == 0 {
                return Ok(super::Finished::End);
            }
            let mut n = CHUNK.min(remaining);
            if self.rate > 0 {
                let due = (started.elapsed().as_secs_f64() * self.rate as f64) as u64;
                let done = self.lines.produced() - start_count;
                if due <= done {
                    let pause = std::time::Duration::from_millis(10);
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = stop.changed() => {}
                    }
                    continue;
                }
                n = n.min(due - done);
            }
            // Straight into the partition's buffer: no copy in between.
            let lines = &mut self.lines;
            let size = lines.size_of_next(n as usize);
            out.append_with(size, |buf| {
                lines.fill(buf, n as usize, crate::clock::now_ms())
            })
            .await;
            tokio::task::yield_now().await;
        }
    }
}
