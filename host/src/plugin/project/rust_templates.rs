//! The Rust projects `sluice plugin new --lang rust` writes: one template per plugin kind
//! (`--kind`), each a crate that builds with `sluice plugin build` and passes its own `cargo
//! test` (run natively: the SDK's export macros expand to nothing off WebAssembly).
//!
//! `NAME` in a template is replaced by the plugin's name.

use super::Kind;

/// The template's `src/lib.rs`, manifest description and README paragraph for `kind`.
pub fn files(kind: Kind, name: &str) -> (String, &'static str, String) {
    let (lib, description, usage) = match kind {
        Kind::Transform => (
            TRANSFORM_LIB,
            "Upper-cases every value; rejects empty values.",
            TRANSFORM_USAGE,
        ),
        Kind::Sink => (
            SINK_LIB,
            "Counts each batch's records and logs the count when the batch commits.",
            SINK_USAGE,
        ),
        Kind::Receiver => (
            RECEIVER_LIB,
            "Counts from 0 to `count` (default 10) on one partition, then ends.",
            RECEIVER_USAGE,
        ),
        Kind::Aggregate => (
            AGGREGATE_LIB,
            "Aggregate: the sum of the values, as decimal integers, per key.",
            AGGREGATE_USAGE,
        ),
    };
    (
        lib.replace("NAME", name),
        description,
        README
            .replace("USAGE", usage)
            .replace("KIND", &kind.to_string())
            .replace("NAME", name),
    )
}

const README: &str = r#"# NAME

A [sluice](https://example.invalid/sluice) plugin (kind: KIND), written in Rust.

    cargo test                   # the plugin's logic, natively (src/lib.rs's tests)
    sluice plugin build          # builds NAME.wasm here (cargo build --target wasm32-wasip2 --release)
    sluice plugin check NAME.wasm

USAGE
Put this directory on a pipeline's plugin search path, beside the first-party plugins:

    plugins = ["./NAME", "$SLUICE_PLUGINS"]     # in pipeline.toml; first match wins

or copy `NAME.wasm` and `NAME.toml` into a plugin directory.
"#;

const TRANSFORM_USAGE: &str = r#"Run the built component on a few records, as the pipeline would:

    sluice plugin test NAME.wasm --text hello --text "" --input more-records.txt
    # stdout: HELLO                               (one output value a line)
    # stderr: reject record 1 "": empty value     (then a summary line)

`sluice plugin test` exits non-zero when the plugin traps or fails, naming the plugin and its
digest, so it can run in CI after the build (compare its stdout with an expected file).
"#;

const SINK_USAGE: &str = r#"Write a few records to it and commit them, as the pipeline would:

    sluice plugin test NAME.wasm --text a --text b
"#;

const RECEIVER_USAGE: &str = r#"Use it as a pipeline's source:

    [source]
    kind = "plugin"
    plugin = "NAME"
    params = { count = "100" }
"#;

const AGGREGATE_USAGE: &str = r#"Use it in a window step:

    [[transform]]
    builtin = "reduce-by-key-and-window"
    length = "30s"
    aggregate-plugin = "NAME"
"#;

const TRANSFORM_LIB: &str = r#"//! NAME: a sluice transformation, called once per partition per batch.

use sluice_sdk::{Batch, Context, Error, Output, Params, Transform, export_transform};

/// The plugin's state, made once per instance by `init`.
pub struct Plugin;

impl Transform for Plugin {
    fn init(params: &Params) -> Result<Self, String> {
        // Refuse parameters this plugin does not know, naming them.
        params.allow_only(&[])?;
        Ok(Plugin)
    }

    fn transform(&mut self, _ctx: &Context, input: &Batch, out: &mut Output) -> Result<(), Error> {
        for record in input.records() {
            if record.value().is_empty() {
                // A rejected record goes to the dead letters with the reason; the batch goes on.
                out.reject(record, "empty value");
                continue;
            }
            // Writes straight into the output buffer: no allocation per record.
            out.push_with(&record, |buf| {
                buf.extend(record.value().iter().map(u8::to_ascii_uppercase))
            });
        }
        Ok(())
    }
}

export_transform!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_upper_cased_and_empty_ones_rejected() {
        let mut plugin = Plugin::init(&Params::default()).unwrap();
        let input = Batch::from_values(["hello", "", "World"]);
        let mut out = Output::new();
        plugin.transform(&Context::default(), &input, &mut out).unwrap();
        assert_eq!(out.values().collect::<Vec<_>>(), [b"HELLO".as_slice(), b"WORLD"]);
        assert_eq!(out.rejected().len(), 1);
        assert_eq!(out.rejected()[0].index, 1);
    }

    #[test]
    fn unknown_parameters_are_refused() {
        assert!(Plugin::init(&Params::from_iter([("nope", "1")])).is_err());
    }
}
"#;

const SINK_LIB: &str = r#"//! NAME: a sluice sink. Each batch reaches it in two phases: `write` per partition (once per
//! block), then `commit` once every write is done.

use sluice_sdk::{Batch, Context, Error, Params, Sink, export_sink};

/// The plugin's state: the records written since the last commit.
pub struct Plugin {
    pending: u64,
}

impl Sink for Plugin {
    fn init(params: &Params) -> Result<Self, String> {
        params.allow_only(&[])?;
        Ok(Plugin { pending: 0 })
    }

    fn write(&mut self, _ctx: &Context, input: &Batch) -> Result<(), Error> {
        // Nothing need be visible before `commit`; a real sink stages its output here.
        self.pending += input.len() as u64;
        Ok(())
    }

