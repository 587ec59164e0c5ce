//! A keyed-state transformation's optional `migrate` export (world `migrating-transformer`):
//! it converts the step's state when a new version changes its layout.
//!
//! The host calls it on a fresh instance after `init`, under the plugin's limits, with chunks
//! of the state (keys and old values), before the first `transform` of the first batch that
//! runs the new version ([`crate::scheduler`]); the instance is dropped afterwards.

use super::bindings::v0_1;
use super::error::{CallResult, Failure, PluginError};
use super::{
    Bound, Plugin, TransformOutput, TransformStage, from_wit_output, guest_failure, to_wit,
};
use crate::batch::RecordBatch;

/// The interface a plugin of world `migrating-transformer` exports beside `transform`.
pub const EXPORT: &str = "sluice:plugin/migrate@0.1.0";

/// The interface a plugin with keyed state imports.
pub const KEYED_STATE: &str = "sluice:plugin/keyed-state@0.1.0";

impl Plugin {
    /// Whether it exports `migrate` (world `migrating-transformer`).
    pub fn has_migrate(&self) -> bool {
        self.info().exports.iter().any(|e| e == EXPORT)
    }

    /// Whether it imports `keyed-state`: its step then keeps keyed state.
    pub fn uses_keyed_state(&self) -> bool {
        self.info().imports.iter().any(|e| e == KEYED_STATE)
    }
}

/// Converts the state in chunks on one instance.
pub struct Migration<'a> {
    stage: &'a TransformStage,
    inst: super::Instance,
    site: super::CallSite,
}

impl TransformStage {
    /// Starts converting the state for batch `batch`: a fresh, initialised instance.
    pub fn start_migration(&self, batch: u64) -> CallResult<Migration<'_>> {
        let site = self.0.site("migrate", None, Some(batch));
        let inst = self.0.instantiate(&site)?;
        Ok(Migration {
            stage: self,
            inst,
            site,
        })
    }
}

impl Migration<'_> {
    /// Calls `migrate(from_version, chunk)`: `chunk` holds the keys and their old values. The
    /// output's values are the new values of the entries its origins point at.
    pub fn chunk(
        &mut self,
        from_version: &str,
        chunk: &RecordBatch,
    ) -> CallResult<TransformOutput> {
        let stage = &self.stage.0;
        let limits = stage.plugin.inner.info.limits;
        let site = self.site.clone();
        let wit_batch = to_wit(chunk);
        let (out, _) = stage.call_on(&mut self.inst, &site, &limits, |bound, store| {
            let Bound::Transformer(_, raw, _) = bound else {
                unreachable!("a transform stage holds a transformer")
            };
            let m = v0_1::migrating::Migrating::new(&mut *store, raw)?;
            m.sluice_plugin_migrate()
                .call_migrate(store, from_version, wit_batch)
        })?;
        let fail = |failure| PluginError {
            site: site.clone(),
            failure,
        };
        let out = out.map_err(|e| {
            fail(match guest_failure(e) {
                Failure::Fatal(m) | Failure::Retryable(m) => Failure::Migrate(m),
                other => other,
            })
        })?;
        from_wit_output(chunk, out).map_err(|m| fail(Failure::Contract(m)))
    }
}
