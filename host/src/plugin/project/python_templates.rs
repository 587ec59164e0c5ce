//! The Python projects `sluice plugin new --lang python` writes: one template per plugin kind
//! (`--kind`), each a directory that builds with `sluice plugin build` (componentize-py) and
//! passes its own `python3 -m unittest` natively.
//!
//! Layout: `plugin.py` (the user's logic: class `Plugin`, against the helper `sluice.py`),
//! `test_plugin.py` (its tests), `app.py` (componentize-py's entry: binds `Plugin` to the WIT
//! world through `sluice_component.py`; tests never import it), `wit/plugin.wit`, `NAME.toml`.
//! `NAME` in a template is replaced by the plugin's name.

use super::Kind;

/// The helper module every Python plugin imports (record view, output builder, errors).
pub const HELPER: &str = include_str!("../../../../sdk/python/sluice.py");

/// The glue between the helper and componentize-py's bindings, imported only by `app.py`.
pub const GLUE: &str = include_str!("../../../../sdk/python/sluice_component.py");

/// The template's `plugin.py`, `test_plugin.py`, `app.py`, manifest description and README
/// for `kind`.
pub fn files(kind: Kind, name: &str) -> [(&'static str, String); 4] {
    let (plugin, test, usage) = match kind {
        Kind::Transform => (TRANSFORM_PLUGIN, TRANSFORM_TEST, TRANSFORM_USAGE),
        Kind::Sink => (SINK_PLUGIN, SINK_TEST, SINK_USAGE),
        Kind::Receiver => (RECEIVER_PLUGIN, RECEIVER_TEST, RECEIVER_USAGE),
        Kind::Aggregate => (AGGREGATE_PLUGIN, AGGREGATE_TEST, AGGREGATE_USAGE),
    };
    [
        ("plugin.py", plugin.replace("NAME", name)),
        ("test_plugin.py", test.replace("NAME", name)),
        ("app.py", app(kind.world())),
        (
            "README.md",
            README
                .replace("USAGE", usage)
                .replace("KIND", &kind.to_string())
                .replace("DESCRIPTION", description(kind))
                .replace("NAME", name),
        ),
    ]
}

/// The manifest description of a template of `kind`.
pub fn description(kind: Kind) -> &'static str {
    match kind {
        Kind::Transform => "Upper-cases every value; rejects empty values.",
        Kind::Sink => "Counts each batch's records and logs the count when the batch commits.",
        Kind::Receiver => "Counts from 0 to `count` (default 10) on one partition, then ends.",
        Kind::Aggregate => "Aggregate: the sum of the values, as decimal integers, per key.",
    }
}

/// `app.py` for a plugin of WIT world `world`: `sluice plugin build` reads the world back from
/// the `sluice_component.WORLD(` call.
pub fn app(world: &str) -> String {
    let export = match world {
        "transformer" => "Transform",
        "sink" => "Deliver",
        "receiver" => "Source",
        _ => "Aggregate",
    };
    format!(
        r#""""componentize-py's entry module (`sluice plugin build`): binds plugin.Plugin to the WIT
world `{world}`. The plugin's tests never import it."""

import plugin
import sluice_component

{export} = sluice_component.{world}(plugin.Plugin)
"#
    )
}

const README: &str = r#"# NAME

