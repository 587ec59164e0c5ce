//! The wide steps' arithmetic: counting by key (block by block, then per batch) and
//! repartitioning by a hash of the key.

use std::collections::HashMap;
use std::sync::Mutex;

use super::open::{Counts, Fast};
use super::part::{Lineage, Part, into_parts};
use crate::batch::RecordBatch;

/// Counts `part`'s keys locally (borrowing them: no allocation per record), then merges the
/// counts into the batch's, allocating only for keys the batch has not seen.
pub(crate) fn combine_counts(part: &Part, partitions: Option<u32>, into: &[Mutex<Counts>]) {
    let mut local: Vec<HashMap<&[u8], u64, Fast>> =
        vec![HashMap::with_hasher(Fast::default()); into.len()];
    for i in 0..part.records.len() {
        let key = part.records.key(i).unwrap_or_default();
        let target = match partitions {
            Some(n) => (partition_hash(key) % n as u64) as usize,
            None => part.partition as usize,
        };
        if let Some(m) = local.get_mut(target) {
            *m.entry(key).or_default() += 1;
        }
    }
    for (target, m) in local.into_iter().enumerate() {
        if m.is_empty() {
            continue;
        }
        let mut counts = into[target].lock().unwrap_or_else(|e| e.into_inner());
        for (key, n) in m {
            add_count(&mut counts, key, n);
        }
    }
}

/// One record per key: the key and its count in decimal, sorted by key, timestamped with the
/// batch time.
pub(crate) fn counts_part(partition: u32, counts: Counts, time_ms: i64) -> Part {
    let mut keys: Vec<_> = counts.into_iter().collect();
    keys.sort_unstable();
    let mut out = RecordBatch::with_capacity(keys.len(), keys.len() * 12);
    let mut num = itoa_buf();
    for (key, count) in keys {
        out.push(Some(&key), fmt_u64(count, &mut num), Some(time_ms));
    }
    Part {
        partition,
        lineage: Lineage::Range {
            partition,
            start: 0,
        },
        records: out,
    }
}

/// Which partition a key belongs to (of `n`: this modulo `n`). Fixed across runs.
pub(crate) fn partition_hash(key: &[u8]) -> u64 {
    use std::hash::BuildHasher;
    Fast::default().hash_one(key)
}

/// Moves records so that equal keys meet in one of `n` partitions. A record without a key is
/// placed by its value.
pub fn repartition(parts: Vec<Part>, n: u32) -> Vec<Part> {
    let mut out: Vec<(RecordBatch, Vec<(u32, u64)>)> = (0..n).map(|_| Default::default()).collect();
    let mut indices: Vec<Vec<u32>> = vec![Vec::new(); n as usize];
    for part in &parts {
        for v in indices.iter_mut() {
            v.clear();
        }
        for i in 0..part.records.len() {
            let k = part.records.key(i).unwrap_or_else(|| part.records.value(i));
            indices[(partition_hash(k) % n as u64) as usize].push(i as u32);
        }
        for (target, idx) in indices.iter().enumerate() {
            part.records.gather_into(idx, &mut out[target].0);
            out[target]
                .1
                .extend(idx.iter().map(|&i| part.lineage.at(i as usize)));
        }
    }
    into_parts(out)
}

/// One record per key: the key and its count in decimal, sorted by key, timestamped with the
/// batch time.
pub fn count_by_key(part: Part, time_ms: i64) -> Part {
    let mut counts = Counts::with_hasher(Fast::default());
    for i in 0..part.records.len() {
        add_count(&mut counts, part.records.key(i).unwrap_or_default(), 1);
    }
    counts_part(part.partition, counts, time_ms)
}

/// Adds `n` to `key`'s count, allocating only for a key not yet counted.
fn add_count(counts: &mut Counts, key: &[u8], n: u64) {
    match counts.get_mut(key) {
        Some(c) => *c += n,
        None => {
            counts.insert(key.into(), n);
        }
    }
}

fn itoa_buf() -> [u8; 20] {
    [0; 20]
}

/// `n` in decimal, written at the end of `buf`.
pub(crate) fn fmt_u64(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
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
