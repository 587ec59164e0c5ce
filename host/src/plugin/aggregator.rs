//! Aggregate plugins (world `aggregator`): user-defined aggregates for
//! `reduce-by-key-and-window`, Spark's `Aggregator` (UDAF) and Flink's `AggregateFunction`.
//!
//! The host owns the accumulators as opaque bytes ([`Accs`], sorted by key so that calls and
//! checkpoints come out the same whatever the order records arrived in); the plugin adds
//! records to them, merges, retracts and finishes them. Every call checks what comes back
//! against the contract (columns of the right length, each key once) and turns a trap, a
//! time-out or an error into a [`PluginError`] naming the plugin and the batch.

use super::wit_context;
use std::collections::BTreeMap;

use super::{
    Bound, CallContext, CallResult, Failure, Plugin, PluginError, PluginKind, Stage, col,
    guest_failure, to_wit, v0_1,
};
use crate::batch::{BytesColumn, RecordBatch};

/// Accumulators by key (a record without a key counts under the empty key).
pub type Accs = BTreeMap<Box<[u8]>, Vec<u8>>;

/// What `add` made of some records.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Added {
    /// One accumulator per distinct key.
    pub accs: Accs,
    /// Records the plugin left out, by index, with its reason.
    pub rejected: Vec<(u32, String)>,
}

/// An aggregate plugin with its parameters, and whether it can take records out again.
#[derive(Debug)]
pub struct AggregatorStage {
    stage: Stage,
    can_retract: bool,
}

impl Plugin {
    /// An aggregate stage; refuses a plugin of another kind and parameters its `init` refuses.
    /// Asks it once whether it can retract.
    pub fn aggregator(&self, params: &BTreeMap<String, String>) -> Result<AggregatorStage, String> {
        self.expect_kind(PluginKind::Aggregator)?;
        let stage = self.stage(params).map_err(|e| e.to_string())?;
        let site = stage.site("can-retract", None, None);
        let can_retract = stage
            .call(site, |bound, store| match bound {
                Bound::Aggregator(a) => a.sluice_plugin_aggregate().call_can_retract(store),
                _ => unreachable!("an aggregator stage holds an aggregator"),
            })
            .map_err(|e| e.to_string())?;
        Ok(AggregatorStage { stage, can_retract })
    }
}

/// The accumulators' keys and values as two columns, in key order.
fn columns<'a>(rows: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> (BytesColumn, BytesColumn) {
    let (mut keys, mut accs) = (BytesColumn::default(), BytesColumn::default());
    for (k, a) in rows {
        keys.push(k);
        accs.push(a);
    }
    (keys, accs)
}

/// A returned column, checked to hold `n` values.
fn returned(
    c: v0_1::types::BytesColumnResult,
    what: &str,
    n: usize,
) -> Result<BytesColumn, Failure> {
    let c = BytesColumn {
        data: c.data.into(),
        ends: c.ends,
    };
    c.validate(what).map_err(Failure::Contract)?;
    if c.len() != n {
        return Err(Failure::Contract(format!(
            "returned {} {what} for {n} keys",
            c.len()
        )));
    }
    Ok(c)
}

impl AggregatorStage {
    /// The stage's plugin.
    pub fn plugin(&self) -> &Plugin {
        &self.stage.plugin
    }

    /// Whether the plugin said it implements `retract` (an `inverse = true` window needs it).
    pub fn can_retract(&self) -> bool {
        self.can_retract
    }

