//! `[[transform]]`: the steps of a pipeline, as written and once checked.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::poison;
use super::window::{
    self, Aggregate, RunningSpec, StateMemory, StateOutput, WindowKind, WindowSpec,
};

/// `[[transform]]`: one step, either `plugin = "NAME"` (with `params`) or `builtin = "…"`:
/// `"repartition-by-key"` (records with the same key meet in one partition; `partitions`
/// after, default as many as before), `"count-by-key"` (one record per key and partition:
/// the key, and the count in decimal; after a repartition, the batch's global counts), or a
/// window step (`length`, `slide`, `aggregate`, `inverse`; see [`super::window`]), or
/// `"update-state-by-key"`, or `"lookup"` (a lookup join on a table file: `table`, `format`,
/// `table-key`, `join`, `reload-interval`, `key-field`, `into`; see [`crate::lookup`]). A plugin
/// step also takes `on-poison` and `max-poison-per-batch` (see [`poison::PoisonPolicy`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StepConfig {
    /// `plugin`: a transformation plugin's name.
    #[serde(default)]
    pub plugin: Option<String>,
    /// `params`: the plugin's parameters.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// `builtin`: a step inside the host.
    #[serde(default)]
    pub builtin: Option<String>,
    /// `partitions`: for `repartition-by-key`.
    #[serde(default)]
    pub partitions: Option<u32>,
    /// `on-poison`: `"dead-letter"` or `"stop"`, for a record on which the plugin traps, runs
    /// past its time budget or hits its memory cap alone. Default `"dead-letter"`. Plugins only.
    #[serde(default)]
    pub on_poison: Option<poison::OnPoison>,
    /// `max-poison-per-batch`: how many poison records of one batch the step may dead-letter
    /// before the pipeline stops. Default 100; at least 1. Plugins only.
    #[serde(default)]
    pub max_poison_per_batch: Option<u32>,
    /// `length`: a window step's duration, a multiple of the batch interval.
    #[serde(default, with = "humantime_serde")]
    pub length: Option<Duration>,
    /// `slide`: how far a window step moves between two windows; default the batch interval.
    #[serde(default, with = "humantime_serde")]
    pub slide: Option<Duration>,
    /// `aggregate`: what `reduce-by-key-and-window` computes; default `"count"`.
    #[serde(default)]
    pub aggregate: Option<Aggregate>,
    /// `inverse`: `reduce-by-key-and-window` keeps the window incrementally (Spark's inverse
    /// function); default false.
    #[serde(default)]
    pub inverse: Option<bool>,
    /// `aggregate-plugin`: `reduce-by-key-and-window` computes a user-defined aggregate, the
    /// plugin of world `aggregator` with this name, instead of a built-in `aggregate`.
    #[serde(default)]
    pub aggregate_plugin: Option<String>,
    /// `aggregate-params`: the aggregate plugin's parameters.
    #[serde(default)]
    pub aggregate_params: BTreeMap<String, String>,
    /// `timeout`: `update-state-by-key` drops a key not updated for this long (batch time).
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// `output`: what `update-state-by-key` outputs: `"updated"` keys (default) or `"all"`.
    #[serde(default)]
    pub output: Option<StateOutput>,
    /// `snapshot-every`: `update-state-by-key` writes its whole state every this many batches
    /// (default 16), and only the changed keys in between.
    #[serde(default)]
    pub snapshot_every: Option<u32>,
    /// `state-memory`: `update-state-by-key` keeps up to this many bytes of state in memory
    /// and spills its coldest keys to local disk past it. Default `"256MiB"`; at least
    /// `"64KiB"`.
    #[serde(default, deserialize_with = "crate::plugin::manifest::de_opt_bytes")]
    pub state_memory: Option<u64>,
    /// `state-spill-dir`: where `update-state-by-key` puts its spill files (scratch, not
    /// durable; removed at exit). Default: the system's temporary directory.
    #[serde(default)]
    pub state_spill_dir: Option<String>,
    /// `table`: `lookup` only: the table file, a path (relative to the pipeline file) or a
    /// `file://`, `az://`, `s3://` URL. Required for a lookup.
    #[serde(default)]
    pub table: Option<String>,
    /// `format`: `lookup` only: `"csv"` or `"jsonl"`. Default: from the table's extension.
    #[serde(default)]
    pub format: Option<String>,
    /// `table-key`: `lookup` only: the column or field that keys the table. Required.
    #[serde(default)]
    pub table_key: Option<String>,
    /// `join`: `lookup` only: `"inner"` (a record without a row is dropped) or `"left"` (it is
    /// kept, with `null`). Default `"inner"`.
    #[serde(default)]
    pub join: Option<String>,
    /// `reload-interval`: `lookup` only: how often the table is looked at for a change.
    /// Default `"10s"`.
    #[serde(default, with = "humantime_serde")]
    pub reload_interval: Option<Duration>,
    /// `key-field`: `lookup` only: the top-level field of the record's JSON value holding the
    /// join key. Default: the record's key.
    #[serde(default)]
    pub key_field: Option<String>,
    /// `into`: `lookup` only: the field the matched row goes under. Default: the table's stem.
    #[serde(default)]
    pub into: Option<String>,
    /// `window`: `event-window` only: `"tumbling"`, `"sliding"` or `"session"`. Required.
    #[serde(default)]
    pub window: Option<String>,
    /// `gap`: `event-window` session windows: records of a key closer than this share a
    /// session. Required for sessions.
    #[serde(default, with = "humantime_serde")]
    pub gap: Option<Duration>,
    /// `allowed-lateness`: `event-window` only: how far the watermark stays behind the largest
    /// event time seen. Default 0.
    #[serde(default, with = "humantime_serde")]
    pub allowed_lateness: Option<Duration>,
    /// `early-updates`: `event-window` only: each batch also outputs the open windows' current
    /// values. Default false.
    #[serde(default)]
    pub early_updates: Option<bool>,
    /// `time`: `event-window` only: `"timestamp"` (the record's timestamp; the default).
    #[serde(default)]
    pub time: Option<String>,
    /// `time-field`: `event-window` only: the top-level JSON field holding the event time (ms
    /// since the epoch, or an RFC 3339 string in UTC), instead of the timestamp.
    #[serde(default)]
    pub time_field: Option<String>,
    /// `top`: `event-window` only: keep per window the keys with the `top` largest values
    /// (ties kept). Default: every key.
    #[serde(default)]
    pub top: Option<u32>,
    /// `sum-values`: `count-by-key` only: each record's value is a count in decimal (as
    /// `count-words` and `count-by-key` itself write them) that is added to its key's count,
    /// instead of the record counting as 1. A value that is not one is dead-lettered.
    /// Default false.
    #[serde(default)]
    pub sum_values: Option<bool>,
}

