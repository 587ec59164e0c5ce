//! The user's pipeline file: its schema (versioned, unknown keys rejected) and its loading,
//! with every error naming the file, the key and the line.
//!
//! `[source]` and `[[sink]]` are read here as flat tables ([`RawSource`], [`RawSink`]) so that
//! a wrong key gets its line number; each becomes the checked config of its kind, which lives
//! with the kind ([`crate::receiver`], [`crate::sink`]) and builds it. This module builds
//! nothing: the plan is assembled in the `plan` module.

pub mod admin;
pub mod event_window;
pub mod poison;
pub mod sink;
pub mod source;
pub mod step;
pub mod swap;
pub mod window;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use sink::RawSink;
pub use source::RawSource;
pub use step::{Step, StepConfig};

use crate::error::Fault;
use crate::plugin::limits::{Grants, RuntimeConfig};
use crate::plugin::manifest::{de_bytes, toml_message};
use crate::receiver::SourceConfig;
use crate::receiver::amqp::config::{OwnerLevelSetting, RawEventHubs, SeedParams, resolve_amqp};
use crate::receiver::files::FilesConfig;
use crate::receiver::generator::GeneratorConfig;
use crate::receiver::nexmark::NexmarkConfig;
use crate::receiver::oversize::{DEFAULT_MAX_RECORD_BYTES, check_max_record_bytes};
use crate::receiver::plugin::PluginSourceConfig;
use crate::receiver::tcp::TcpConfig;
use crate::secret::Secret;
use crate::sink::count::CountConfig;
use crate::sink::files::FilesSinkConfig;
use crate::sink::plugin::PluginSinkConfig;
use crate::sink::stdout::StdoutConfig;
use crate::sink::{Field, Fields, Format, OutputFormat, SinkConfig};

/// The pipeline file format this host reads.
pub const PIPELINE_VERSION: u32 = 1;

/// A pipeline file that cannot be used. The message names the file, the key and what was
/// expected.
#[derive(Debug, thiserror::Error)]
#[error("pipeline {}: {message}", path.display())]
pub struct ConfigError {
    /// The pipeline file.
    pub path: PathBuf,
    /// What is wrong.
    pub message: String,
    /// Whose fault it is: [`Fault::User`] for the file itself, [`Fault::External`] for a store
    /// or broker it names that did not answer.
    pub fault: Fault,
}

/// `pipeline.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PipelineFile {
    /// `version`: the file format, `1`. Required.
    pub version: u32,
    /// `name`: the pipeline's name, used in logs. Default: the file's directory name.
    #[serde(default)]
    pub name: Option<String>,
    /// `plugins`: the plugin directory, or a search path `["./mine", "$SLUICE_PLUGINS"]`
    /// (first match wins; see [`crate::plugin::search`]). Default: `--plugins`, else
    /// `$SLUICE_PLUGINS`.
    #[serde(default)]
    pub plugins: Option<crate::plugin::search::PluginsSetting>,
    /// `batch-interval`: how often a batch closes. Default `"1s"`; at least `"50ms"`.
    #[serde(default = "default_batch_interval", with = "humantime_serde")]
    pub batch_interval: Duration,
    /// `block-interval`: how often received records become a block. Default `"200ms"`.
    #[serde(default = "default_block_interval", with = "humantime_serde")]
    pub block_interval: Duration,
    /// `workers`: tasks running at once. Default: the number of cores.
    #[serde(default)]
    pub workers: Option<usize>,
    /// `memory-budget`: bytes of received records held before receivers are slowed.
    /// Default `"64MiB"`.
    #[serde(default = "default_budget", deserialize_with = "de_bytes")]
    pub memory_budget: u64,
    /// `queue-target`: about how much processing time of received records each partition
    /// may have queued, from its measured rate, before its receiver is held (within the memory
    /// budget; `"0s"`: the budget alone). Default `"50ms"`.
    #[serde(default = "default_queue_target", with = "humantime_serde")]
    pub queue_target: Duration,
    /// `[source]`: where records come from. Required.
    #[serde(rename = "source")]
    pub raw_source: RawSource,
    /// The source, checked (from `[source]`).
    #[serde(skip, default = "placeholder_source")]
    pub source: SourceConfig,
    /// `[[transform]]`: the steps, in order. Default: none.
    #[serde(default)]
    pub transform: Vec<StepConfig>,
    /// `[[sink]]`: where results go. At least one.
    #[serde(default, rename = "sink")]
    pub raw_sinks: Vec<RawSink>,
    /// The sinks, checked (from `[[sink]]`).
    #[serde(skip)]
    pub sink: Vec<SinkConfig>,
    /// `[dead-letter]`: where rejected records go. Default: `./dead-letters` beside the file.
    #[serde(default)]
    pub dead_letter: Option<DeadLetterConfig>,
    /// `[checkpoint]`: where the checkpoint log (and reliable mode's write-ahead log) go.
    /// Default: `./checkpoints` beside the file.
    #[serde(default)]
    pub checkpoint: Option<CheckpointConfig>,
    /// `[runtime]`: plugin runtime settings. Default: see [`RuntimeConfig`].
    #[serde(default)]
    pub runtime: RuntimeConfig,
    /// `[swap]`: hot swap of transformation plugins. Default: see [`swap::SwapConfig`].
    #[serde(default)]
    pub swap: swap::SwapConfig,
    /// `[admin]`: the admin endpoint (`sluice plugin swap`). Default: see
    /// [`admin::AdminConfig`].
    #[serde(default)]
    pub admin: admin::AdminConfig,
    /// `[ha]`: several hosts share the partitions through ownership leases (see
    /// [`crate::ha`]). Default: absent, one host owns every partition.
    #[serde(default)]
    pub ha: Option<crate::ha::HaConfig>,
    /// `[grants.NAME]`: what the operator grants each plugin, e.g.
    /// `[grants.jsonl-sink] dirs = { "/out" = "./out" }`. Default: nothing.
    #[serde(default)]
    pub grants: BTreeMap<String, Grants>,
}

