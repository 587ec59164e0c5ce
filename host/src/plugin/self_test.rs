//! A transformation's optional `self-test` export (world `tested-transformer`): its own check,
//! run before a version goes live, at start and in a hot swap.
//!
//! It runs on a fresh instance after `init`, with the same parameters and under the plugin's
//! limits, and the instance is dropped afterwards: whatever the test did to its state never
//! reaches a batch.

use wasmtime::Store;
use wasmtime::component::{Instance as Raw, TypedFunc};

use super::error::{CallResult, Failure, PluginError};
use super::state::HostState;
use super::{Bound, Plugin, Stage};

/// The interface a plugin of world `tested-transformer` exports beside `transform`.
pub const EXPORT: &str = "sluice:plugin/self-test@0.1.0";

type Run = TypedFunc<(Vec<(String, String)>,), (Result<(), String>,)>;

impl Plugin {
    /// Whether it exports `self-test` (world `tested-transformer`).
    pub fn has_self_test(&self) -> bool {
        self.info().exports.iter().any(|e| e == EXPORT)
    }
}

impl Stage {
    /// Runs the plugin's `self-test` export, when it has one: `Ok` when it passes or there is
    /// none; its message (or its trap) when it fails.
    pub(crate) fn self_test(&self) -> CallResult<()> {
        if !self.plugin.has_self_test() {
            return Ok(());
        }
        let site = self.site("self-test", None, None);
        let mut inst = self.instantiate(&site)?;
        let Bound::Transformer(_, raw, _) = &inst.bound else {
            return Ok(());
        };
        let raw = *raw;
        let run = lookup(&raw, &mut inst.store).map_err(|m| PluginError {
            site: site.clone(),
            failure: Failure::Contract(m),
        })?;
        let params = self.params.clone();
        let limits = self.plugin.inner.info.limits;
        let (result, elapsed) = self.call_on(&mut inst, &site, &limits, |_, store| {
            run.call(store, (params,)).map(|(result,)| result)
        })?;
        match result {
            Ok(()) => {
                tracing::debug!(plugin = %self.plugin.name(), digest = %self.plugin.info().digest, ?elapsed, "The plugin's self-test passed.");
                Ok(())
            }
            Err(message) => Err(PluginError {
                site,
                failure: Failure::SelfTest(message),
            }),
        }
    }
}

/// `run` of the `self-test` interface, typed.
fn lookup(raw: &Raw, store: &mut Store<HostState>) -> Result<Run, String> {
    let iface = raw
        .get_export_index(&mut *store, None, EXPORT)
        .ok_or_else(|| format!("it lists {EXPORT} among its exports but the instance has none"))?;
    let run = raw
        .get_export_index(&mut *store, Some(&iface), "run")
        .ok_or_else(|| format!("its {EXPORT} has no function `run`"))?;
    raw.get_typed_func(&mut *store, run).map_err(|e| {
        format!("`run` of its {EXPORT} is not `func(params) -> result<_, string>`: {e:#}")
    })
}
