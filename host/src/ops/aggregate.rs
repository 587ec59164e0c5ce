//! The built-in aggregates of `reduce-by-key-and-window`: per key, an accumulator that takes
//! records, merges with another, and (for the invertible ones) takes another out again.
//!
//! Values are decimal numbers for `sum`, `min`, `max` and `mean`: an integer (up to 64 bits) is
//! kept exact in 128 bits, so an integer sum is the same whatever the order and whether
//! batches were added and taken out (the inverse function); a value with a fraction or an
//! exponent makes the result a float.

use std::collections::HashMap;

use crate::config::window::Aggregate;

/// The hasher of the per-key maps: fixed, so a key always lands in the same partition.
pub type Fast = foldhash::fast::FixedState;

/// Accumulators by key.
pub type Partial = HashMap<Box<[u8]>, Acc, Fast>;

/// Adds `input`'s records to `partial`, by key (all under the empty key with `one_key`);
/// returns the indices of the records whose value the aggregate cannot read. Allocates only
/// for a key `partial` does not hold yet.
pub fn add_records(
    partial: &mut Partial,
    aggregate: Aggregate,
    input: &crate::batch::RecordBatch,
    one_key: bool,
) -> Vec<usize> {
    let mut bad = Vec::new();
    for i in 0..input.len() {
        let key = if one_key {
            &[][..]
        } else {
            input.key(i).unwrap_or_default()
        };
        let value = input.value(i);
        let result = match partial.get_mut(key) {
            Some(acc) => acc.add(aggregate, value),
            None => Acc::of(aggregate, value).map(|acc| {
                partial.insert(key.into(), acc);
            }),
        };
        if result.is_err() {
            bad.push(i);
        }
    }
    bad
}

/// Merges `from` into `into`, key by key.
pub fn merge(into: &mut Partial, from: &Partial, aggregate: Aggregate) {
    for (key, acc) in from {
        match into.get_mut(key) {
            Some(a) => a.merge(aggregate, acc),
            None => {
                into.insert(key.clone(), acc.clone());
            }
        }
    }
}

/// A number: an exact integer, or a float once a value had a fraction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Num {
    /// Exact.
    Int(i128),
    /// Inexact.
    Float(f64),
}

impl Num {
    /// The number `bytes` spell (surrounding ASCII blanks allowed), if any.
    pub fn parse(bytes: &[u8]) -> Option<Num> {
        let s = std::str::from_utf8(bytes).ok()?.trim();
        if let Ok(i) = s.parse::<i64>() {
            return Some(Num::Int(i128::from(i)));
        }
        s.parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(Num::Float)
    }

    fn float(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }

    fn add(self, other: Num) -> Num {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => a
                .checked_add(b)
                .map_or(Num::Float(a as f64 + b as f64), Num::Int),
            (a, b) => Num::Float(a.float() + b.float()),
        }
    }

    fn neg(self) -> Num {
        match self {
            Num::Int(i) => Num::Int(-i),
            Num::Float(f) => Num::Float(-f),
        }
    }

    fn less(self, other: Num) -> bool {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => a < b,
            (a, b) => a.float() < b.float(),
        }
    }

    /// Appends it in decimal.
    pub fn write(self, out: &mut Vec<u8>) {
        use std::io::Write;
        let _ = match self {
            Num::Int(i) => write!(out, "{i}"),
            Num::Float(f) => write!(out, "{f}"),
        };
    }
}

/// One key's accumulator.
#[derive(Debug, Clone, PartialEq)]
pub enum Acc {
    /// `count`.
    Count(u64),
    /// `sum` and `mean`: how many values and their sum.
    Sum {
        /// Values.
        n: u64,
        /// Their sum.
        sum: Num,
    },
    /// `min` or `max`: the value so far.
    Extreme(Num),
    /// `distinct-count`: each distinct value and how many records had it (so a batch can be
    /// taken out again).
    Distinct(HashMap<Box<[u8]>, u64, Fast>),
}

/// Why a record's value cannot be aggregated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotANumber;

impl Acc {
    /// The accumulator of one record with `value`.
    pub fn of(aggregate: Aggregate, value: &[u8]) -> Result<Acc, NotANumber> {
        let num = || Num::parse(value).ok_or(NotANumber);
        Ok(match aggregate {
            Aggregate::Count => Acc::Count(1),
            Aggregate::Sum | Aggregate::Mean => Acc::Sum { n: 1, sum: num()? },
            Aggregate::Min | Aggregate::Max => Acc::Extreme(num()?),
            Aggregate::DistinctCount => {
                let mut m = HashMap::with_hasher(Fast::default());
                m.insert(value.into(), 1);
                Acc::Distinct(m)
            }
        })
    }

