//! The JSON documents of `/api/v1/`, which the UI and `sluice status` read.
//!
//! No document holds a secret: no token, no connection string, no plugin parameter (a
//! parameter may carry a key); sources and sinks are shown by kind and name only.

use serde_json::{Value, json};

use super::Monitor;
use super::history::BatchRow;
use crate::plugin::Plugin;

/// How many batches of the history the rates are taken over.
const RATE_BATCHES: usize = 10;

impl Monitor {
    /// `/api/v1/overview`: the pipeline, its totals and rates, memory, readiness, and the
    /// newest batch.
    pub fn overview(&self) -> Value {
        let h = self.history();
        let recent: Vec<&BatchRow> = h.batches.iter().rev().take(RATE_BATCHES).collect();
        let span_s = recent.len() as f64 * self.info.batch_interval_ms as f64 / 1e3;
        let rate = |f: fn(&BatchRow) -> u64| match span_s > 0.0 {
            true => recent.iter().map(|r| f(r)).sum::<u64>() as f64 / span_s,
            false => 0.0,
        };
        let mean = |f: fn(&BatchRow) -> f64| match recent.is_empty() {
            true => None,
            false => Some(recent.iter().map(|r| f(r)).sum::<f64>() / recent.len() as f64),
        };
        json!({
            "info": self.info,
            "uptime_s": (crate::clock::now_ms() - self.info.started_ms).max(0) as f64 / 1e3,
            "ready": self.readiness().err().map_or(json!(true), |why| json!(why)),
            "totals": h.totals,
            "input_rate": rate(|r| r.records_in),
            "output_rate": rate(|r| r.records_out),
            "mean_processing_ms": mean(|r| r.processing_ms),
            "mean_scheduling_delay_ms": mean(|r| r.scheduling_delay_ms),
            "mean_total_delay_ms": mean(|r| r.total_delay_ms),
            "memory": {
                "budget": self.blocks.budget(),
                "used": self.blocks.used(),
                "peak": self.blocks.peak(),
                "backpressure_waits": self.blocks.backpressure_waits(),
            },
            "last_batch": h.batches.back(),
            "ownership": *self.ownership.lock().unwrap_or_else(|e| e.into_inner()),
        })
    }

    /// `/api/v1/batches`: the last `limit` batches, newest first.
    pub fn batches(&self, limit: usize) -> Value {
        let h = self.history();
        let rows: Vec<&BatchRow> = h.batches.iter().rev().take(limit).collect();
        json!({ "kept": h.batches.len(), "batches": rows })
    }

    /// `/api/v1/batches/{id}`: one batch, if the history still has it.
    pub fn batch(&self, id: u64) -> Option<Value> {
        let h = self.history();
        let row = h.batches.iter().rev().find(|r| r.batch == id)?;
        Some(json!(row))
    }

    /// `/api/v1/receivers`: per partition, what its receiver handed in, its rate over the
    /// last batch, its last error and the time the memory budget held it back.
    pub fn receivers(&self) -> Value {
        let h = self.history();
        let last = h.batches.back();
        let interval_s = self.info.batch_interval_ms.max(1) as f64 / 1e3;
        let owned = self.ownership.lock().unwrap_or_else(|e| e.into_inner());
        let rows: Vec<Value> = (0..self.info.partitions)
            .filter_map(|p| {
                let intake = self.blocks.intake(p)?.snapshot();
                let owner = match owned.as_ref() {
                    Some(o) if o.owned.contains(&p) => json!(o.member),
                    Some(_) => Value::Null,
                    None => json!("this host"),
                };
                let took = last
                    .and_then(|b| b.partitions.get(p as usize))
                    .map(|(s, e)| e - s);
                Some(json!({
                    "partition": p,
                    "owner": owner,
                    "rate": took.map(|n| n as f64 / interval_s),
                    "lag": intake.lag.map(|n| json!({ "value": n, "unit": lag_unit(&self.info.source) })),
                    "wal": self.info.wal.then(|| json!({
                        "received": self.blocks.next_offset(p),
                        "logged": self.blocks.durable_offset(p),
                    })),
                    "intake": intake,
                }))
            })
            .collect();
        json!({ "source": self.info.source, "receivers": rows })
    }

    /// `/api/v1/plugins`: every plugin the run calls now, with its calls, traps, time per
    /// record, memory, and its own counters and gauges.
    pub fn plugins_json(&self) -> Value {
        let rows: Vec<Value> = self.plugins().iter().map(plugin_json).collect();
        json!({ "plugins": rows })
    }

    /// `/api/v1/swaps`: the swap events kept, newest first.
    pub fn swaps(&self) -> Value {
        let h = self.history();
        let rows: Vec<_> = h.swaps.iter().rev().collect();
        json!({ "swaps": rows })
    }

    /// `/api/v1/checkpoints`: the newest checkpoint entries this run wrote, newest first.
    pub fn checkpoints(&self, limit: usize) -> Value {
        let h = self.history();
        let rows: Vec<Value> = h
            .batches
            .iter()
            .rev()
            .take(limit)
            .map(|r| {
                json!({
                    "batch": r.batch,
                    "written_ms": r.done_ms,
                    "write_ms": r.checkpoint_ms,
                    "outcome": r.outcome,
                    "plugins": r.plugins,
                })
            })
            .collect();
        json!({
            "location": self.checkpoint_location,
            "written": h.totals.checkpoints,
            "entries": if self.checkpoint_location.is_some() { rows } else { Vec::new() },
        })
    }

    /// `/api/v1/dead-letters`: counts per batch of the history, the total, and where they
    /// are kept.
    pub fn dead_letters(&self) -> Value {
        let h = self.history();
        let per_batch: Vec<Value> = h
            .batches
            .iter()
            .rev()
            .filter(|r| r.dead_letters > 0)
            .take(100)
            .map(|r| json!({ "batch": r.batch, "count": r.dead_letters }))
            .collect();
        json!({
            "total": h.totals.dead_letters,
            "batches": per_batch,
            "samples": self.dead_letter_samples(),
        })
    }
}

/// What a source's lag counts.
fn lag_unit(source: &str) -> &'static str {
    match source {
        "files" => "bytes of listed files not read yet",
        _ => "records",
    }
}

/// One plugin's row.
pub fn plugin_json(p: &Plugin) -> Value {
    use std::sync::atomic::Ordering::Relaxed;
    let info = p.info();
    let m = p.metrics();
    let (records, nanos) = (m.records.load(Relaxed), m.call_nanos.load(Relaxed));
    json!({
        "name": info.name,
        "kind": format!("{:?}", info.kind).to_lowercase(),
        "version": info.manifest.plugin_version,
        "description": info.manifest.description,
        "digest": info.digest,
        "calls": m.calls.load(Relaxed),
        "traps": m.traps.load(Relaxed),
        "records": records,
        "call_seconds": nanos as f64 / 1e9,
        "ns_per_record": if records > 0 { Some(nanos as f64 / records as f64) } else { None },
        "memory_peak_bytes": m.memory_peak.load(Relaxed),
        "limits": {
            "memory": info.limits.memory,
            "time_ms": info.limits.time.as_millis() as u64,
            "fuel": info.limits.fuel,
        },
        "counters": m.counters(),
        "gauges": m.gauges(),
    })
}
