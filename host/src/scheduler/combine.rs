//! The wide steps' arithmetic: counting by key (block by block, then per batch) and
//! repartitioning by a hash of the key.

use std::collections::HashMap;
use std::sync::Mutex;

use super::open::{Counts, Fast, OpenBatch};
use super::part::{Lineage, Part, into_parts};
use crate::batch::RecordBatch;
use crate::plan::Plan;

/// Counts `part`'s keys locally (borrowing them: no allocation per record), then merges the
/// counts into the batch's, allocating only for keys the batch has not seen. With
/// `sum_values`, a record adds its value (a decimal count) instead of 1, and goes straight
/// into the batch's counts: its step combined the block already, so its keys are distinct.
/// Returns the records whose value is not a count (with `sum_values`), for the dead letters.
pub(crate) fn combine_counts(
    part: &Part,
    (partitions, sum_values): (Option<u32>, bool),
    into: &[Mutex<Counts>],
) -> Vec<u32> {
    let target_of = |key: &[u8]| match partitions {
        Some(n) => (partition_hash(key) % n as u64) as usize,
        None => part.partition as usize,
    };
    if sum_values {
        return add_counted(part, target_of, into);
    }
    let mut local: Vec<HashMap<&[u8], u64, Fast>> =
        vec![HashMap::with_hasher(Fast::default()); into.len()];
    for i in 0..part.records.len() {
        let key = part.records.key(i).unwrap_or_default();
        if let Some(m) = local.get_mut(target_of(key)) {
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
    Vec::new()
}

/// [`combine_counts`] of records that carry their counts: grouped by target partition (one
/// index per record), then added under one lock per target.
fn add_counted(
    part: &Part,
    target_of: impl Fn(&[u8]) -> usize,
    into: &[Mutex<Counts>],
) -> Vec<u32> {
    let records = &part.records;
    let mut bad = Vec::new();
    let mut add = |counts: &mut Counts, i: usize| match parse_count(records.value(i)) {
        Some(n) => add_count(counts, records.key(i).unwrap_or_default(), n),
        None => bad.push(i as u32),
    };
    if into.len() == 1 {
        let mut counts = into[0].lock().unwrap_or_else(|e| e.into_inner());
        (0..records.len()).for_each(|i| add(&mut counts, i));
        return bad;
    }
    let mut by_target: Vec<Vec<u32>> = vec![Vec::new(); into.len()];
    for i in 0..records.len() {
        let t = target_of(records.key(i).unwrap_or_default());
        if let Some(v) = by_target.get_mut(t) {
            v.push(i as u32);
        }
    }
    for (target, indices) in by_target.iter().enumerate() {
        if indices.is_empty() {
            continue;
        }
        let mut counts = into[target].lock().unwrap_or_else(|e| e.into_inner());
        indices.iter().for_each(|&i| add(&mut counts, i as usize));
    }
    bad
}

/// A count written in decimal (ASCII digits only, at most `u64::MAX`), or `None`.
pub(crate) fn parse_count(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |n, &b| {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(d))
    })
}