    /// Adds one record with `value` (the accumulator of the same aggregate).
    pub fn add(&mut self, aggregate: Aggregate, value: &[u8]) -> Result<(), NotANumber> {
        match self {
            Acc::Count(n) => *n += 1,
            Acc::Distinct(m) => match m.get_mut(value) {
                Some(c) => *c += 1,
                None => {
                    m.insert(value.into(), 1);
                }
            },
            _ => {
                let other = Acc::of(aggregate, value)?;
                self.merge(aggregate, &other);
            }
        }
        Ok(())
    }

    /// Merges `other` into it.
    pub fn merge(&mut self, aggregate: Aggregate, other: &Acc) {
        match (self, other) {
            (Acc::Count(a), Acc::Count(b)) => *a += b,
            (Acc::Sum { n, sum }, Acc::Sum { n: m, sum: s }) => {
                *n += m;
                *sum = sum.add(*s);
            }
            (Acc::Extreme(a), Acc::Extreme(b)) => {
                let take = match aggregate {
                    Aggregate::Max => a.less(*b),
                    _ => b.less(*a),
                };
                if take {
                    *a = *b;
                }
            }
            (Acc::Distinct(a), Acc::Distinct(b)) => {
                for (v, c) in b {
                    match a.get_mut(v) {
                        Some(x) => *x += c,
                        None => {
                            a.insert(v.clone(), *c);
                        }
                    }
                }
            }
            (a, b) => debug_assert!(false, "accumulators of two aggregates: {a:?} {b:?}"),
        }
    }

    /// Takes `other` (merged into it before) out again: Spark's inverse function. Only for an
    /// [`Aggregate::invertible`] aggregate.
    pub fn subtract(&mut self, other: &Acc) {
        match (self, other) {
            (Acc::Count(a), Acc::Count(b)) => *a = a.saturating_sub(*b),
            (Acc::Sum { n, sum }, Acc::Sum { n: m, sum: s }) => {
                *n = n.saturating_sub(*m);
                *sum = if *n == 0 {
                    Num::Int(0)
                } else {
                    sum.add(s.neg())
                };
            }
            (Acc::Distinct(a), Acc::Distinct(b)) => {
                for (v, c) in b {
                    if let Some(x) = a.get_mut(v) {
                        *x = x.saturating_sub(*c);
                        if *x == 0 {
                            a.remove(v);
                        }
                    }
                }
            }
            (a, b) => debug_assert!(false, "cannot take {b:?} out of {a:?}"),
        }
    }

    /// Whether no record is left in it (its key leaves the window).
    pub fn is_empty(&self) -> bool {
        match self {
            Acc::Count(n) | Acc::Sum { n, .. } => *n == 0,
            Acc::Extreme(_) => false,
            Acc::Distinct(m) => m.is_empty(),
        }
    }

    /// Appends its result in decimal: the count, the sum, the value, the mean, or the number
    /// of distinct values.
    pub fn write(&self, aggregate: Aggregate, out: &mut Vec<u8>) {
        match self {
            Acc::Count(n) => Num::Int(i128::from(*n)).write(out),
            Acc::Sum { n, sum } if aggregate == Aggregate::Mean => {
                Num::Float(sum.float() / (*n).max(1) as f64).write(out)
            }
            Acc::Sum { sum, .. } => sum.write(out),
            Acc::Extreme(v) => v.write(out),
            Acc::Distinct(m) => Num::Int(m.len() as i128).write(out),
        }
    }

