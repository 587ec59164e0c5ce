//! `[swap]`: hot swap of transformation plugins while the pipeline runs.

use std::time::Duration;

use serde::Deserialize;

/// `[swap]`, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SwapConfig {
    /// `watch`: whether the plugin directory is watched for new versions of the
    /// transformation plugins the pipeline uses. Default `true`.
    #[serde(default = "yes")]
    pub watch: bool,
    /// `poll-interval`: how often the plugin directory is looked at. A file must look the same
    /// (size and modification time) on two looks in a row before it is read. Default `"500ms"`;
    /// at least `"10ms"`.
    #[serde(default = "default_poll", with = "humantime_serde")]
    pub poll_interval: Duration,
    /// `trial-batches`: how many batches a new version runs on trial. A version that traps,
    /// runs out of its limits or returns a fatal error in one of them is rolled back to the
    /// version it replaced and quarantined, and the failed batch is recomputed with the
    /// restored version. During its trial a step stops at the first poison failure instead of
    /// isolating it (a new version failing is the likelier cause than a record). Default 3;
    /// 0 turns trials off.
    #[serde(default = "default_trial")]
    pub trial_batches: u32,
}

impl Default for SwapConfig {
    fn default() -> Self {
        SwapConfig {
            watch: true,
            poll_interval: default_poll(),
            trial_batches: default_trial(),
        }
    }
}

fn yes() -> bool {
    true
}

fn default_poll() -> Duration {
    Duration::from_millis(500)
}

fn default_trial() -> u32 {
    3
}