    fn commit(&mut self, stream: &str, batch_id: u64) -> Result<(), Error> {
        // Called again with the same id after a replay: key the output by the batch id.
        sluice_sdk::log::info(&format!(
            "batch {batch_id} of stream {stream}: {} records",
            self.pending
        ));
        self.pending = 0;
        Ok(())
    }
}

export_sink!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_takes_what_was_written() {
        let mut sink = Plugin::init(&Params::default()).unwrap();
        sink.write(&Context::default(), &Batch::from_values(["a", "b"])).unwrap();
        sink.write(&Context::default(), &Batch::from_values(["c"])).unwrap();
        assert_eq!(sink.pending, 3);
        sink.commit("events", 0).unwrap();
        assert_eq!(sink.pending, 0);
    }
}
"#;

const RECEIVER_LIB: &str = r#"//! NAME: a sluice receiver (a source the host polls). It counts from 0 to `count` on one
//! partition, then ends; its position is the next number, so a restart goes on from there.

use sluice_sdk::{BatchBuilder, Error, Params, Poll, Receiver, export_receiver};

/// The plugin's state.
pub struct Plugin {
    count: u64,
    next: u64,
}

impl Receiver for Plugin {
    fn init(params: &Params) -> Result<Self, String> {
        params.allow_only(&["count"])?;
        Ok(Plugin {
            count: params.parse_or("count", 10)?,
            next: 0,
        })
    }

    fn partitions(&self) -> u32 {
        1
    }

    fn open(&mut self, _partition: u32, position: Option<String>) -> Result<(), Error> {
        self.next = match position {
            None => 0,
            Some(p) => p
                .parse()
                .map_err(|_| Error::fatal(format!("position {p:?} is not a number")))?,
        };
        Ok(())
    }

    fn poll(
        &mut self,
        _partition: u32,
        max_records: u32,
        _max_bytes: u32,
        out: &mut BatchBuilder,
    ) -> Result<Poll, Error> {
        while self.next < self.count && (out.len() as u32) < max_records {
            out.push(self.next.to_string().as_bytes());
            self.next += 1;
        }
        Ok(Poll {
            position: Some(self.next.to_string()),
            end: self.next == self.count,
        })
    }
}

export_receiver!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_counts_and_resumes_at_its_position() {
        let mut r = Plugin::init(&Params::from_iter([("count", "5")])).unwrap();
        r.open(0, None).unwrap();
        let mut out = BatchBuilder::new();
        let poll = r.poll(0, 3, 1 << 20, &mut out).unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(poll.position.as_deref(), Some("3"));
        assert!(!poll.end);

        let mut again = Plugin::init(&Params::from_iter([("count", "5")])).unwrap();
        again.open(0, poll.position).unwrap();
        let mut out = BatchBuilder::new();
        let poll = again.poll(0, 100, 1 << 20, &mut out).unwrap();
        assert_eq!(out.finish().records().map(|r| r.value().to_vec()).collect::<Vec<_>>(), [b"3".to_vec(), b"4".to_vec()]);
        assert!(poll.end);
    }
}
"#;

const AGGREGATE_LIB: &str = r#"//! NAME: a sluice aggregate for `reduce-by-key-and-window` (`aggregate-plugin`): the sum of
//! the values, as decimal integers, per key. Every method must be deterministic.

use sluice_sdk::{Aggregator, Error, Params, Record, export_aggregator};

/// The plugin (it keeps no state of its own: the host keeps the accumulators).
pub struct Plugin;

impl Aggregator for Plugin {
    type Acc = i64;

    fn init(params: &Params) -> Result<Self, String> {
        params.allow_only(&[])?;
        Ok(Plugin)
    }

    fn add(&self, acc: &mut i64, record: &Record<'_>) -> Result<(), String> {
        let v: i64 = record
            .value_str()
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or("the value is not a decimal integer")?;
        *acc = acc.checked_add(v).ok_or("the sum overflows")?;
        Ok(())
    }

    fn merge(&self, acc: &mut i64, other: &i64) {
        *acc = acc.saturating_add(*other);
    }

    fn can_retract(&self) -> bool {
        true
    }

    fn retract(&self, acc: &mut i64, expired: &i64) -> Result<bool, Error> {
        *acc -= expired;
        Ok(true)
    }

    fn finish(&self, _key: &[u8], acc: &i64) -> Result<Vec<u8>, Error> {
        Ok(acc.to_string().into_bytes())
    }

    fn encode(&self, acc: &i64, out: &mut Vec<u8>) {
        out.extend_from_slice(&acc.to_le_bytes());
    }

    fn decode(&self, bytes: &[u8]) -> Result<i64, String> {
        Ok(i64::from_le_bytes(bytes.try_into().map_err(|_| "not 8 bytes")?))
    }
}

export_aggregator!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_summed_and_survive_encoding() {
        let sum = Plugin::init(&Params::default()).unwrap();
        let mut acc = 0;
        let batch = sluice_sdk::Batch::from_values(["2", "40", "x"]);
        let results: Vec<_> = batch.records().map(|r| sum.add(&mut acc, &r)).collect();
        assert!(results[2].is_err());
        assert_eq!(sum.finish(b"", &acc).unwrap(), b"42");
        let mut bytes = Vec::new();
        sum.encode(&acc, &mut bytes);
        assert_eq!(sum.decode(&bytes).unwrap(), 42);
    }
}
"#;