/// A step, once checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A transformation plugin and its parameters.
    Plugin {
        /// The plugin's name.
        name: String,
        /// Its parameters.
        params: BTreeMap<String, String>,
        /// What it does with a poison record (`on-poison`, `max-poison-per-batch`).
        poison: poison::PoisonPolicy,
        /// Where its keyed state is kept (`state-memory`, `state-spill-dir`), when its plugin
        /// keeps some.
        state: StateMemory,
        /// `snapshot-every`: its whole keyed state is written every this many batches.
        snapshot_every: u32,
    },
    /// Records with the same key meet in one partition.
    RepartitionByKey {
        /// Partitions after; `None` keeps the count.
        partitions: Option<u32>,
    },
    /// One record per key: the key and its count.
    CountByKey {
        /// `sum-values`: a record adds its value (a decimal count) rather than 1.
        sum_values: bool,
    },
    /// Each record enriched with the row of a table that has its key (a lookup join).
    Lookup(Box<crate::lookup::LookupConfig>),
    /// A running aggregate per key across batches (`update-state-by-key`), and where its
    /// state is kept.
    UpdateState(RunningSpec, StateMemory),
    /// `reduce-by-key-and-window` with an aggregate plugin (`aggregate-plugin`).
    PluginWindow(Box<PluginWindow>),
    /// A window over event time, with a watermark (see [`super::event_window`]).
    EventWindow(Box<super::event_window::EventWindowSpec>),
    /// A window over batch time (see [`super::window`]).
    Window {
        /// What it outputs.
        kind: WindowKind,
        /// Its length and slide, in batches.
        spec: WindowSpec,
    },
}