    fn fail(&self, call: &'static str, batch: u64) -> impl Fn(Failure) -> PluginError + '_ {
        move |failure| PluginError {
            site: self.stage.site(call, None, Some(batch)),
            failure,
        }
    }

    /// Calls `add` with one partition's records: each distinct key's accumulator.
    pub fn add(&self, ctx: &CallContext, input: &RecordBatch) -> CallResult<Added> {
        let site = self
            .stage
            .site("add", Some(ctx.partition), Some(ctx.batch_id));
        let wit_ctx = wit_context(ctx);
        let r = self.stage.call(site.clone(), |bound, store| match bound {
            Bound::Aggregator(a) => {
                a.sluice_plugin_aggregate()
                    .call_add(store, wit_ctx, to_wit(input))
            }
            _ => unreachable!("an aggregator stage holds an aggregator"),
        })?;
        let fail = |failure| PluginError {
            site: site.clone(),
            failure,
        };
        let p = r.map_err(|e| fail(guest_failure(e)))?;
        let keys = BytesColumn {
            data: p.keys.data.into(),
            ends: p.keys.ends,
        };
        keys.validate("keys")
            .map_err(|m| fail(Failure::Contract(m)))?;
        let accs = returned(p.accs, "accumulators", keys.len()).map_err(fail)?;
        let mut added = Added::default();
        for i in 0..keys.len() {
            if added
                .accs
                .insert(keys.get(i).into(), accs.get(i).to_vec())
                .is_some()
            {
                return Err(fail(Failure::Contract(format!(
                    "`add` returned key {:?} twice; each key comes once",
                    String::from_utf8_lossy(keys.get(i))
                ))));
            }
        }
        for r in p.rejected {
            if r.index as usize >= input.len() {
                return Err(fail(Failure::Contract(format!(
                    "rejected record {} is out of range for {} input records",
                    r.index,
                    input.len()
                ))));
            }
            added.rejected.push((r.index, r.reason));
        }
        Ok(added)
    }

    /// Merges `from` into `into` (batch `batch`'s, for messages): keys in both are merged by
    /// the plugin in one call, the others copied.
    pub fn merge(&self, into: &mut Accs, from: Accs, batch: u64) -> CallResult<()> {
        let mut both = Vec::new();
        for (k, a) in from {
            match into.get(&k) {
                Some(_) => both.push((k, a)),
                None => {
                    into.insert(k, a);
                }
            }
        }
        if both.is_empty() {
            return Ok(());
        }
        let (keys, left) = columns(both.iter().map(|(k, _)| (&k[..], &into[k][..])));
        let mut right = BytesColumn::default();
        for (_, a) in &both {
            right.push(a);
        }
        let merged = self.call_pairwise("merge", batch, &keys, &left, &right)?;
        for (i, (k, _)) in both.into_iter().enumerate() {
            into.insert(k, merged.get(i).to_vec());
        }
        Ok(())
    }

    /// Takes `expired` out of `from` with the plugin's `retract`; a key left with an empty
    /// accumulator is dropped. Only for a plugin that [can retract](Self::can_retract).
    pub fn retract(&self, from: &mut Accs, expired: &Accs, batch: u64) -> CallResult<()> {
        let both: Vec<(&[u8], &[u8])> = expired
            .iter()
            .filter(|(k, _)| from.contains_key(*k))
            .map(|(k, a)| (&k[..], &a[..]))
            .collect();
        if both.is_empty() {
            return Ok(());
        }
        let (keys, gone) = columns(both.iter().copied());
        let mut acc = BytesColumn::default();
        for (k, _) in &both {
            acc.push(&from[*k]);
        }
        let left = self.call_pairwise("retract", batch, &keys, &acc, &gone)?;
        for (i, (k, _)) in both.iter().enumerate() {
            let a = left.get(i);
            if a.is_empty() {
                from.remove(*k);
            } else if let Some(slot) = from.get_mut(*k) {
                *slot = a.to_vec();
            }
        }
        Ok(())
    }

    fn call_pairwise(
        &self,
        call: &'static str,
        batch: u64,
        keys: &BytesColumn,
        left: &BytesColumn,
        right: &BytesColumn,
    ) -> CallResult<BytesColumn> {
        let fail = self.fail(call, batch);
        let site = self.stage.site(call, None, Some(batch));
        let r = self.stage.call(site, |bound, store| match bound {
            Bound::Aggregator(a) => {
                let agg = a.sluice_plugin_aggregate();
                if call == "merge" {
                    agg.call_merge(store, col(keys), col(left), col(right))
                } else {
                    agg.call_retract(store, col(keys), col(left), col(right))
                }
            }
            _ => unreachable!("an aggregator stage holds an aggregator"),
        })?;
        let out = r.map_err(|e| fail(guest_failure(e)))?;
        returned(out, "accumulators", keys.len()).map_err(fail)
    }

    /// Calls `finish`: each key's output value, in key order.
    pub fn finish(&self, accs: &Accs, batch: u64) -> CallResult<BytesColumn> {
        let fail = self.fail("finish", batch);
        let site = self.stage.site("finish", None, Some(batch));
        let (keys, values) = columns(accs.iter().map(|(k, a)| (&k[..], &a[..])));
        let r = self.stage.call(site, |bound, store| match bound {
            Bound::Aggregator(a) => {
                a.sluice_plugin_aggregate()
                    .call_finish(store, col(&keys), col(&values))
            }
            _ => unreachable!("an aggregator stage holds an aggregator"),
        })?;
        let out = r.map_err(|e| fail(guest_failure(e)))?;
        returned(out, "values", keys.len()).map_err(fail)
    }
}
