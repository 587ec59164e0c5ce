//! `sluice dead-letters replay`: the chosen letters sent through the pipeline's current steps
//! (plugins as the file and plugin directory have them now) into its sinks.
//!
//! A letter enters at the step that rejected it (its `step`; for older letters the step
//! running its plugin; a letter of the source at the first step): the steps before it had
//! already run on the value it holds, and run as a pass-through. Its records keep their
//! partition and offset, so a letter that fails again is dead-lettered again with them.
//!
//! A replay has a number: `replay-<n>` (from `_replays/`, create-if-absent). Its output goes
//! to the stream `<stream>/replay-<n>` of every sink, so a files sink writes it under
//! `<path>/<stream>/replay-<n>/` with its own commit records and never touches a batch of the
//! running pipeline; its letters that fail again go under the dead letters'
//! `<stream>/replay-<n>/`. Each letter is claimed by a marker created if absent before it is
//! sent; a replay batch that fails gives its claims back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;

use super::read::{Claim, Letter, Store};
use super::{DeadLetterError, Filter, Result};
use crate::batch::RecordBatch;
use crate::block::{Block, BlockManager};
use crate::plan::{NativeStep, Plan, StepPlan};
use crate::scheduler::job::{self, Closed, Combine, JobError, OpenBatch, Shape};

/// What `replay` was asked.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Which letters.
    pub filter: Filter,
    /// Say what would be replayed; replay nothing.
    pub dry_run: bool,
    /// Replay letters replayed before too.
    pub again: bool,
    /// The plugin directory (`--plugins`).
    pub plugins: Option<PathBuf>,
    /// The compiled-component cache (`--cache-dir`).
    pub cache_dir: Option<PathBuf>,
}

/// The steps before a letter's entry run as this: its value passes as it is.
const PASS: NativeStep = NativeStep {
    name: "passed on replay",
    f: RecordBatch::clone,
};

/// Runs a replay of the pipeline file at `pipeline`; returns the report to print.
pub fn run(pipeline: &Path, opts: &Options) -> crate::error::Result<String> {
    let rt = super::io_runtime()?;
    let mut plan = crate::plan::build_with(
        pipeline,
        opts.plugins.as_deref(),
        opts.cache_dir.as_deref(),
        rt.handle(),
    )
    .map_err(DeadLetterError::from)?;
    let store = Store::new(plan.dead_letters.location().clone(), &plan.stream);
    let (files, marks) = rt.block_on(async {
        Ok::<_, DeadLetterError>((store.files().await?, store.replayed().await?))
    })?;
    let chosen = opts.filter.select(&files);
    let sorted = sort(&plan, chosen, &marks, opts.again);
    if sorted.todo.is_empty() {
        return Err(DeadLetterError::Refused(refusal(&store, &sorted)).into());
    }
    if opts.dry_run {
        return Ok(dry_run_text(&plan, &store, &sorted));
    }
    let record = json!({
        "pipeline": pipeline.display().to_string(),
        "started_ms": crate::clock::now_ms(),
        "again": opts.again,
        "plugins": plan.digests,
        "letters": sorted.todo.iter().map(|(l, _)| json!({"file": l.file, "line": l.line, "id": l.id})).collect::<Vec<_>>(),
    });
    let name = rt.block_on(store.begin(&record))?;
    plan.stream = format!("{}/{name}", store.stream());
    tracing::info!(replay = %name, letters = sorted.todo.len(), stream = %plan.stream, "A replay of dead letters starts.");
    let done = replay_groups(&plan, &rt, &store, &name, &sorted, opts.again);
    for sink in &plan.sinks {
        sink.stop(&plan.stream);
    }
    let done = done?;
    Ok(report(&plan, &store, &name, &sorted, &done))
}

/// The chosen letters, sorted into those to replay (with the step each enters at) and those
/// left out (with why).
#[derive(Debug, Default)]
struct Sorted<'a> {
    todo: Vec<(&'a Letter, usize)>,
    replayed_before: Vec<(&'a Letter, String)>,
    unfit: Vec<(&'a Letter, String)>,
}

fn sort<'a>(
    plan: &Plan,
    chosen: Vec<&'a Letter>,
    marks: &BTreeMap<String, String>,
    again: bool,
) -> Sorted<'a> {
    let mut s = Sorted::default();
    for l in chosen {
        match (marks.get(&l.id), entry(plan, l)) {
            (Some(by), _) if !again => s.replayed_before.push((l, by.clone())),
            (_, Ok(step)) => s.todo.push((l, step)),
            (_, Err(why)) => s.unfit.push((l, why)),
        }
    }
    s
}

