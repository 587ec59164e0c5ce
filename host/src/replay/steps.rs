//! Which plugin versions a replayed batch runs: the ones its entry records (as a restart
//! recomputes a batch, [`Plan::pinned_steps`]), except the plugins `--plugin NAME=FILE` names,
//! which run FILE. FILE goes through the same checks as a plugin of the directory (manifest,
//! world, limits, grants) and each step's `init` with the pipeline's parameters, before any
//! batch runs.

use std::path::PathBuf;
use std::sync::Arc;

use super::{ReplayError, Result};
use crate::checkpoint::Entry;
use crate::config::Step;
use crate::plan::{Plan, StepPlan};
use crate::plugin::{PluginKind, TransformStage};

/// The `--plugin` versions, made into stages for the steps that use them.
#[derive(Default)]
pub struct Overrides {
    /// Per plugin: its name and the sha256 of FILE.
    plugins: Vec<(String, String)>,
    /// Per step using one: its index and its stage.
    stages: Vec<(usize, Arc<TransformStage>)>,
}

impl Overrides {
    /// Loads each FILE and makes its stages; refuses a name no step runs, a file that cannot
    /// be read or is refused at load, and a parameter its `init` refuses.
    pub fn load(plan: &Plan, given: &[(String, PathBuf)]) -> Result<Overrides> {
        let mut o = Overrides::default();
        let steps = plan.file.steps();
        for (name, file) in given {
            let uses: Vec<(usize, &Step)> = steps
                .iter()
                .enumerate()
                .filter(|(_, s)| matches!(s, Step::Plugin { name: n, .. } if n == name))
                .collect();
            if uses.is_empty() {
                return Err(ReplayError::Refused(format!(
                    "--plugin {name}={}: no step of {} runs a plugin `{name}` (its plugin steps run: {})",
                    file.display(),
                    plan.path.display(),
                    plugin_names(&steps)
                )));
            }
            let plugin = load(plan, name, file)?;
            for (i, step) in uses {
                let Step::Plugin { params, .. } = step else {
                    continue;
                };
                let stage = plugin.transformer(params).map_err(|e| {
                    ReplayError::Plugin(format!(
                        "--plugin {name}={}: `init` of step {} refused the pipeline's parameters: {e}",
                        file.display(),
                        i + 1
                    ))
                })?;
                o.stages.push((i, Arc::new(stage)));
            }
            o.plugins.push((name.clone(), plugin.info().digest.clone()));
        }
        Ok(o)
    }

    /// The overridden plugins' names and sha256, for the summary.
    pub fn digests(&self) -> Vec<(String, String)> {
        self.plugins.clone()
    }

    fn names(&self) -> impl Iterator<Item = &str> {
        self.plugins.iter().map(|(n, _)| n.as_str())
    }
}

/// Loads FILE as plugin `name`: a transformer, whose manifest names it `name`.
fn load(plan: &Plan, name: &str, file: &std::path::Path) -> Result<crate::plugin::Plugin> {
    let refused =
        |why: String| ReplayError::Plugin(format!("--plugin {name}={}: {why}", file.display()));
    if !file.is_file() {
        return Err(refused("no such file".to_owned()));
    }
    let none = Default::default();
    let grants = plan.grants.get(name).unwrap_or(&none);
    let plugin = plan
        .runtime
        .load_as(file, grants, PluginKind::Transformer)
        .map_err(|e| refused(e.to_string()))?;
    let got = &plugin.info().name;
    if got != name {
        return Err(refused(format!(
            "the file is plugin `{got}` (its file name and manifest), not `{name}`: copy it as {name}.wasm with its manifest naming `{name}`"
        )));
    }
    Ok(plugin)
}

fn plugin_names(steps: &[Step]) -> String {
    let names: Vec<&str> = steps
        .iter()
        .filter_map(|s| match s {
            Step::Plugin { name, .. } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

/// The steps batch `entry` is replayed with: its recorded versions (loaded by digest when the
/// directory has another), the overridden plugins' stages in place of theirs.
pub fn for_batch(plan: &Plan, entry: &Entry, overrides: &Overrides) -> Result<Arc<Vec<StepPlan>>> {
    let mut pinned = entry.plugins.clone();
    for name in overrides.names() {
        pinned.remove(name);
    }
    let mut params = entry.params.clone();
    params.retain(|i, _| !overrides.stages.iter().any(|(j, _)| j == i));
    let steps = plan.pinned_steps_with(&pinned, &params).map_err(|e| {
        ReplayError::Plugin(format!(
            "batch {}: {e}; give that plugin with --plugin NAME=FILE to replay it with another version",
            entry.batch
        ))
    })?;
    if overrides.stages.is_empty() {
        return Ok(steps);
    }
    let mut steps: Vec<StepPlan> = steps.as_ref().clone();
    for (i, stage) in &overrides.stages {
        if let Some(StepPlan::Plugin(_, poison)) = steps.get(*i) {
            steps[*i] = StepPlan::Plugin(stage.clone(), *poison);
        }
    }
    Ok(Arc::new(steps))
}