    /// Appends its encoding (for a state snapshot; [`Acc::decode`] reads it).
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Acc::Count(n) => {
                out.push(0);
                out.extend_from_slice(&n.to_le_bytes());
            }
            Acc::Sum { n, sum } => {
                out.push(1);
                out.extend_from_slice(&n.to_le_bytes());
                encode_num(*sum, out);
            }
            Acc::Extreme(v) => {
                out.push(2);
                encode_num(*v, out);
            }
            Acc::Distinct(m) => {
                out.push(3);
                out.extend_from_slice(&(m.len() as u32).to_le_bytes());
                let mut values: Vec<_> = m.iter().collect();
                values.sort_unstable();
                for (v, c) in values {
                    out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                    out.extend_from_slice(v);
                    out.extend_from_slice(&c.to_le_bytes());
                }
            }
        }
    }

    /// Reads what [`Acc::encode`] wrote, or says what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<Acc, String> {
        let mut r = Reader(bytes);
        let acc = match r.u8()? {
            0 => Acc::Count(r.u64()?),
            1 => Acc::Sum {
                n: r.u64()?,
                sum: r.num()?,
            },
            2 => Acc::Extreme(r.num()?),
            3 => {
                let n = r.u32()?;
                let mut m = HashMap::with_hasher(Fast::default());
                for _ in 0..n {
                    let len = r.u32()? as usize;
                    let v = r.take(len)?;
                    m.insert(v.into(), r.u64()?);
                }
                Acc::Distinct(m)
            }
            t => return Err(format!("unknown accumulator tag {t}")),
        };
        if !r.0.is_empty() {
            return Err(format!("{} bytes after an accumulator", r.0.len()));
        }
        Ok(acc)
    }
}

fn encode_num(n: Num, out: &mut Vec<u8>) {
    match n {
        Num::Int(i) => {
            out.push(0);
            out.extend_from_slice(&i.to_le_bytes());
        }
        Num::Float(f) => {
            out.push(1);
            out.extend_from_slice(&f.to_le_bytes());
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("an accumulator is cut short".to_owned());
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().unwrap_or_default(),
        ))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().unwrap_or_default(),
        ))
    }
    fn num(&mut self) -> Result<Num, String> {
        match self.u8()? {
            0 => Ok(Num::Int(i128::from_le_bytes(
                self.take(16)?.try_into().unwrap_or_default(),
            ))),
            1 => Ok(Num::Float(f64::from_le_bytes(
                self.take(8)?.try_into().unwrap_or_default(),
            ))),
            t => Err(format!("unknown number tag {t}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fold(aggregate: Aggregate, values: &[&str]) -> Acc {
        let mut acc = Acc::of(aggregate, values[0].as_bytes()).unwrap();
        for v in &values[1..] {
            acc.add(aggregate, v.as_bytes()).unwrap();
        }
        acc
    }

    fn text(aggregate: Aggregate, acc: &Acc) -> String {
        let mut out = Vec::new();
        acc.write(aggregate, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn each_aggregate_gives_its_result() {
        let v = ["3", "-1", "10", "3"];
        let cases = [
            (Aggregate::Count, "4"),
            (Aggregate::Sum, "15"),
            (Aggregate::Min, "-1"),
            (Aggregate::Max, "10"),
            (Aggregate::Mean, "3.75"),
            (Aggregate::DistinctCount, "3"),
        ];
        for (a, want) in cases {
            assert_eq!(text(a, &fold(a, &v)), want, "{a:?}");
        }
        assert_eq!(
            text(Aggregate::Sum, &fold(Aggregate::Sum, &["1.5", " 2 "])),
            "3.5"
        );
        assert_eq!(Acc::of(Aggregate::Sum, b"abc"), Err(NotANumber));
        assert_eq!(Acc::of(Aggregate::Max, b"inf"), Err(NotANumber));
    }

    #[test]
    fn merging_then_taking_out_gives_back_the_first_exactly() {
        for a in [
            Aggregate::Count,
            Aggregate::Sum,
            Aggregate::Mean,
            Aggregate::DistinctCount,
        ] {
            let first = fold(a, &["1", "2", "2"]);
            let second = fold(a, &["2", "9223372036854775807", "5"]);
            let mut both = first.clone();
            both.merge(a, &second);
            both.subtract(&second);
            assert_eq!(text(a, &both), text(a, &first), "{a:?}");
            both.subtract(&first);
            assert!(both.is_empty(), "{a:?}: {both:?}");
        }
    }

    #[test]
    fn an_accumulator_reads_back_as_written_and_damage_is_named() {
        for a in [
            Aggregate::Count,
            Aggregate::Sum,
            Aggregate::Max,
            Aggregate::DistinctCount,
        ] {
            let acc = fold(a, &["4", "2.5", "4"]);
            let mut bytes = Vec::new();
            acc.encode(&mut bytes);
            assert_eq!(Acc::decode(&bytes), Ok(acc), "{a:?}");
            assert!(Acc::decode(&bytes[..bytes.len() - 1]).is_err());
        }
        assert!(Acc::decode(&[9]).unwrap_err().contains("tag 9"));
    }
}