/// `reduce-by-key-and-window` with `aggregate-plugin`, once checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginWindow {
    /// The aggregate plugin's name (`aggregate-plugin`).
    pub plugin: String,
    /// Its parameters (`aggregate-params`).
    pub params: BTreeMap<String, String>,
    /// Its length and slide, in batches.
    pub spec: WindowSpec,
    /// `inverse`: the plugin's `retract` takes expired batches out.
    pub inverse: bool,
    /// `partitions`: output partitions; `None`: as many as the source has.
    pub partitions: Option<u32>,
}

impl StepConfig {
    /// The poison policy this entry sets, or what is wrong with it.
    fn poison(&self, here: &str) -> Result<poison::PoisonPolicy, String> {
        if self.max_poison_per_batch == Some(0) {
            return Err(format!(
                "{here}: key `max-poison-per-batch` must be at least 1"
            ));
        }
        let default = poison::PoisonPolicy::default();
        Ok(poison::PoisonPolicy {
            on_poison: self.on_poison.unwrap_or(default.on_poison),
            max_per_batch: self.max_poison_per_batch.unwrap_or(default.max_per_batch),
        })
    }

    /// The step this entry (the `n`th, from 1) describes, or what is wrong with it.
    /// `interval` is the pipeline's batch interval, which window lengths are multiples of.
    pub fn step(&self, n: usize, interval: Duration) -> Result<Step, String> {
        let here = format!("`[[transform]]` number {n}");
        let lookup_keys = crate::lookup::config::lookup_keys_set(self);
        if let Some(key) = lookup_keys.first()
            && self.builtin.as_deref() != Some("lookup")
        {
            return Err(format!(
                "{here}: key `{key}` is only for `builtin = \"lookup\"`"
            ));
        }
        if self.sum_values.is_some() && self.builtin.as_deref() != Some("count-by-key") {
            return Err(format!(
                "{here}: key `sum-values` is only for `builtin = \"count-by-key\"`"
            ));
        }
        if self.builtin.as_deref() == Some("event-window") {
            if self.plugin.is_some() || !self.params.is_empty() {
                return Err(format!(
                    "{here}: `builtin = \"event-window\"` takes no `plugin` or `params`"
                ));
            }
            return super::event_window::spec(self, &here).map(|s| Step::EventWindow(Box::new(s)));
        }
        if let Some(key) = super::event_window::own_keys_set(self).first() {
            return Err(format!(
                "{here}: key `{key}` is only for `builtin = \"event-window\"`"
            ));
        }
        match (&self.plugin, self.builtin.as_deref()) {
            (Some(_), Some(_)) => Err(format!("{here}: has both `plugin` and `builtin`; give one")),
            (None, None) => Err(format!(
                "{here}: needs `plugin = \"NAME\"` or `builtin = \"…\"`"
            )),
            (Some(name), None) => {
                if self.partitions.is_some() {
                    return Err(format!(
                        "{here}: key `partitions` is only for `builtin = \"repartition-by-key\"` and `\"reduce-by-key-and-window\"`"
                    ));
                }
                self.only_for_windows(&here, "plugins")?;
                for (key, set) in [
                    ("timeout", self.timeout.is_some()),
                    ("output", self.output.is_some()),
                ] {
                    if set {
                        return Err(format!(
                            "{here}: key `{key}` is only for `update-state-by-key`, not for plugins"
                        ));
                    }
                }
                self.no_aggregate_plugin(&here, "plugins")?;
                Ok(Step::Plugin {
                    name: name.clone(),
                    params: self.params.clone(),
                    poison: self.poison(&here)?,
                    state: self.state_memory(&here)?,
                    snapshot_every: self.snapshot_every(&here)?,
                })
            }
            (None, Some(b)) => {
                if !self.params.is_empty() {
                    return Err(format!("{here}: key `params` is only for plugins"));
                }
                if self.on_poison.is_some() || self.max_poison_per_batch.is_some() {
                    return Err(format!(
                        "{here}: keys `on-poison` and `max-poison-per-batch` are only for plugins"
                    ));
                }
                self.builtin(&here, b, interval)
            }
        }
    }