A [sluice](https://example.invalid/sluice) plugin (kind: KIND), written in Python: DESCRIPTION

    python3 -m unittest          # the plugin's logic, natively (test_plugin.py)
    sluice plugin build          # builds NAME.wasm here with componentize-py (CPython inside)
    sluice plugin check NAME.wasm

The logic is `plugin.py` (class `Plugin`), written against `sluice.py`, the helper: a batch is
a columnar view (`for record in batch`: `record.value`, `record.key`, `record.index`), a
transformation fills an `Output` (`push(record, value)`, `reject(record, reason)`,
`pass_through()`), and every call handles a whole batch. Raise `sluice.Retryable`,
`sluice.BadRecord` or `sluice.Fatal` to fail a call; any other exception is fatal, with its last
traceback line and `file:line` in the message. `app.py`, `sluice_component.py` and `wit/` are
the component's glue: leave them as they are.

USAGE
Put this directory on a pipeline's plugin search path, beside the first-party plugins:

    plugins = ["./NAME", "$SLUICE_PLUGINS"]     # in pipeline.toml; first match wins

or copy `NAME.wasm` and `NAME.toml` into a plugin directory.
"#;

const TRANSFORM_USAGE: &str = r#"Run the built component on a few records, as the pipeline would:

    sluice plugin test NAME.wasm --text hello --text "" --input more-records.txt
    # stdout: HELLO                               (one output value a line)
    # stderr: reject record 1 "": empty value     (then a summary line)

`sluice plugin test` exits non-zero when the plugin raises or traps, naming the plugin and its
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

const TRANSFORM_PLUGIN: &str = r##""""NAME: a sluice transformation, called once per block of a partition's batch (never once
per record)."""

import sluice


class Plugin(sluice.Transform):
    """Upper-cases every value; rejects empty values."""

    def __init__(self, params):
        # Refuse parameters this plugin does not know, naming them.
        params.allow_only([])

    def transform(self, ctx, batch, out):
        for record in batch:
            value = record.value
            if not value:
                # A rejected record goes to the dead letters with the reason; the call goes on.
                out.reject(record, "empty value")
            else:
                out.push(record, value.upper())
"##;

const TRANSFORM_TEST: &str = r##""""NAME's logic, run natively: python3 -m unittest"""

import unittest

import sluice
from plugin import Plugin


class PluginTest(unittest.TestCase):
    def test_values_are_upper_cased_and_empty_ones_rejected(self):
        plugin = Plugin(sluice.Params())
        batch = sluice.Batch.from_values(["hello", "", "World"])
        out = sluice.Output(batch)
        plugin.transform(sluice.Context(), batch, out)
        self.assertEqual(out.values(), [b"HELLO", b"WORLD"])
        self.assertEqual(out.origins, [0, 2])
        self.assertEqual(out.rejected, [(1, "empty value")])

    def test_unknown_parameters_are_refused(self):
        with self.assertRaises(ValueError):
            Plugin(sluice.Params(nope="1"))


if __name__ == "__main__":
    unittest.main()
"##;

const SINK_PLUGIN: &str = r##""""NAME: a sluice sink. Each batch reaches it in two phases: `write` per partition (once per
block), then `commit` once every write is done."""

import sluice


class Plugin(sluice.Sink):
    """Counts each batch's records and logs the count when the batch commits."""

    def __init__(self, params):
        params.allow_only([])
        self.pending = 0

    def write(self, ctx, batch):
        # Nothing need be visible before `commit`; a real sink stages its output here.
        self.pending += len(batch)

    def commit(self, stream, batch_id):
        # Called again with the same id after a replay: key the output by the batch id.
        sluice.log("info", f"batch {batch_id} of stream {stream}: {self.pending} records")
        self.pending = 0
"##;

const SINK_TEST: &str = r##""""NAME's logic, run natively: python3 -m unittest"""

import unittest

import sluice
from plugin import Plugin


class PluginTest(unittest.TestCase):
    def test_a_commit_takes_what_was_written(self):
        sink = Plugin(sluice.Params())
        sink.write(sluice.Context(), sluice.Batch.from_values(["a", "b"]))
        sink.write(sluice.Context(), sluice.Batch.from_values(["c"]))
        self.assertEqual(sink.pending, 3)
        sink.commit("events", 0)
        self.assertEqual(sink.pending, 0)


if __name__ == "__main__":
    unittest.main()
"##;

