//! `/metrics`: the run in the Prometheus text exposition format (version 0.0.4).
//!
//! Every family carries a `pipeline` label; partitions and plugins add theirs. Counters end in
//! `_total`; durations are histograms in seconds. A plugin's own counters and gauges (the
//! SDK's `counter-add`, `gauge-set`) are the families `sluice_user_<name>_total` and
//! `sluice_user_<name>`, with a `plugin` label, as Flink scopes its user-defined metrics by
//! operator.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

use super::Monitor;
use super::history::{BUCKETS, Histogram};
use crate::plugin::CALL_BUCKETS;

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A family's samples as they are written: (labels, value), in order.
type Samples = Vec<(String, f64)>;

/// A family read from one source: name, type, help, and how to read its value.
type Family<T> = (&'static str, &'static str, &'static str, fn(&T) -> f64);

/// The text exposition, built family by family.
struct Text {
    out: String,
    pipeline: String,
}

impl Text {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        // In HELP, backslash and line feed are escaped (the text format, 0.0.4).
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// One sample of `name` with the pipeline label and `labels` (`k="v"` pairs, escaped).
    fn sample(&mut self, name: &str, labels: &str, value: f64) {
        let sep = if labels.is_empty() { "" } else { "," };
        let _ = writeln!(
            self.out,
            "{name}{{pipeline=\"{}\"{sep}{labels}}} {}",
            self.pipeline,
            number(value)
        );
    }

    fn single(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, "", value);
    }

    fn histogram(&mut self, name: &str, help: &str, h: &Histogram) {
        self.family(name, "histogram", help);
        for (bound, count) in BUCKETS.iter().zip(h.counts) {
            self.sample(
                &format!("{name}_bucket"),
                &format!("le=\"{bound}\""),
                count as f64,
            );
        }
        self.sample(&format!("{name}_bucket"), "le=\"+Inf\"", h.count as f64);
        self.sample(&format!("{name}_sum"), "", h.sum);
        self.sample(&format!("{name}_count"), "", h.count as f64);
    }
}

/// A value as the text format writes it.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

/// `s` as a label value: backslash, double quote and newline escaped.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// `s` as a metric name part: `[a-zA-Z0-9_]`, anything else as `_`.
pub fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

impl Monitor {
    /// The `/metrics` document.
    pub fn prometheus(&self) -> String {
        let mut t = Text {
            out: String::with_capacity(16 << 10),
            pipeline: escape(&self.info.pipeline),
        };
        self.run_families(&mut t);
        self.partition_families(&mut t);
        self.ha_families(&mut t);
        self.plugin_families(&mut t);
        t.out
    }

    fn run_families(&self, t: &mut Text) {
        let h = self.history();
        let totals = &h.totals;
        t.single(
            "sluice_batches_total",
            "counter",
            "Batches committed.",
            totals.batches as f64,
        );
        t.single(
            "sluice_records_in_total",
            "counter",
            "Records the committed batches took in.",
            totals.records_in as f64,
        );
        t.single(
            "sluice_records_out_total",
            "counter",
            "Records the committed batches wrote to the first sink.",
            totals.records_out as f64,
        );
        t.single(
            "sluice_dead_letters_total",
            "counter",
            "Records the committed batches dead-lettered.",
            totals.dead_letters as f64,
        );
        t.single(
            "sluice_checkpoints_total",
            "counter",
            "Checkpoint entries written.",
            totals.checkpoints as f64,
        );
        t.single(
            "sluice_batches_recomputed_total",
            "counter",
            "Batches run again (after a restart or a plugin rollback).",
            totals.recomputed as f64,
        );
        t.histogram(
            "sluice_batch_scheduling_delay_seconds",
            "From a batch's time to its job's start.",
            &h.scheduling,
        );
        t.histogram(
            "sluice_batch_processing_seconds",
            "A batch's job run time.",
            &h.processing,
        );
        t.histogram(
            "sluice_batch_total_delay_seconds",
            "From a batch's time to its job's end.",
            &h.total_delay,
        );
        t.histogram(
            "sluice_checkpoint_write_seconds",
            "Writing a batch's checkpoint entry.",
            &h.checkpoint,
        );
        drop(h);
        t.single(
            "sluice_memory_budget_bytes",
            "gauge",
            "The memory budget for received records (`memory-budget`).",
            self.blocks.budget() as f64,
        );
        t.single(
            "sluice_memory_used_bytes",
            "gauge",
            "Bytes of received records held now.",
            self.blocks.used() as f64,
        );
        t.single(
            "sluice_memory_peak_bytes",
            "gauge",
            "The most bytes of received records held at once.",
            self.blocks.peak() as f64,
        );
        t.single(
            "sluice_backpressure_waits_total",
            "counter",
            "Times a receiver waited for room in the memory budget.",
            self.blocks.backpressure_waits() as f64,
        );
        t.single(
            "sluice_ready",
            "gauge",
            "1 when /readyz answers 200.",
            f64::from(u8::from(self.readiness().is_ok())),
        );
        t.single(
            "sluice_start_time_seconds",
            "gauge",
            "When the run started, seconds since the epoch.",
            self.info.started_ms as f64 / 1e3,
        );
    }