    /// The built-in step `name`.
    fn builtin(&self, here: &str, name: &str, interval: Duration) -> Result<Step, String> {
        let no_partitions = || match self.partitions {
            Some(_) => Err(format!(
                "{here}: key `partitions` is not for `{name}`; it is for `repartition-by-key` and `reduce-by-key-and-window`"
            )),
            None => Ok(()),
        };
        if name != "reduce-by-key-and-window" {
            self.no_aggregate_plugin(here, &format!("`{name}`"))?;
        } else if self.aggregate_plugin.is_none() && !self.aggregate_params.is_empty() {
            return Err(format!(
                "{here}: key `aggregate-params` needs `aggregate-plugin = \"NAME\"`"
            ));
        }
        let kind = match name {
            "repartition-by-key" | "count-by-key" => {
                self.only_for_windows(here, name)?;
                self.no_state_keys(here, name)?;
                return match name {
                    "count-by-key" => no_partitions().map(|()| Step::CountByKey {
                        sum_values: self.sum_values.unwrap_or(false),
                    }),
                    _ => Ok(Step::RepartitionByKey {
                        partitions: self.partitions,
                    }),
                };
            }
            "update-state-by-key" => return self.update_state(here),
            "lookup" => {
                self.only_for_windows(here, name)?;
                self.no_state_keys(here, name)?;
                no_partitions()?;
                return Ok(Step::Lookup(Box::new(
                    crate::lookup::LookupConfig::from_step(self, here)?,
                )));
            }
            "window" => WindowKind::Records,
            "count-by-window" => WindowKind::Count,
            "reduce-by-key-and-window" if self.aggregate_plugin.is_some() => {
                return self.plugin_window(here, interval);
            }
            "reduce-by-key-and-window" => {
                let aggregate = self.aggregate.unwrap_or(Aggregate::Count);
                let inverse = self.inverse.unwrap_or(false);
                if inverse && !aggregate.invertible() {
                    return Err(format!(
                        "{here}: `inverse = true` needs an aggregate that can take an expired batch out; `{}` cannot (count, sum, mean and distinct-count can)",
                        aggregate.name()
                    ));
                }
                if self.partitions == Some(0) {
                    return Err(format!("{here}: key `partitions` must be at least 1"));
                }
                WindowKind::ReduceByKey {
                    aggregate,
                    inverse,
                    partitions: self.partitions,
                }
            }
            other => {
                return Err(format!(
                    "{here}: key `builtin`: unknown step {other:?}; expected \"repartition-by-key\", \"count-by-key\", \"window\", \"count-by-window\", \"reduce-by-key-and-window\", \"update-state-by-key\", \"event-window\" or \"lookup\""
                ));
            }
        };
        self.no_state_keys(here, name)?;
        if !matches!(kind, WindowKind::ReduceByKey { .. }) {
            no_partitions()?;
            if self.aggregate.is_some() || self.inverse.is_some() {
                return Err(format!(
                    "{here}: keys `aggregate` and `inverse` are only for `reduce-by-key-and-window`"
                ));
            }
        }
        let spec = window::spec(here, self.length, self.slide, interval)?;
        Ok(Step::Window { kind, spec })
    }

