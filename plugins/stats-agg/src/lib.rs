//! `stats-agg`: an aggregate plugin (world `aggregator`) for `reduce-by-key-and-window`.
//!
//! Per key, over the window, the count, sum, minimum, maximum, mean and exact median of the
//! records' values (decimal numbers), as one JSON object:
//! `{"count":3,"sum":6,"min":1,"max":3,"mean":2,"median":2}`. The built-in aggregates give one
//! of these per step and no median: an exact median needs every value, which this accumulator
//! keeps as a multiset (each distinct value and how many records had it). A multiset can take
//! an expired batch out again, so the plugin supports `inverse = true` (`retract`), even for
//! the minimum and maximum, which the built-ins cannot invert. A value that is not a finite
//! number is rejected (dead-lettered).
//!
//! Parameters: `measure`: `"value"` (default: the value, a decimal number) or `"bytes"` (the
//! value's length in bytes: statistics of record sizes per key).

use std::collections::BTreeMap;

use sluice_sdk::{Aggregator, Error, Params, Record, export_aggregator};

/// What is measured of each record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// The value, a decimal number.
    Value,
    /// The value's length in bytes.
    Bytes,
}

/// The aggregate, measuring each record by `measure`.
#[derive(Debug)]
pub struct Stats {
    /// What is measured.
    pub measure: Measure,
}

/// One key's values: by [`order_key`], how many records had each.
pub type Multiset = BTreeMap<u64, u64>;

/// An `f64` as a `u64` that sorts as the number does (IEEE 754 total order).
pub fn order_key(v: f64) -> u64 {
    let bits = v.to_bits();
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    }
}

/// The number [`order_key`] made `k` from.
pub fn from_order_key(k: u64) -> f64 {
    f64::from_bits(if k >> 63 == 1 { k & !(1 << 63) } else { !k })
}

impl Aggregator for Stats {
    type Acc = Multiset;

    fn init(params: &Params) -> Result<Self, String> {
        params.allow_only(&["measure"])?;
        let measure = match params.get("measure").unwrap_or("value") {
            "value" => Measure::Value,
            "bytes" => Measure::Bytes,
            other => {
                return Err(format!(
                    "parameter `measure` = {other:?}: expected \"value\" or \"bytes\""
                ));
            }
        };
        Ok(Stats { measure })
    }

    fn add(&self, acc: &mut Multiset, record: &Record<'_>) -> Result<(), String> {
        let v = match self.measure {
            Measure::Bytes => record.value().len() as f64,
            Measure::Value => record
                .value_str()
                .ok()
                .and_then(|s| s.trim().parse::<f64>().ok())
                .filter(|v| v.is_finite())
                .ok_or("the value is not a finite decimal number")?,
        };
        // -0.0 and 0.0 are one value.
        *acc.entry(order_key(v + 0.0)).or_default() += 1;
        Ok(())
    }

    fn merge(&self, acc: &mut Multiset, other: &Multiset) {
        for (k, n) in other {
            *acc.entry(*k).or_default() += n;
        }
    }

    fn can_retract(&self) -> bool {
        true
    }

    fn retract(&self, acc: &mut Multiset, expired: &Multiset) -> Result<bool, Error> {
        for (k, n) in expired {
            if let Some(have) = acc.get_mut(k) {
                *have = have.saturating_sub(*n);
                if *have == 0 {
                    acc.remove(k);
                }
            }
        }
        Ok(!acc.is_empty())
    }

    fn finish(&self, _key: &[u8], acc: &Multiset) -> Result<Vec<u8>, Error> {
        Ok(stats_json(acc).into_bytes())
    }

    fn encode(&self, acc: &Multiset, out: &mut Vec<u8>) {
        for (k, n) in acc {
            out.extend_from_slice(&k.to_le_bytes());
            out.extend_from_slice(&n.to_le_bytes());
        }
    }

    fn decode(&self, bytes: &[u8]) -> Result<Multiset, String> {
        if !bytes.len().is_multiple_of(16) {
            return Err(format!(
                "{} bytes is not a whole number of entries",
                bytes.len()
            ));
        }
        Ok(bytes
            .chunks_exact(16)
            .map(|c| {
                let (k, n) = c.split_at(8);
                let word = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or_default());
                (word(k), word(n))
            })
            .collect())
    }
}