    fn partition_families(&self, t: &mut Text) {
        let snaps: Vec<_> = (0..self.info.partitions)
            .filter_map(|p| Some((p, self.blocks.intake(p)?.snapshot())))
            .collect();
        let families: [Family<crate::block::intake::IntakeSnapshot>; 4] = [
            (
                "sluice_partition_records_total",
                "counter",
                "Records the partition's receiver handed in.",
                |s| s.records as f64,
            ),
            (
                "sluice_partition_bytes_total",
                "counter",
                "Bytes the partition's receiver handed in.",
                |s| s.bytes as f64,
            ),
            (
                "sluice_partition_backpressure_seconds_total",
                "counter",
                "Time the partition's receiver waited for room in the memory budget.",
                |s| s.backpressure_seconds,
            ),
            (
                "sluice_partition_receiver_failing",
                "gauge",
                "1 while the partition's receiver has failed and no record came in since.",
                |s| f64::from(u8::from(s.failing)),
            ),
        ];
        for (name, kind, help, value) in families {
            t.family(name, kind, help);
            for (p, s) in &snaps {
                t.sample(name, &format!("partition=\"{p}\""), value(s));
            }
        }
        let name = "sluice_partition_lag";
        t.family(name, "gauge", "What the partition's source has waiting, where it knows (files: bytes of listed files not read yet).");
        for (p, s) in &snaps {
            if let Some(lag) = s.lag {
                t.sample(name, &format!("partition=\"{p}\""), lag as f64);
            }
        }
    }

    /// Several hosts (`[ha]`) only: what this member holds, and what shows a partition stuck
    /// between hosts (a claimed partition not taken, commits the fence refused).
    fn ha_families(&self, t: &mut Text) {
        let Some(o) = self
            .ownership
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        else {
            return;
        };
        let member = format!("member=\"{}\"", escape(&o.member));
        let singles = [
            (
                "sluice_ha_partitions_owned",
                "gauge",
                "Partitions this host owns now.",
                o.owned.len() as f64,
            ),
            (
                "sluice_ha_commits_refused_total",
                "counter",
                "Partition commits the fence refused (another host had taken the partition over; this host's output for it was dropped, never written).",
                o.commits_refused as f64,
            ),
            (
                "sluice_ha_partitions_lost_total",
                "counter",
                "Partitions this host lost (taken over by another host, or given up to balance).",
                o.partitions_lost as f64,
            ),
        ];
        for (name, kind, help, value) in singles {
            t.family(name, kind, help);
            t.sample(name, &member, value);
        }
        let name = "sluice_ha_partition_waiting_batches";
        t.family(name, "gauge", "Batches committed here since this host claimed the partition, while it waits to take it (its previous receiver here stopping, the batch with that receiver's last records committing); nobody reads the partition meanwhile. Absent when no partition waits.");
        for w in &o.waiting {
            let labels = format!("{member},partition=\"{}\"", w.partition);
            t.sample(name, &labels, w.batches as f64);
        }
    }

    fn plugin_families(&self, t: &mut Text) {
        let plugins = self.plugins();
        let label = |p: &crate::plugin::Plugin| {
            format!(
                "plugin=\"{}\",digest=\"{}\"",
                escape(p.name()),
                crate::swap::short(&p.info().digest)
            )
        };
        let families: [Family<crate::plugin::PluginMetrics>; 4] = [
            (
                "sluice_plugin_calls_total",
                "counter",
                "Calls into the plugin.",
                |m| m.calls.load(Relaxed) as f64,
            ),
            (
                "sluice_plugin_traps_total",
                "counter",
                "Calls that trapped (panic, time or memory cap, contract breach).",
                |m| m.traps.load(Relaxed) as f64,
            ),
            (
                "sluice_plugin_records_total",
                "counter",
                "Records handed to the plugin's calls that succeeded.",
                |m| m.records.load(Relaxed) as f64,
            ),
            (
                "sluice_plugin_memory_peak_bytes",
                "gauge",
                "The most memory an instance of the plugin held after a call.",
                |m| m.memory_peak.load(Relaxed) as f64,
            ),
        ];
        for (name, kind, help, value) in families {
            t.family(name, kind, help);
            for p in &plugins {
                t.sample(name, &label(p), value(p.metrics()));
            }
        }
        let name = "sluice_plugin_call_duration_seconds";
        t.family(
            name,
            "histogram",
            "A call into the plugin (one per partition per batch).",
        );
        for p in &plugins {
            let m = p.metrics();
            let l = label(p);
            // One read of each bucket, and the count is their total (the overflow bucket
            // included): a call landing while this runs cannot make the +Inf bucket or the
            // count smaller than a finite bucket, which a parser would refuse.
            let counts: Vec<u64> = m.call_buckets.iter().map(|c| c.load(Relaxed)).collect();
            let mut cumulative = 0u64;
            for (bound, c) in CALL_BUCKETS.iter().zip(&counts) {
                cumulative += c;
                t.sample(
                    &format!("{name}_bucket"),
                    &format!("{l},le=\"{bound}\""),
                    cumulative as f64,
                );
            }
            let count: u64 = counts.iter().sum();
            t.sample(
                &format!("{name}_bucket"),
                &format!("{l},le=\"+Inf\""),
                count as f64,
            );
            t.sample(
                &format!("{name}_sum"),
                &l,
                m.call_nanos.load(Relaxed) as f64 / 1e9,
            );
            t.sample(&format!("{name}_count"), &l, count as f64);
        }
        user_families(t, &plugins);
    }
}