fn placeholder_source() -> SourceConfig {
    SourceConfig::Generator(GeneratorConfig::default())
}

fn default_batch_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_block_interval() -> Duration {
    Duration::from_millis(200)
}
fn default_budget() -> u64 {
    64 << 20
}

fn default_queue_target() -> Duration {
    Duration::from_millis(50)
}

/// `[checkpoint]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CheckpointConfig {
    /// `path`: the directory or store prefix (path, `file://`, `az://`, `s3://`). Default
    /// `checkpoints` beside the pipeline file.
    #[serde(default = "default_checkpoint_path")]
    pub path: String,
    /// `enabled`: keep the checkpoint log (default true). Without it a run starts over every
    /// time and nothing is exactly once; for benchmarks and throwaway runs.
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn default_checkpoint_path() -> String {
    "checkpoints".to_owned()
}

fn yes() -> bool {
    true
}

/// `[dead-letter]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DeadLetterConfig {
    /// `path`: the directory or store prefix for rejected records. Required.
    pub path: String,
}

impl PipelineFile {
    /// Reads and checks a pipeline file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_owned(),
            message: format!("cannot be read: {e}"),
            fault: Fault::User,
        })?;
        Self::parse(&text, path)
    }

    /// Parses pipeline text; `path` is for messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let bad = |message: String| ConfigError {
            path: path.to_owned(),
            message,
            fault: Fault::User,
        };
        // Check the version first, so a future file gets "version" rather than a key error.
        if let Ok(table) = text.parse::<toml::Table>() {
            match table.get("version") {
                None => {
                    return Err(bad(
                        "key `version`: missing; this host reads `version = 1`".to_owned()
                    ));
                }
                Some(toml::Value::Integer(v)) if *v != PIPELINE_VERSION as i64 => {
                    return Err(bad(format!(
                        "key `version`: this host reads pipeline version {PIPELINE_VERSION}, the file says {v}"
                    )));
                }
                _ => {}
            }
        }
        let mut file: PipelineFile =
            toml::from_str(text).map_err(|e| bad(toml_message(&e, text)))?;
        let with_line = |message: String| {
            // Point at the key's line when the message names one.
            let key = message
                .strip_prefix("key `")
                .and_then(|r| r.split('`').next())
                .and_then(|k| k.rsplit('.').next())
                .unwrap_or_default()
                .to_owned();
            match line_of_key(text, &key) {
                Some(line) if !key.is_empty() => bad(format!("line {line}: {message}")),
                _ => bad(message),
            }
        };
        file.source = file.raw_source.resolve().map_err(with_line)?;
        file.sink = file
            .raw_sinks
            .iter()
            .map(RawSink::resolve)
            .collect::<Result<_, _>>()
            .map_err(with_line)?;
        file.check().map_err(bad)?;
        Ok(file)
    }

    fn check(&self) -> Result<(), String> {
        if self.batch_interval < Duration::from_millis(50) {
            return Err(format!(
                "key `batch-interval`: {} is below the minimum of 50ms",
                humantime::format_duration(self.batch_interval)
            ));
        }
        if self.block_interval.is_zero() || self.block_interval > self.batch_interval {
            return Err(format!(
                "key `block-interval`: {} must be above zero and at most the batch interval ({})",
                humantime::format_duration(self.block_interval),
                humantime::format_duration(self.batch_interval)
            ));
        }
        if self.source.partitions() == 0 || self.source.partitions() > 4096 {
            return Err("key `source.partitions`: must be between 1 and 4096".to_owned());
        }
        if self.workers == Some(0) {
            return Err("key `workers`: must be at least 1".to_owned());
        }
        if self.sink.is_empty() {
            return Err("no `[[sink]]`: a pipeline needs at least one sink".to_owned());
        }
        if self.swap.poll_interval < Duration::from_millis(10) {
            return Err(format!(
                "key `swap.poll-interval`: {} is below the minimum of 10ms",
                humantime::format_duration(self.swap.poll_interval)
            ));
        }
        if let Some(ha) = &self.ha {
            ha.check()?;
        }
        if self.memory_budget < 1 << 20 {
            return Err("key `memory-budget`: must be at least 1MiB".to_owned());
        }
        if self.queue_target > self.batch_interval {
            return Err(format!(
                "key `queue-target`: {} is longer than `batch-interval` ({}); a batch would close with more queued than it could process in its interval (use \"0s\" to turn pacing off)",
                humantime::format_duration(self.queue_target),
                humantime::format_duration(self.batch_interval)
            ));
        }
        for (i, step) in self.transform.iter().enumerate() {
            step.step(i + 1, self.batch_interval)?;
        }
        Ok(())
    }

    /// The checked steps.
    pub fn steps(&self) -> Vec<Step> {
        self.transform
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.step(i + 1, self.batch_interval).ok())
            .collect()
    }
}

