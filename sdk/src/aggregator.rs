//! User-defined aggregates: the [`Aggregator`] trait (world `aggregator`), Spark's
//! `Aggregator` (UDAF) and Flink's `AggregateFunction`.

use crate::{Error, Record};

/// A user-defined aggregate for `reduce-by-key-and-window` (`aggregate-plugin`). Export it with
/// [`crate::export_aggregator!`].
///
/// The plugin works on a typed accumulator, [`Aggregator::Acc`]; the SDK groups each call's
/// records by key (a record without a key counts under the empty key), keeps one accumulator
/// per key, and turns accumulators into the bytes the host keeps (and checkpoints) with
/// [`Aggregator::encode`] and back with [`Aggregator::decode`]. Every method must be
/// deterministic: calls land on any instance, in any order, and are repeated after a crash.
///
/// ```
/// use sluice_sdk::{Aggregator, Error, Params, Record, export_aggregator};
///
/// /// The sum of the values, as decimal integers, per key.
/// struct Sum;
///
/// impl Aggregator for Sum {
///     type Acc = i64;
///     fn init(params: &Params) -> Result<Self, String> {
///         params.allow_only(&[])?;
///         Ok(Sum)
///     }
///     fn add(&self, acc: &mut i64, record: &Record<'_>) -> Result<(), String> {
///         let v: i64 = record.value_str().ok().and_then(|s| s.parse().ok()).ok_or("not an integer")?;
///         *acc += v;
///         Ok(())
///     }
///     fn merge(&self, acc: &mut i64, other: &i64) {
///         *acc += other;
///     }
///     fn finish(&self, _key: &[u8], acc: &i64) -> Result<Vec<u8>, Error> {
///         Ok(acc.to_string().into_bytes())
///     }
///     fn encode(&self, acc: &i64, out: &mut Vec<u8>) {
///         out.extend_from_slice(&acc.to_le_bytes());
///     }
///     fn decode(&self, bytes: &[u8]) -> Result<i64, String> {
///         Ok(i64::from_le_bytes(bytes.try_into().map_err(|_| "not 8 bytes")?))
///     }
/// }
///
/// export_aggregator!(Sum);
///
/// let sum = Sum::init(&Params::default()).unwrap();
/// let mut acc = 0;
/// let batch = sluice_sdk::Batch::from_values(["2", "40"]);
/// for r in batch.records() {
///     sum.add(&mut acc, &r).unwrap();
/// }
/// assert_eq!(sum.finish(b"", &acc).unwrap(), b"42");
/// ```
pub trait Aggregator: Sized + 'static {
    /// One key's accumulator; `Default` is the accumulator of no records.
    type Acc: Default;

    /// Called once on each fresh instance, before any other call. Checks the parameters and
    /// returns the plugin, or a message naming the parameter that is wrong and why (the host
    /// then refuses to start the pipeline).
    fn init(params: &crate::Params) -> Result<Self, String>;

    /// Adds one record to its key's accumulator. An `Err` leaves the record out of the
    /// aggregate (the host dead-letters it with the message); it must then leave `acc` as it
    /// was.
    fn add(&self, acc: &mut Self::Acc, record: &Record<'_>) -> Result<(), String>;

    /// Merges `other` into `acc` (the same key's, from another partition or batch). Must be
    /// associative and commutative.
    fn merge(&self, acc: &mut Self::Acc, other: &Self::Acc);

    /// Whether [`Aggregator::retract`] is implemented; asked once when the step starts, and
    /// `inverse = true` is refused when it says no. Default: no.
    fn can_retract(&self) -> bool {
        false
    }

    /// Takes `expired` (an accumulator earlier merged into `acc`) out of `acc`, for a window
    /// with `inverse = true`. Returns whether `acc` still holds records (`false`: the key
    /// leaves the window). Called only when [`Aggregator::can_retract`] says yes.
    fn retract(&self, acc: &mut Self::Acc, expired: &Self::Acc) -> Result<bool, Error> {
        let _ = (acc, expired);
        Err(Error::fatal("this aggregate cannot retract"))
    }

    /// The key's output value from its accumulator over the window.
    fn finish(&self, key: &[u8], acc: &Self::Acc) -> Result<Vec<u8>, Error>;

    /// Appends the accumulator's bytes to `out` (what the host keeps and checkpoints).
    fn encode(&self, acc: &Self::Acc, out: &mut Vec<u8>);

    /// The accumulator `encode` wrote as `bytes`, or why they cannot be read.
    fn decode(&self, bytes: &[u8]) -> Result<Self::Acc, String>;
}