/// The statistics of a multiset as a JSON object (`{}` for an empty one).
pub fn stats_json(acc: &Multiset) -> String {
    let count: u64 = acc.values().sum();
    if count == 0 {
        return "{}".to_owned();
    }
    let sum: f64 = acc
        .iter()
        .map(|(k, n)| from_order_key(*k) * *n as f64)
        .sum();
    let min = acc.keys().next().map_or(0.0, |k| from_order_key(*k));
    let max = acc.keys().next_back().map_or(0.0, |k| from_order_key(*k));
    let median = (nth(acc, (count - 1) / 2) + nth(acc, count / 2)) / 2.0;
    format!(
        "{{\"count\":{count},\"sum\":{sum},\"min\":{min},\"max\":{max},\"mean\":{},\"median\":{median}}}",
        sum / count as f64
    )
}

/// The `i`th smallest value (from 0) of a multiset with more than `i` values.
fn nth(acc: &Multiset, i: u64) -> f64 {
    let mut seen = 0;
    for (k, n) in acc {
        seen += n;
        if seen > i {
            return from_order_key(*k);
        }
    }
    0.0
}

export_aggregator!(Stats);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::Batch;

    const VALUES: Stats = Stats {
        measure: Measure::Value,
    };

    fn acc_of(values: &[&str]) -> Multiset {
        let mut acc = Multiset::new();
        for r in Batch::from_values(values.iter().copied()).records() {
            VALUES.add(&mut acc, &r).unwrap();
        }
        acc
    }

    #[test]
    fn the_order_key_sorts_as_the_numbers() {
        let vs = [-1e9, -2.5, -0.0, 0.0, 1.0, 3.5, 1e300];
        for w in vs.windows(2) {
            assert!(order_key(w[0]) <= order_key(w[1]), "{w:?}");
            assert_eq!(from_order_key(order_key(w[0])), w[0]);
        }
    }

    #[test]
    fn stats_of_a_key_and_a_retracted_batch() {
        let mut a = acc_of(&["1", "5", "3"]);
        assert_eq!(
            stats_json(&a),
            r#"{"count":3,"sum":9,"min":1,"max":5,"mean":3,"median":3}"#
        );
        let b = acc_of(&["10", "2"]);
        VALUES.merge(&mut a, &b);
        assert_eq!(
            stats_json(&a),
            r#"{"count":5,"sum":21,"min":1,"max":10,"mean":4.2,"median":3}"#
        );
        let first = acc_of(&["1", "5", "3"]);
        assert!(VALUES.retract(&mut a, &first).unwrap());
        assert_eq!(
            stats_json(&a),
            r#"{"count":2,"sum":12,"min":2,"max":10,"mean":6,"median":6}"#
        );
        assert!(!VALUES.retract(&mut a, &b).unwrap());
    }

    #[test]
    fn an_accumulator_survives_its_encoding_and_bad_values_are_rejected() {
        let a = acc_of(&["1", "1", "-7.5"]);
        let mut bytes = Vec::new();
        VALUES.encode(&a, &mut bytes);
        assert_eq!(VALUES.decode(&bytes).unwrap(), a);
        let bad = Batch::from_values(["x"]);
        let r = bad.records().next().unwrap();
        assert!(VALUES.add(&mut Multiset::new(), &r).is_err());
    }
}

#[cfg(test)]
mod measure_tests {
    use super::*;

    #[test]
    fn bytes_measures_the_value_length_and_a_bad_measure_is_named() {
        let s = Stats::init(&Params::from_iter([("measure", "bytes")])).unwrap();
        let mut acc = Multiset::new();
        for r in sluice_sdk::Batch::from_values(["ab", "abcd"]).records() {
            s.add(&mut acc, &r).unwrap();
        }
        assert_eq!(
            stats_json(&acc),
            r#"{"count":2,"sum":6,"min":2,"max":4,"mean":3,"median":3}"#
        );
        let e = Stats::init(&Params::from_iter([("measure", "x")])).unwrap_err();
        assert!(e.contains("`measure`"), "{e}");
    }
}