/// The line (from 1) where `key = …` is first set, if anywhere.
fn line_of_key(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            l.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
version = 1
[source]
kind = "generator"
[[sink]]
kind = "stdout"
"#;

    #[test]
    fn a_minimal_file_gets_the_documented_defaults() {
        let f = PipelineFile::parse(MINIMAL, Path::new("p.toml")).unwrap();
        assert_eq!(f.batch_interval, Duration::from_secs(1));
        assert_eq!(f.block_interval, Duration::from_millis(200));
        assert_eq!(f.source.partitions(), 1);
        assert_eq!(f.memory_budget, 64 << 20);
        assert_eq!(f.queue_target, Duration::from_millis(50));
        assert!(matches!(f.source, SourceConfig::Generator(ref g) if g.seed == 42));
    }

    #[test]
    fn a_queue_target_past_the_batch_interval_is_refused_naming_both_keys() {
        let text = format!("queue-target = \"2s\"\n{MINIMAL}");
        let msg = PipelineFile::parse(&text, Path::new("p.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("queue-target") && msg.contains("batch-interval"),
            "{msg}"
        );
        let off = format!("queue-target = \"0s\"\n{MINIMAL}");
        let f = PipelineFile::parse(&off, Path::new("p.toml")).unwrap();
        assert_eq!(f.queue_target, Duration::ZERO);
    }

    #[test]
    fn an_unknown_key_is_refused_with_file_key_and_line() {
        let text = MINIMAL.replace("kind = \"stdout\"", "kind = \"stdout\"\ncolour = \"red\"");
        let msg = PipelineFile::parse(&text, Path::new("p.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("p.toml") && msg.contains("colour") && msg.contains("line 7"),
            "{msg}"
        );
    }

    #[test]
    fn a_wrong_type_is_refused_naming_the_key() {
        let text = MINIMAL.replace(
            "kind = \"generator\"",
            "kind = \"generator\"\nrate = \"fast\"",
        );
        let msg = PipelineFile::parse(&text, Path::new("p.toml"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("line 5"), "{msg}");
    }

    #[test]
    fn a_key_of_another_kind_is_refused_naming_it_and_the_kinds_keys() {
        let text = MINIMAL.replace(
            "kind = \"generator\"",
            "kind = \"tcp\"\naddress = \"127.0.0.1:1\"\nrate = 5",
        );
        let msg = PipelineFile::parse(&text, Path::new("p.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("source.rate") && msg.contains("line 6") && msg.contains("address"),
            "{msg}"
        );
    }

    #[test]
    fn max_record_bytes_takes_a_size_and_refuses_zero_or_more_than_a_gibibyte() {
        let with = |v: &str| {
            let text = MINIMAL.replace(
                "kind = \"generator\"",
                &format!("kind = \"tcp\"\naddress = \"127.0.0.1:1\"\nmax-record-bytes = {v}"),
            );
            PipelineFile::parse(&text, Path::new("p.toml"))
        };
        match with("\"64MiB\"").unwrap().source {
            SourceConfig::Tcp(t) => assert_eq!(t.max_record_bytes, 64 << 20),
            other => panic!("{other:?}"),
        }
        for bad in ["0", "\"2GiB\""] {
            let msg = with(bad).unwrap_err().to_string();
            assert!(
                msg.contains("source.max-record-bytes") && msg.contains("1GiB"),
                "{msg}"
            );
        }
        let tcp = MINIMAL.replace(
            "kind = \"generator\"",
            "kind = \"tcp\"\naddress = \"127.0.0.1:1\"",
        );
        match PipelineFile::parse(&tcp, Path::new("p.toml"))
            .unwrap()
            .source
        {
            SourceConfig::Tcp(t) => assert_eq!(t.max_record_bytes, 16 << 20, "the default"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_nexmark_source_takes_its_keys_and_refuses_another_kinds_naming_it() {
        let with = |keys: &str| {
            let text = MINIMAL.replace(
                "kind = \"generator\"",
                &format!("kind = \"nexmark\"\n{keys}"),
            );
            PipelineFile::parse(&text, Path::new("p.toml")).map_err(|e| e.to_string())
        };
        match with("partitions = 3\nrate = 500\nevents = 1000\nseed = 7")
            .unwrap()
            .source
        {
            SourceConfig::Nexmark(n) => {
                assert_eq!(
                    (n.partitions, n.rate, n.events, n.seed),
                    (3, 500, Some(1000), 7)
                )
            }
            other => panic!("{other:?}"),
        }
        match with("").unwrap().source {
            SourceConfig::Nexmark(n) => assert_eq!((n.partitions, n.rate, n.events), (1, 0, None)),
            other => panic!("{other:?}"),
        }
        let msg = with("limit = 5").unwrap_err();
        assert!(
            msg.contains("source.limit") && msg.contains("events"),
            "{msg}"
        );
        let msg = with("partitions = 0").unwrap_err();
        assert!(msg.contains("source.partitions"), "{msg}");
    }

    #[test]
    fn steps_are_checked_with_their_number() {
        let text = format!("{MINIMAL}\n[[transform]]\nbuiltin = \"sort\"\n");
        let msg = PipelineFile::parse(&text, Path::new("p.toml"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("number 1") && msg.contains("sort"), "{msg}");
    }

    #[test]
    fn a_future_version_is_refused_as_such() {
        let text = MINIMAL.replace("version = 1", "version = 2");
        let msg = PipelineFile::parse(&text, Path::new("p.toml"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("version") && msg.contains('2'), "{msg}");
    }

    #[test]
    fn jsonl_fields_are_read_and_refused_with_another_format_or_when_empty() {
        let with = |extra: &str| {
            let text = MINIMAL.replace("kind = \"stdout\"", &format!("kind = \"stdout\"\n{extra}"));
            PipelineFile::parse(&text, Path::new("p.toml")).map_err(|e| e.to_string())
        };
        let f = with("format = \"jsonl\"\nfields = [\"value\", \"headers\"]").unwrap();
        let SinkConfig::Stdout(s) = &f.sink[0] else {
            panic!("a stdout sink")
        };
        assert_eq!(s.format.fields, Fields::of(&[Field::Value, Field::Headers]));
        let msg = with("fields = [\"key\"]").unwrap_err();
        assert!(
            msg.contains("sink.fields") && msg.contains("\"lines\""),
            "{msg}"
        );
        let msg = with("format = \"jsonl\"\nfields = []").unwrap_err();
        assert!(
            msg.contains("sink.fields") && msg.contains("empty"),
            "{msg}"
        );
        let msg = with("format = \"jsonl\"\nfields = [\"offset\"]").unwrap_err();
        assert!(msg.contains("offset") && msg.contains("line 8"), "{msg}");
    }

    #[test]
    fn a_batch_interval_below_50ms_is_refused() {
        let text = format!("batch-interval = \"10ms\"\nblock-interval = \"5ms\"\n{MINIMAL}");
        let msg = PipelineFile::parse(&text, Path::new("p.toml"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("batch-interval"), "{msg}");
    }
}