/// The names of the plan's steps (a plugin's name; a host operator's).
fn step_names(plan: &Plan) -> Vec<String> {
    plan.steps
        .iter()
        .map(|s| match s {
            StepPlan::Plugin(stage, _) => stage.plugin().name().to_owned(),
            StepPlan::RepartitionByKey(_) => "repartition-by-key".into(),
            StepPlan::CountByKey { .. } => "count-by-key".into(),
            StepPlan::Window(w) => w.kind.name().into(),
            StepPlan::UpdateState(_) => "update-state-by-key".into(),
            StepPlan::EventWindow(_) => "event-window".into(),
            StepPlan::Lookup(_) => "lookup".into(),
            StepPlan::Native(n) => n.name.into(),
        })
        .collect()
}

/// The step `letter` enters at, or why it cannot be replayed with this pipeline.
pub(super) fn entry(plan: &Plan, letter: &Letter) -> std::result::Result<usize, String> {
    if letter.value.is_none() {
        return Err("the letter holds no value".into());
    }
    let names = step_names(plan);
    let step = match (letter.step, &letter.plugin) {
        // A record a sink's format could not carry passed every step: it goes to the sinks.
        _ if letter.is_unwritable() => names.len(),
        (Some(i), _) if i < names.len() => i,
        (Some(i), _) => {
            return Err(format!(
                "it was rejected by step {i}, and the pipeline has {} steps now",
                names.len()
            ));
        }
        (None, Some(p)) => names.iter().position(|n| n == p).ok_or_else(|| {
            format!(
                "the letter does not say which step rejected it, and no step runs plugin `{p}` now"
            )
        })?,
        (None, None) => 0,
    };
    let steps = steps_from(plan, step);
    let gathers = Shape::of(&steps, plan.partitions).combine != Combine::Stream;
    if gathers && letter.partition >= plan.partitions {
        return Err(format!(
            "its partition {} is not one of the pipeline's {} partitions",
            letter.partition, plan.partitions
        ));
    }
    Ok(step)
}

/// The plan's steps with those before `entry` passing records as they are.
fn steps_from(plan: &Plan, entry: usize) -> Vec<StepPlan> {
    plan.steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            if i < entry {
                StepPlan::Native(PASS)
            } else {
                s.clone()
            }
        })
        .collect()
}

/// One replay batch done: what it held and did.
#[derive(Debug)]
struct Done {
    id: u64,
    batch: u64,
    entry: usize,
    letters: usize,
    taken: usize,
    closed: Closed,
}

/// Runs the letters as replay batches 0, 1, …: one per original batch and entry step, each
/// claimed, run, and committed before the next.
fn replay_groups(
    plan: &Plan,
    rt: &tokio::runtime::Runtime,
    store: &Store,
    name: &str,
    sorted: &Sorted<'_>,
    again: bool,
) -> Result<Vec<Done>> {
    let mut groups: BTreeMap<(u64, usize), Vec<&Letter>> = BTreeMap::new();
    for (l, step) in &sorted.todo {
        groups.entry((l.batch, *step)).or_default().push(l);
    }
    let mut done = Vec::new();
    for (id, ((batch, entry), letters)) in groups.into_iter().enumerate() {
        let id = id as u64;
        let mut claimed = Vec::new();
        for l in letters.iter().copied() {
            match rt.block_on(store.claim(l, name, again))? {
                Claim::Claimed => claimed.push(l),
                Claim::Taken(by) => {
                    tracing::warn!(file = %l.file, line = l.line, by = %by, "Another replay took this letter first; it is left to that one.");
                }
            }
        }
        let taken = letters.len() - claimed.len();
        if claimed.is_empty() {
            continue;
        }
        match run_batch(plan, id, entry, &claimed) {
            Ok(closed) => done.push(Done {
                id,
                batch,
                entry,
                letters: claimed.len(),
                taken,
                closed,
            }),
            Err(source) => {
                for l in &claimed {
                    rt.block_on(store.release(l));
                }
                let ok: Vec<String> = done.iter().map(|d| d.id.to_string()).collect();
                let replay = format!(
                    "{name} (replay batches committed before: {}; the failed one's letters are not marked replayed)",
                    if ok.is_empty() {
                        "none".into()
                    } else {
                        ok.join(", ")
                    }
                );
                return Err(DeadLetterError::Job { replay, source });
            }
        }
    }
    Ok(done)
}

/// Runs `letters` as replay batch `id` from step `entry`, and commits it in every sink.
fn run_batch(
    plan: &Plan,
    id: u64,
    entry: usize,
    letters: &[&Letter],
) -> std::result::Result<Closed, JobError> {
    let steps = steps_from(plan, entry);
    let shape = Shape::of(&steps, plan.partitions);
    let (manager, _cuts) = BlockManager::new(plan.partitions.max(1), u64::MAX, 8 << 20);
    let blocks = blocks_of(letters, &manager);
    let batch = OpenBatch::new(plan, &shape, id, crate::clock::now_ms(), Arc::new(steps));
    let abort = |e: JobError| {
        for sink in &plan.sinks {
            sink.abort(id);
        }
        e
    };
    job::run_blocks(plan, &shape, &batch, blocks, &manager).map_err(abort)?;
    let (closed, _) = job::finish(plan, &shape, batch).map_err(abort)?;
    job::commit(plan, id)?;
    Ok(closed)
}