    /// `reduce-by-key-and-window` with `aggregate-plugin`.
    fn plugin_window(&self, here: &str, interval: Duration) -> Result<Step, String> {
        self.no_state_keys(here, "`reduce-by-key-and-window`")?;
        if let Some(a) = self.aggregate {
            return Err(format!(
                "{here}: has both `aggregate = \"{}\"` and `aggregate-plugin`; give one",
                a.name()
            ));
        }
        if self.partitions == Some(0) {
            return Err(format!("{here}: key `partitions` must be at least 1"));
        }
        Ok(Step::PluginWindow(Box::new(PluginWindow {
            plugin: self.aggregate_plugin.clone().unwrap_or_default(),
            params: self.aggregate_params.clone(),
            spec: window::spec(here, self.length, self.slide, interval)?,
            inverse: self.inverse.unwrap_or(false),
            partitions: self.partitions,
        })))
    }

    /// Refuses `aggregate-plugin` and `aggregate-params` where no aggregate plugin runs.
    fn no_aggregate_plugin(&self, here: &str, what: &str) -> Result<(), String> {
        if self.aggregate_plugin.is_some() || !self.aggregate_params.is_empty() {
            return Err(format!(
                "{here}: keys `aggregate-plugin` and `aggregate-params` are only for `reduce-by-key-and-window`, not for {what}"
            ));
        }
        Ok(())
    }

    /// `update-state-by-key`.
    fn update_state(&self, here: &str) -> Result<Step, String> {
        if self.length.is_some() || self.slide.is_some() || self.inverse.is_some() {
            return Err(format!(
                "{here}: keys `length`, `slide` and `inverse` are for the window steps, not `update-state-by-key`"
            ));
        }
        if self.partitions == Some(0) {
            return Err(format!("{here}: key `partitions` must be at least 1"));
        }
        if self.timeout.is_some_and(|t| t.is_zero()) {
            return Err(format!("{here}: key `timeout` must be above zero"));
        }
        let snapshot_every = self.snapshot_every(here)?;
        let memory = self.state_memory(here)?;
        Ok(Step::UpdateState(
            RunningSpec {
                aggregate: self.aggregate.unwrap_or(Aggregate::Count),
                timeout: self.timeout,
                output: self.output.unwrap_or(StateOutput::Updated),
                snapshot_every,
                partitions: self.partitions,
            },
            memory,
        ))
    }

    /// `snapshot-every` (default 16), checked.
    fn snapshot_every(&self, here: &str) -> Result<u32, String> {
        let snapshot_every = self.snapshot_every.unwrap_or(16);
        if snapshot_every == 0 {
            return Err(format!("{here}: key `snapshot-every` must be at least 1"));
        }
        Ok(snapshot_every)
    }

    /// `state-memory` and `state-spill-dir`, checked.
    fn state_memory(&self, here: &str) -> Result<StateMemory, String> {
        let budget = self.state_memory.unwrap_or(window::DEFAULT_STATE_MEMORY);
        if budget < 64 << 10 {
            return Err(format!(
                "{here}: key `state-memory` = {budget} bytes is too small: at least \"64KiB\" (e.g. state-memory = \"64MiB\")"
            ));
        }
        if self.state_spill_dir.as_deref() == Some("") {
            return Err(format!("{here}: key `state-spill-dir` is empty"));
        }
        Ok(StateMemory {
            budget,
            spill_dir: self.state_spill_dir.clone(),
        })
    }

    /// Refuses the keys of `update-state-by-key` on another step.
    fn no_state_keys(&self, here: &str, what: &str) -> Result<(), String> {
        let set = [
            ("timeout", self.timeout.is_some()),
            ("output", self.output.is_some()),
            ("snapshot-every", self.snapshot_every.is_some()),
            ("state-memory", self.state_memory.is_some()),
            ("state-spill-dir", self.state_spill_dir.is_some()),
        ];
        match set.iter().find(|(_, on)| *on) {
            None => Ok(()),
            Some((key, _)) => Err(format!(
                "{here}: key `{key}` is only for `update-state-by-key`, not for {what}"
            )),
        }
    }