/// The plugins' own counters and gauges, one family per name, a sample per plugin.
///
/// Names that read the same once sanitized (`a.b` and `a_b`, `x` and `x_total`) would make two
/// samples with the same labels, and a gauge may read as a counter's family (`x_total`): the
/// text format allows neither, so the first name in order is exported and the others are
/// left out (the JSON API still shows them all).
fn user_families(t: &mut Text, plugins: &[crate::plugin::Plugin]) {
    let metrics = plugins.iter().map(|p| {
        let m = p.metrics();
        (p.name().to_owned(), m.counters(), m.gauges())
    });
    user_text(t, metrics);
}

/// A plugin's name, counters and gauges.
type UserMetrics = (String, BTreeMap<String, u64>, BTreeMap<String, f64>);

/// [`user_families`] on what the plugins reported.
fn user_text(t: &mut Text, plugins: impl Iterator<Item = UserMetrics>) {
    let mut counters: BTreeMap<String, Samples> = BTreeMap::new();
    let mut gauges: BTreeMap<String, Samples> = BTreeMap::new();
    let add = |family: &mut Samples, l: &String, v: f64| {
        if !family.iter().any(|(other, _)| other == l) {
            family.push((l.clone(), v));
        }
    };
    for (plugin, counted, gauged) in plugins {
        let l = format!("plugin=\"{}\"", escape(&plugin));
        for (k, v) in counted {
            let base = sanitize(&k);
            let name = format!("sluice_user_{}_total", base.trim_end_matches("_total"));
            add(counters.entry(name).or_default(), &l, v as f64);
        }
        for (k, v) in gauged {
            let name = format!("sluice_user_{}", sanitize(&k));
            add(gauges.entry(name).or_default(), &l, v);
        }
    }
    gauges.retain(|name, _| !counters.contains_key(name));
    for (kind, families) in [("counter", counters), ("gauge", gauges)] {
        for (name, samples) in families {
            t.family(
                &name,
                kind,
                "A plugin's own metric (SDK `counter-add`/`gauge-set`).",
            );
            for (l, v) in samples {
                t.sample(&name, &l, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_and_names_are_escaped_for_the_text_format() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(sanitize("lines.matched-9"), "lines_matched_9");
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(3.0), "3");
    }

    #[test]
    fn plugin_metric_names_that_read_the_same_make_one_family_and_one_sample_per_plugin() {
        let mut t = Text {
            out: String::new(),
            pipeline: "p".into(),
        };
        let counters = BTreeMap::from([
            ("a.b".to_owned(), 1),
            ("a_b".to_owned(), 2),
            ("x".to_owned(), 3),
            ("x_total".to_owned(), 4),
        ]);
        let gauges = BTreeMap::from([("x_total".to_owned(), 5.0), ("g".to_owned(), 1.5)]);
        user_text(&mut t, [("f\"1".to_owned(), counters, gauges)].into_iter());
        let types: Vec<&str> = t.out.lines().filter(|l| l.starts_with("# TYPE")).collect();
        assert_eq!(
            types,
            [
                "# TYPE sluice_user_a_b_total counter",
                "# TYPE sluice_user_x_total counter",
                "# TYPE sluice_user_g gauge",
            ]
        );
        assert!(
            t.out
                .contains("sluice_user_a_b_total{pipeline=\"p\",plugin=\"f\\\"1\"} 1\n")
        );
        assert!(
            t.out
                .contains("sluice_user_x_total{pipeline=\"p\",plugin=\"f\\\"1\"} 3\n")
        );
        assert_eq!(t.out.lines().filter(|l| !l.starts_with('#')).count(), 3);
    }

    #[test]
    fn help_text_escapes_backslash_and_line_feed() {
        let mut t = Text {
            out: String::new(),
            pipeline: "p".into(),
        };
        t.family("m", "gauge", "a \\ b\nc");
        assert!(
            t.out.starts_with("# HELP m a \\\\ b\\nc\n# TYPE m gauge\n"),
            "{}",
            t.out
        );
    }
}
