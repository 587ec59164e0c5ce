//! Shadow runs: a candidate version of a transformation plugin runs on the same input as the
//! live version's step, beside it, for a number of batches. Its output is compared with the
//! live output and then dropped: it never reaches a sink, the dead letters or the checkpoint
//! log (only the verdict does). A candidate that fails is a finding, never a failure of the
//! batch.
//!
//! Each batch pins the shadow that was running when it opened, as it pins its steps, so a
//! batch is compared whole or not at all. Per batch the report holds the record counts of
//! both versions, how many records differ, and the first few differing records with their
//! source partition and offset.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;

use super::part::{Lineage, Part};
use crate::batch::RecordBatch;
use crate::plugin::{CallContext, Failure, TransformStage};

/// How many differing records a batch's report shows.
const SHOWN: usize = 3;
/// How many bytes of a key or value a report shows.
const SHOWN_BYTES: usize = 200;

/// A candidate running in the shadow of the live version.
#[derive(Debug)]
pub struct Shadow {
    /// The plugin.
    pub plugin: String,
    /// The candidate's sha256.
    pub digest: String,
    /// The sha256 of the live version when the shadow started.
    pub live: String,
    /// The candidate's stage for each step that uses the plugin, by step index.
    pub stages: Vec<(usize, Arc<TransformStage>)>,
    /// How many batches to compare.
    pub wanted: u32,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    open: BTreeMap<u64, BatchDiff>,
    done: Vec<BatchDiff>,
    differing: u32,
    failed: Option<String>,
    stopped: bool,
    /// Its verdict was given.
    ended: bool,
}

/// One compared batch.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BatchDiff {
    /// The batch.
    pub batch: u64,
    /// Records the live version's step gave.
    pub live_records: u64,
    /// Records the candidate gave.
    pub shadow_records: u64,
    /// Output positions where the two differ (a record different, or one version's extra).
    pub differences: u64,
    /// The first differing records.
    pub first: Vec<RecordDiff>,
}

/// A differing record: where its input came from and both versions' outputs there.
#[derive(Debug, Clone, Serialize)]
pub struct RecordDiff {
    /// The source partition.
    pub partition: u32,
    /// The source offset of the input record it came from (as far as known).
    pub offset: Option<u64>,
    /// The live version's record (`None`: the candidate gave more records).
    pub live: Option<Shown>,
    /// The candidate's record (`None`: it gave fewer).
    pub shadow: Option<Shown>,
}

/// A record as a report shows it: key and value as text (lossy, cut at 200 bytes).
#[derive(Debug, Clone, Serialize)]
pub struct Shown {
    /// The key.
    pub key: Option<String>,
    /// The value.
    pub value: String,
}

/// A shadow's report so far.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The plugin.
    pub plugin: String,
    /// The candidate's sha256.
    pub digest: String,
    /// The live version's sha256 when it started.
    pub live: String,
    /// How many batches it compares.
    pub wanted: u32,
    /// The batches compared so far.
    pub batches: Vec<BatchDiff>,
    /// How many of them differed.
    pub differing: u32,
    /// The candidate's failure, which ended the shadow.
    pub failed: Option<String>,
    /// Whether it ended (compared `wanted` batches, failed, or was promoted or replaced).
    pub done: bool,
}