    /// Refuses the window keys on a step that is not a window.
    fn only_for_windows(&self, here: &str, what: &str) -> Result<(), String> {
        let set: Vec<&str> = [
            ("length", self.length.is_some()),
            ("slide", self.slide.is_some()),
            ("aggregate", self.aggregate.is_some()),
            ("inverse", self.inverse.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, on)| on.then_some(k))
        .collect();
        match set.first() {
            None => Ok(()),
            Some(key) => Err(format!(
                "{here}: key `{key}` is only for the window steps (`window`, `count-by-window`, `reduce-by-key-and-window`), not for {what}"
            )),
        }
    }
}

#[cfg(test)]
mod aggregate_plugin_tests {
    use super::*;

    fn step(text: &str) -> Result<Step, String> {
        let config: StepConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        config.step(2, Duration::from_secs(1))
    }

    #[test]
    fn a_window_names_its_aggregate_plugin_and_its_params() {
        let s = step(
            r#"builtin = "reduce-by-key-and-window"
length = "3s"
aggregate-plugin = "stats-agg"
aggregate-params = { measure = "bytes" }
inverse = true"#,
        )
        .unwrap();
        let Step::PluginWindow(w) = s else {
            panic!("{s:?}")
        };
        assert_eq!(w.plugin, "stats-agg");
        assert_eq!(w.params.get("measure").map(String::as_str), Some("bytes"));
        assert!(w.inverse);
        assert_eq!(
            w.spec,
            WindowSpec {
                length: 3,
                slide: 1
            }
        );
    }

    #[test]
    fn the_aggregate_plugin_keys_are_refused_where_they_do_not_belong() {
        let cases = [
            (
                "builtin = \"reduce-by-key-and-window\"\nlength = \"3s\"\naggregate = \"sum\"\naggregate-plugin = \"p\"",
                "has both `aggregate = \"sum\"` and `aggregate-plugin`",
            ),
            (
                "builtin = \"window\"\nlength = \"3s\"\naggregate-plugin = \"p\"",
                "only for `reduce-by-key-and-window`, not for `window`",
            ),
            (
                "builtin = \"reduce-by-key-and-window\"\nlength = \"3s\"\naggregate-params = { a = \"1\" }",
                "`aggregate-params` needs `aggregate-plugin",
            ),
            (
                "plugin = \"grep\"\naggregate-plugin = \"p\"",
                "not for plugins",
            ),
        ];
        for (text, want) in cases {
            let e = step(text).unwrap_err();
            assert!(e.contains(want) && e.contains("number 2"), "{text}: {e}");
        }
    }
}

#[cfg(test)]
mod sum_values_tests {
    use super::*;

    fn step(text: &str) -> Result<Step, String> {
        let config: StepConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        config.step(3, Duration::from_secs(1))
    }

    #[test]
    fn count_by_key_takes_sum_values_and_defaults_to_counting_records() {
        let on = step("builtin = \"count-by-key\"\nsum-values = true").unwrap();
        assert!(
            matches!(on, Step::CountByKey { sum_values: true }),
            "{on:?}"
        );
        let off = step("builtin = \"count-by-key\"").unwrap();
        assert!(
            matches!(off, Step::CountByKey { sum_values: false }),
            "{off:?}"
        );
    }

    #[test]
    fn sum_values_is_refused_on_any_other_step() {
        for other in [
            "builtin = \"repartition-by-key\"",
            "plugin = \"count-words\"",
            "builtin = \"reduce-by-key-and-window\"\nlength = \"2s\"",
        ] {
            let err = step(&format!("{other}\nsum-values = true")).unwrap_err();
            assert!(
                err.contains("`[[transform]]` number 3") && err.contains("key `sum-values`"),
                "{other}: {err}"
            );
        }
    }
}