const RECEIVER_PLUGIN: &str = r##""""NAME: a sluice receiver (a source the host polls). It counts from 0 to `count` on one
partition, then ends; its position is the next number, so a restart goes on from there."""

import sluice


class Plugin(sluice.Receiver):
    """Counts from 0 to `count` (default 10) on one partition, then ends."""

    def __init__(self, params):
        params.allow_only(["count"])
        self.count = params.parse_or("count", 10)
        self.next = 0

    def partitions(self):
        return 1

    def open(self, partition, position):
        if position is None:
            self.next = 0
        elif position.isdigit():
            self.next = int(position)
        else:
            raise sluice.Fatal(f"position {position!r} is not a number")

    def poll(self, partition, max_records, max_bytes, out):
        while self.next < self.count and len(out) < max_records:
            out.push(str(self.next))
            self.next += 1
        return sluice.Poll(position=str(self.next), end=self.next == self.count)
"##;

const RECEIVER_TEST: &str = r##""""NAME's logic, run natively: python3 -m unittest"""

import unittest

import sluice
from plugin import Plugin


class PluginTest(unittest.TestCase):
    def test_it_counts_and_resumes_at_its_position(self):
        r = Plugin(sluice.Params(count="5"))
        r.open(0, None)
        out = sluice.BatchBuilder()
        poll = r.poll(0, 3, 1 << 20, out)
        self.assertEqual(len(out), 3)
        self.assertEqual(poll.position, "3")
        self.assertFalse(poll.end)

        again = Plugin(sluice.Params(count="5"))
        again.open(0, poll.position)
        out = sluice.BatchBuilder()
        poll = again.poll(0, 100, 1 << 20, out)
        self.assertEqual(out.values(), [b"3", b"4"])
        self.assertTrue(poll.end)

    def test_a_bad_count_is_refused(self):
        with self.assertRaises(ValueError):
            Plugin(sluice.Params(count="many"))


if __name__ == "__main__":
    unittest.main()
"##;

const AGGREGATE_PLUGIN: &str = r##""""NAME: a sluice aggregate for `reduce-by-key-and-window` (`aggregate-plugin`): the sum of the
values, as decimal integers, per key. Every method must be deterministic."""

import struct

import sluice


class Plugin(sluice.Aggregator):
    """The sum per key; the accumulator is an int, kept by the host as 8 bytes."""

    can_retract = True

    def __init__(self, params):
        params.allow_only([])

    def zero(self):
        return 0

    def add(self, acc, record):
        try:
            value = int(record.value.strip(), 10)
        except ValueError:
            raise sluice.BadRecord(record, "the value is not a decimal integer") from None
        total = acc + value
        if not -(2**63) <= total < 2**63:
            raise sluice.BadRecord(record, "the sum overflows")
        return total

    def merge(self, acc, other):
        return max(-(2**63), min(2**63 - 1, acc + other))

    def retract(self, acc, expired):
        return acc - expired

    def finish(self, key, acc):
        return str(acc)

    def encode(self, acc):
        return struct.pack("<q", acc)

    def decode(self, data):
        return struct.unpack("<q", data)[0]
"##;

const AGGREGATE_TEST: &str = r##""""NAME's logic, run natively: python3 -m unittest"""

import unittest

import sluice
from plugin import Plugin


class PluginTest(unittest.TestCase):
    def test_values_are_summed_per_key_and_survive_encoding(self):
        agg = Plugin(sluice.Params())
        batch = sluice.Batch.from_values(["2", "40", "x", "5"], keys=["a", "a", "a", None])
        accs, rejected = agg.add_batch(batch)
        self.assertEqual(accs, {b"a": 42, b"": 5})
        self.assertEqual(rejected, [(2, "the value is not a decimal integer")])
        self.assertEqual(agg.finish(b"a", agg.decode(agg.encode(accs[b"a"]))), "42")

    def test_a_retract_takes_out_what_a_merge_put_in(self):
        agg = Plugin(sluice.Params())
        self.assertEqual(agg.retract(agg.merge(40, 2), 2), 40)


if __name__ == "__main__":
    unittest.main()
"##;