/// Dead-letters the records of `part` (indices `bad`) whose value step `step`, a
/// `count-by-key` with `sum-values`, could not read as a count.
pub(crate) fn dead_letter_bad_counts(
    plan: &Plan,
    batch: &OpenBatch,
    step: usize,
    part: &Part,
    bad: &[u32],
) {
    for &i in bad {
        plan.dead_letters.add_from_builtin(
            &plan.stream,
            batch.id,
            (step, "count-by-key"),
            part.lineage.at(i as usize),
            "the value is not a count in decimal, which `sum-values = true` adds up",
            (&part.records, i as usize),
        );
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
/// batch time. With `sum_values`, a record adds its value (a decimal count) instead of 1;
/// the indices of records whose value is not one are returned beside, for the dead letters.
pub fn count_by_key(part: &Part, sum_values: bool, time_ms: i64) -> (Part, Vec<u32>) {
    let mut counts = Counts::with_hasher(Fast::default());
    let mut bad = Vec::new();
    for i in 0..part.records.len() {
        let n = if sum_values {
            match parse_count(part.records.value(i)) {
                Some(n) => n,
                None => {
                    bad.push(i as u32);
                    continue;
                }
            }
        } else {
            1
        };
        add_count(&mut counts, part.records.key(i).unwrap_or_default(), n);
    }
    (counts_part(part.partition, counts, time_ms), bad)
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn part(pairs: &[(&str, &str)]) -> Part {
        let mut records = RecordBatch::default();
        for (k, v) in pairs {
            records.push(Some(k.as_bytes()), v.as_bytes(), Some(0));
        }
        Part {
            partition: 1,
            records,
            lineage: Lineage::Range {
                partition: 1,
                start: 0,
            },
        }
    }

    fn maps(n: usize) -> Vec<Mutex<Counts>> {
        (0..n)
            .map(|_| Mutex::new(Counts::with_hasher(Fast::default())))
            .collect()
    }

    /// Every key's count over all targets, checking that a key is in one target only, the
    /// one its hash names.
    fn totals(into: &[Mutex<Counts>]) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for (t, m) in into.iter().enumerate() {
            for (k, &n) in m.lock().unwrap().iter() {
                if into.len() > 1 {
                    assert_eq!((partition_hash(k) % into.len() as u64) as usize, t);
                }
                let old = out.insert(String::from_utf8(k.to_vec()).unwrap(), n);
                assert!(old.is_none(), "key in two targets");
            }
        }
        out
    }

    fn expected(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|(k, n)| (k.to_string(), *n)).collect()
    }

    #[test]
    fn pre_combined_counts_add_up_across_blocks_and_targets() {
        for targets in [1, 3] {
            let into = maps(targets);
            let partitions = (targets > 1).then_some(targets as u32);
            let a = part(&[("the", "3"), ("fox", "1"), ("dog", "12")]);
            let b = part(&[("fox", "2"), ("the", "10")]);
            for p in [&a, &b] {
                assert!(combine_counts(p, (partitions, true), &into).is_empty());
            }
            let want = expected(&[("the", 13), ("fox", 3), ("dog", 12)]);
            assert_eq!(totals(&into), want, "{targets} targets");
        }
    }

    #[test]
    fn without_sum_values_each_record_counts_one_whatever_its_value() {
        let into = maps(2);
        let p = part(&[("the", "3"), ("the", "x"), ("fox", "")]);
        assert!(combine_counts(&p, (Some(2), false), &into).is_empty());
        assert_eq!(totals(&into), expected(&[("the", 2), ("fox", 1)]));
    }

    #[test]
    fn a_value_that_is_not_a_count_is_returned_not_counted() {
        let into = maps(2);
        let p = part(&[("a", "2"), ("b", "two"), ("c", ""), ("a", "-1"), ("d", "1")]);
        let mut bad = combine_counts(&p, (Some(2), true), &into);
        bad.sort_unstable();
        assert_eq!(bad, [1, 2, 3]);
        assert_eq!(totals(&into), expected(&[("a", 2), ("d", 1)]));
        let (out, bad) = count_by_key(&p, true, 7);
        assert_eq!(bad, [1, 2, 3]);
        assert_eq!(out.records.len(), 2);
        assert_eq!(out.records.key(0), Some(&b"a"[..]));
        assert_eq!(out.records.value(0), b"2");
    }

    #[test]
    fn count_by_key_with_sum_values_adds_the_values() {
        let p = part(&[("x", "5"), ("y", "1"), ("x", "7")]);
        let (out, bad) = count_by_key(&p, true, 7);
        assert!(bad.is_empty());
        assert_eq!(out.records.value(0), b"12");
        assert_eq!(out.records.value(1), b"1");
    }

    #[test]
    fn parse_count_takes_decimal_digits_only_and_no_overflow() {
        assert_eq!(parse_count(b"0"), Some(0));
        assert_eq!(parse_count(b"0042"), Some(42));
        assert_eq!(parse_count(b"18446744073709551615"), Some(u64::MAX));
        for bad in [
            &b""[..],
            b"18446744073709551616",
            b"1 ",
            b"+1",
            b"1.0",
            b"/",
            b":",
        ] {
            assert_eq!(parse_count(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