impl Shadow {
    /// A shadow of `plugin` running `stages` (the candidate `digest`) beside `live`, for
    /// `wanted` batches.
    pub fn new(
        (plugin, digest, live): (String, String, String),
        stages: Vec<(usize, Arc<TransformStage>)>,
        wanted: u32,
    ) -> Shadow {
        Shadow {
            plugin,
            digest,
            live,
            stages,
            wanted: wanted.max(1),
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The candidate's stage for step `step`, while the shadow runs.
    pub fn stage_for(&self, step: usize) -> Option<&TransformStage> {
        if self.done() {
            return None;
        }
        self.stages
            .iter()
            .find(|(i, _)| *i == step)
            .map(|(_, s)| s.as_ref())
    }

    /// Whether it ended.
    pub fn done(&self) -> bool {
        let s = self.lock();
        s.stopped || s.failed.is_some() || s.done.len() as u32 >= self.wanted
    }

    /// Ends it (promoted, or replaced by another shadow).
    pub fn stop(&self) {
        self.lock().stopped = true;
    }

    /// Compares the live step's output `live` with the candidate's `shadow` (given
    /// `origins`: for each of its records, the input record it came from; empty for a map)
    /// on input whose lineage is `input`.
    pub fn compare(
        &self,
        batch: u64,
        live: &Part,
        (shadow, origins): (&RecordBatch, &[u32]),
        input: &Lineage,
    ) {
        let (n, m) = (live.records.len(), shadow.len());
        let mut differences = 0u64;
        let mut first = Vec::new();
        for i in 0..n.max(m) {
            let (l, s) = (i < n, i < m);
            let same = l
                && s
                && live.records.value(i) == shadow.value(i)
                && live.records.key(i) == shadow.key(i);
            if same {
                continue;
            }
            differences += 1;
            if first.len() < SHOWN {
                let at = if l {
                    Some(live.lineage.at(i))
                } else {
                    origins
                        .get(i)
                        .map(|&o| input.at(o as usize))
                        .or(Some(input.at(i)))
                };
                first.push(RecordDiff {
                    partition: at.map_or(live.partition, |a| a.0),
                    offset: at.map(|a| a.1).filter(|&o| o != u64::MAX),
                    live: l.then(|| shown(&live.records, i)),
                    shadow: s.then(|| shown(shadow, i)),
                });
            }
        }
        let mut state = self.lock();
        let d = state.open.entry(batch).or_insert_with(|| BatchDiff {
            batch,
            ..BatchDiff::default()
        });
        d.live_records += n as u64;
        d.shadow_records += m as u64;
        d.differences += differences;
        let room = SHOWN.saturating_sub(d.first.len());
        d.first.extend(first.into_iter().take(room));
    }

    /// The candidate failed on batch `batch`: the shadow ends with that finding.
    pub fn fail(&self, batch: u64, error: String) {
        let mut s = self.lock();
        if s.failed.is_none() {
            tracing::warn!(plugin = %self.plugin, digest = %short(&self.digest), batch, error = %error, "The candidate running in the shadow failed; the shadow ends (the live version is not affected).");
            s.failed = Some(format!("batch {batch}: {error}"));
        }
    }

    /// Forgets what batch `batch` compared so far (it is being recomputed).
    pub fn forget(&self, batch: u64) {
        self.lock().open.remove(&batch);
    }

    /// Batch `batch` committed: its comparison counts. Returns `true` once, when the shadow
    /// ended with it (compared the batches it wanted, the candidate failed in it, or it was
    /// stopped while the batch ran).
    pub fn batch_done(&self, batch: u64) -> bool {
        let mut s = self.lock();
        if s.ended {
            return false;
        }
        let d = s.open.remove(&batch).unwrap_or(BatchDiff {
            batch,
            ..BatchDiff::default()
        });
        if s.failed.is_none() {
            if d.differences > 0 || d.live_records != d.shadow_records {
                s.differing += 1;
                tracing::info!(plugin = %self.plugin, digest = %short(&self.digest), batch, live_records = d.live_records, shadow_records = d.shadow_records, differences = d.differences, "The candidate's output differs from the live version's in this batch.");
            }
            s.done.push(d);
        }
        s.ended = s.failed.is_some() || s.stopped || s.done.len() as u32 >= self.wanted;
        if s.ended {
            tracing::info!(plugin = %self.plugin, digest = %short(&self.digest), batches = s.done.len(), differing = s.differing, failed = s.failed.as_deref().unwrap_or("no"), "The shadow run ended; `sluice plugin promote` swaps the candidate in.");
        }
        s.ended
    }

    /// The report so far.
    pub fn report(&self) -> Report {
        let s = self.lock();
        Report {
            plugin: self.plugin.clone(),
            digest: self.digest.clone(),
            live: self.live.clone(),
            wanted: self.wanted,
            batches: s.done.clone(),
            differing: s.differing,
            failed: s.failed.clone(),
            done: s.stopped || s.failed.is_some() || s.done.len() as u32 >= self.wanted,
        }
    }

    /// How many batches were compared, and how many of them differed.
    pub fn counts(&self) -> (u32, u32) {
        let s = self.lock();
        (s.done.len() as u32, s.differing)
    }
}

fn shown(b: &RecordBatch, i: usize) -> Shown {
    let cut =
        |bytes: &[u8]| String::from_utf8_lossy(&bytes[..bytes.len().min(SHOWN_BYTES)]).into_owned();
    Shown {
        key: b.key(i).map(cut),
        value: cut(b.value(i)),
    }
}

fn short(digest: &str) -> &str {
    &digest[..12.min(digest.len())]
}

/// Runs the candidate `stage` on `records` (one call, as the live step's call on them was),
/// dropping records it rejects as bad and calling again as the live step does. Returns its
/// output and origins, or its failure as text.
pub fn call(
    stage: &TransformStage,
    ctx: &CallContext,
    records: &RecordBatch,
) -> Result<(RecordBatch, Vec<u32>), String> {
    let mut input = std::borrow::Cow::Borrowed(records);
    // Which original record each input record is, once bad ones are dropped.
    let mut index: Option<Vec<u32>> = None;
    for _ in 0..1000 {
        match stage.transform(ctx, &input) {
            Ok(out) => {
                let origins = match (&index, out.origins.is_empty()) {
                    (None, _) => out.origins,
                    (Some(ix), true) => ix.clone(),
                    (Some(ix), false) => out.origins.iter().map(|&o| ix[o as usize]).collect(),
                };
                return Ok((out.batch, origins));
            }
            Err(e) => match &e.failure {
                Failure::BadRecord { index: bad, .. } if (*bad as usize) < input.len() => {
                    let keep: Vec<u32> = (0..input.len() as u32).filter(|i| i != bad).collect();
                    let ix = index.get_or_insert_with(|| (0..records.len() as u32).collect());
                    *ix = keep.iter().map(|&k| ix[k as usize]).collect();
                    input = std::borrow::Cow::Owned(input.gather(&keep));
                }
                _ => return Err(e.to_string()),
            },
        }
    }
    Err("rejected records one at a time a thousand times in one call".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(values: &[&str], start: u64) -> Part {
        Part {
            partition: 1,
            records: RecordBatch::from_values(values.iter().map(|v| v.as_bytes())),
            lineage: Lineage::Range {
                partition: 1,
                start,
            },
        }
    }

    fn shadow(wanted: u32) -> Shadow {
        Shadow::new(
            ("p".into(), "c".repeat(64), "l".repeat(64)),
            Vec::new(),
            wanted,
        )
    }

    #[test]
    fn equal_outputs_make_a_batch_without_differences() {
        let s = shadow(2);
        let live = part(&["a", "b"], 10);
        s.compare(7, &live, (&live.records, &[]), &live.lineage);
        assert!(!s.batch_done(7));
        let r = s.report();
        assert_eq!(r.batches.len(), 1);
        assert_eq!(r.batches[0].differences, 0);
        assert_eq!(r.batches[0].live_records, 2);
        assert_eq!(r.differing, 0);
        assert!(!r.done);
    }

    #[test]
    fn the_first_differing_records_are_reported_with_their_offsets() {
        let s = shadow(1);
        let live = part(&["a", "b", "c"], 100);
        let cand = RecordBatch::from_values([&b"a"[..], b"B", b"c", b"d"]);
        s.compare(3, &live, (&cand, &[0, 1, 2, 2]), &live.lineage);
        assert!(s.batch_done(3), "the shadow wanted one batch");
        assert!(!s.batch_done(3), "its verdict is given once");
        let r = s.report();
        assert!(r.done);
        assert_eq!(r.differing, 1);
        let b = &r.batches[0];
        assert_eq!((b.live_records, b.shadow_records, b.differences), (3, 4, 2));
        assert_eq!(b.first[0].offset, Some(101));
        assert_eq!(b.first[0].live.as_ref().unwrap().value, "b");
        assert_eq!(b.first[0].shadow.as_ref().unwrap().value, "B");
        // The candidate's extra record came from input record 2, offset 102.
        assert_eq!(b.first[1].offset, Some(102));
        assert!(b.first[1].live.is_none());
    }

    #[test]
    fn a_failed_candidate_ends_the_shadow_with_its_error() {
        let s = shadow(5);
        s.fail(4, "trapped".into());
        assert!(s.done());
        assert!(s.batch_done(4));
        let r = s.report();
        assert_eq!(r.failed.as_deref(), Some("batch 4: trapped"));
        assert!(r.batches.is_empty());
    }
}