/// The letters as blocks: by partition and offset, a run of consecutive offsets in one block
/// (so each record's lineage is its own partition and offset).
pub(super) fn blocks_of(letters: &[&Letter], manager: &BlockManager) -> Vec<Block> {
    let mut sorted: Vec<&Letter> = letters.to_vec();
    sorted.sort_by_key(|l| (l.partition, l.offset));
    let mut blocks = Vec::new();
    let mut run: Option<(u32, u64, RecordBatch)> = None;
    for l in sorted {
        let follows = run
            .as_ref()
            .is_some_and(|(p, first, r)| *p == l.partition && first + r.len() as u64 == l.offset);
        if !follows && let Some((p, first, records)) = run.take() {
            blocks.push(manager.replayed(p, first, records));
        }
        let (_, _, records) =
            run.get_or_insert_with(|| (l.partition, l.offset, RecordBatch::default()));
        records.push(
            l.key.as_deref().map(str::as_bytes),
            l.value.as_deref().unwrap_or_default(),
            l.timestamp,
        );
    }
    if let Some((p, first, records)) = run {
        blocks.push(manager.replayed(p, first, records));
    }
    blocks
}

fn refusal(store: &Store, s: &Sorted<'_>) -> String {
    if s.replayed_before.is_empty() && s.unfit.is_empty() {
        return format!(
            "no dead letters to replay: none of {} matches (see `sluice dead-letters list`)",
            store.display()
        );
    }
    let mut out = String::from("nothing replayed:");
    if !s.replayed_before.is_empty() {
        let by: std::collections::BTreeSet<&str> =
            s.replayed_before.iter().map(|(_, b)| b.as_str()).collect();
        out.push_str(&format!(
            " the {} chosen dead letters were replayed before (by {}); pass --again to replay them again",
            s.replayed_before.len(),
            by.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    for (l, why) in s.unfit.iter().take(5) {
        out.push_str(&format!(
            "; {} line {} cannot be replayed: {why}",
            l.file, l.line
        ));
    }
    if s.unfit.len() > 5 {
        out.push_str(&format!("; and {} more that cannot", s.unfit.len() - 5));
    }
    out
}

fn left_out_text(s: &Sorted<'_>) -> String {
    let mut out = String::new();
    if !s.replayed_before.is_empty() {
        out.push_str(&format!(
            "skipped: {} letters replayed before (--again replays them too)\n",
            s.replayed_before.len()
        ));
    }
    for (l, why) in &s.unfit {
        out.push_str(&format!("skipped: {} line {}: {why}\n", l.file, l.line));
    }
    out
}

fn dry_run_text(plan: &Plan, store: &Store, s: &Sorted<'_>) -> String {
    let names = step_names(plan);
    let mut out = format!(
        "dry run: {} dead letters of {} would be replayed through the pipeline's current steps:\n",
        s.todo.len(),
        store.display()
    );
    for (l, step) in &s.todo {
        out.push_str(&format!(
            "  {} line {}: batch {}, partition {}, offset {}, rejected by {} → enters at step {step} ({})\n",
            l.file, l.line, l.batch, l.partition, l.offset, l.step_name(), names[*step]
        ));
    }
    out.push_str(&left_out_text(s));
    out
}

fn report(plan: &Plan, store: &Store, name: &str, s: &Sorted<'_>, done: &[Done]) -> String {
    let names = step_names(plan);
    let letters: usize = done.iter().map(|d| d.letters).sum();
    let out_n: u64 = done.iter().map(|d| d.closed.records_out).sum();
    let again: u64 = done.iter().map(|d| d.closed.dead_letters).sum();
    let mut out = format!(
        "{name}: {letters} dead letters of {} replayed in {} batches: {out_n} records output, {again} dead-lettered again\n",
        store.display(),
        done.len()
    );
    for d in done {
        out.push_str(&format!(
            "  replay batch {}: {} letters of batch {} from step {} ({}): {} output, {} dead-lettered again{}\n",
            d.id,
            d.letters,
            d.batch,
            d.entry,
            names[d.entry],
            d.closed.records_out,
            d.closed.dead_letters,
            if d.taken > 0 { format!(", {} taken by another replay", d.taken) } else { String::new() }
        ));
    }
    out.push_str(&left_out_text(s));
    for sink in &plan.sinks {
        out.push_str(&format!(
            "output: sink {} (stream `{}`; a files sink writes under <path>/{}/)\n",
            sink.name(),
            plan.stream,
            plan.stream
        ));
    }
    out.push_str(&format!(
        "failed again: {}/{name}/ (see `sluice dead-letters list`)\n",
        store.display()
    ));
    out
}
