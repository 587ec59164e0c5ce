//! `kind = "plugin"`: a sink plugin, called with the batch id to write and to commit.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{BuildContext, BuildError, Sink, SinkError};
use crate::batch::RecordBatch;
use crate::plugin::{CallContext, PluginKind, SinkStage};

/// `kind = "plugin"` in `[[sink]]`, checked.
#[derive(Debug, Clone)]
pub struct PluginSinkConfig {
    /// The plugin's name in the plugin directory.
    pub plugin: String,
    /// Its parameters.
    pub params: BTreeMap<String, String>,
}

impl PluginSinkConfig {
    /// Loads the sink plugin and makes its stage (the plugin checks its parameters).
    pub fn build(&self, ctx: &mut BuildContext<'_>) -> Result<Arc<dyn Sink>, BuildError> {
        let what = ctx.what;
        let plugin = (ctx.load)(what, &self.plugin, PluginKind::Sink)?;
        let stage = plugin
            .sink(&self.params)
            .map_err(|e| format!("{what}: {e}"))?;
        Ok(Arc::new(PluginSink(Arc::new(stage))))
    }
}

/// A sink plugin.
pub struct PluginSink(pub Arc<SinkStage>);

impl Sink for PluginSink {
    fn name(&self) -> String {
        format!("plugin {}", self.0.plugin().name())
    }

    fn plugin(&self) -> Option<&crate::plugin::Plugin> {
        Some(self.0.plugin())
    }

    fn write(&self, ctx: &CallContext, batch: &RecordBatch) -> Result<(), SinkError> {
        Ok(self.0.write(ctx, batch)?)
    }

    fn commit(&self, stream: &str, batch_id: u64) -> Result<(), SinkError> {
        Ok(self.0.commit(stream, batch_id)?)
    }
}
