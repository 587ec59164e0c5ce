//! The JavaScript projects `sluice plugin new --lang js` writes: per plugin kind an `app.js`
//! (the plugin class, importing only the helper `sluice.js`) and its `app.test.js`, run
//! natively by `node --test`. Each does what the Rust template of the same kind does.
//!
//! `NAME` in a template is replaced by the plugin's name.

use super::Kind;

/// The template's `app.js`, `app.test.js`, manifest description and README usage for `kind`.
pub fn files(kind: Kind, name: &str) -> (String, String, &'static str, String) {
    let (app, test, description, usage) = match kind {
        Kind::Transform => (
            TRANSFORM_APP,
            TRANSFORM_TEST,
            "Upper-cases every value; rejects empty values.",
            TRANSFORM_USAGE,
        ),
        Kind::Sink => (
            SINK_APP,
            SINK_TEST,
            "Counts each batch's records and logs the count when the batch commits.",
            SINK_USAGE,
        ),
        Kind::Receiver => (
            RECEIVER_APP,
            RECEIVER_TEST,
            "Counts from 0 to `count` (default 10) on one partition, then ends.",
            RECEIVER_USAGE,
        ),
        Kind::Aggregate => (
            AGGREGATE_APP,
            AGGREGATE_TEST,
            "Aggregate: the sum of the values, as decimal integers, per key.",
            AGGREGATE_USAGE,
        ),
    };
    (
        app.replace("NAME", name),
        test.replace("NAME", name),
        description,
        README
            .replace("USAGE", usage)
            .replace("KIND", &kind.to_string())
            .replace("NAME", name),
    )
}

const README: &str = r#"# NAME

A [sluice](https://example.invalid/sluice) plugin (kind: KIND), written in JavaScript.

    node --test                  # the plugin's logic, natively (app.test.js)
    sluice plugin build          # builds NAME.wasm here (componentize-js, SpiderMonkey inside)
    sluice plugin check NAME.wasm

`app.js` holds the plugin and imports only `sluice.js`, the helper (a record view over the
columnar batch, an output builder, `log`, `Retryable`/`BadRecord`/`Fatal`). `sluice plugin
build` generates the component's entry (`.sluice/entry.js`), which wires in the host's imports;
`wit/plugin.wit` is the contract it is built against.

USAGE
Put this directory on a pipeline's plugin search path, beside the first-party plugins:

    plugins = ["./NAME", "$SLUICE_PLUGINS"]     # in pipeline.toml; first match wins

or copy `NAME.wasm` and `NAME.toml` into a plugin directory.
"#;

const TRANSFORM_USAGE: &str = r#"Run the built component on a few records, as the pipeline would:

    sluice plugin test NAME.wasm --text hello --text "" --input more-records.txt
    # stdout: HELLO                               (one output value a line)
    # stderr: reject record 1 "": empty value     (then a summary line)
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

const TRANSFORM_APP: &str = r#"// NAME: a sluice transformation, called once per partition per batch (once per block).

/// The plugin; one instance per fresh component instance.
export default class Plugin {
  /// Called once with the parameters (a `Params`); throw to refuse them, naming the key.
  constructor(params) {
    params.allowOnly([]);
  }

  /// `input` is a `Batch` (a view over the columnar records); `out` collects the output.
  transform(ctx, input, out) {
    for (let i = 0; i < input.length; i++) {
      const value = input.value(i); // a view into the batch: no copy
      if (value.length === 0) {
        // A rejected record goes to the dead letters with the reason; the batch goes on.
        out.reject(i, 'empty value');
        continue;
      }
      // Written straight into the output buffer: no allocation per record.
      out.pushWith(i, value.length, (buf) => {
        for (let j = 0; j < value.length; j++) {
          const b = value[j];
          buf[j] = b >= 0x61 && b <= 0x7a ? b - 0x20 : b;
        }
      });
    }
  }
}
"#;

const TRANSFORM_TEST: &str = r#"import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Batch, Context, Output, Params } from './sluice.js';
import Plugin from './app.js';

test('values are upper-cased and empty ones rejected', () => {
  const plugin = new Plugin(new Params());
  const input = Batch.from(['hello', '', 'World']);
  const out = new Output(input);
  plugin.transform(Context.test(), input, out);
  assert.deepEqual(out.texts(), ['HELLO', 'WORLD']);
  assert.deepEqual(out.rejected, [{ index: 1, reason: 'empty value' }]);
});

test('unknown parameters are refused', () => {
  assert.throws(() => new Plugin(new Params({ nope: '1' })), /nope/);
});
"#;

const SINK_APP: &str = r#"// NAME: a sluice sink. Each batch reaches it in two phases: `write` per partition (once per
// block), then `commit` once every write is done.
import { log } from './sluice.js';

/// The plugin's state: the records written since the last commit.
export default class Plugin {
  constructor(params) {
    params.allowOnly([]);
    this.pending = 0;
  }

  write(ctx, input) {
    // Nothing need be visible before `commit`; a real sink stages its output here.
    this.pending += input.length;
  }

  commit(stream, batchId) {
    // Called again with the same id after a replay: key the output by the batch id.
    log.info(`batch ${batchId} of stream ${stream}: ${this.pending} records`);
    this.pending = 0;
  }
}
"#;

const SINK_TEST: &str = r#"import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Batch, Context, Params } from './sluice.js';
import Plugin from './app.js';

test('a commit takes what was written', () => {
  const sink = new Plugin(new Params());
  sink.write(Context.test(), Batch.from(['a', 'b']));
  sink.write(Context.test(), Batch.from(['c']));
  assert.equal(sink.pending, 3);
  sink.commit('events', 0n);
  assert.equal(sink.pending, 0);
});
"#;

const RECEIVER_APP: &str = r#"// NAME: a sluice receiver (a source the host polls). It counts from 0 to `count` on one
// partition, then ends; its position is the next number, so a restart goes on from there.
import { Fatal } from './sluice.js';

export default class Plugin {
  constructor(params) {
    params.allowOnly(['count']);
    this.count = params.int('count', 10);
    this.next = 0;
  }

  partitions() {
    return 1;
  }

  /// `position` is what `poll` returned before, or `undefined` for the beginning.
  open(partition, position) {
    if (position === undefined) {
      this.next = 0;
    } else if (/^\d+$/.test(position)) {
      this.next = Number(position);
    } else {
      throw new Fatal(`position ${JSON.stringify(position)} is not a number`);
    }
  }

  /// Appends at most `maxRecords` records to `out`; returns the position after them and
  /// whether the partition has ended.
  poll(partition, maxRecords, maxBytes, out) {
    while (this.next < this.count && out.length < maxRecords) {
      out.push(String(this.next));
      this.next += 1;
    }
    return { position: String(this.next), end: this.next === this.count };
  }
}
"#;

const RECEIVER_TEST: &str = r#"import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BatchBuilder, Params } from './sluice.js';
import Plugin from './app.js';

test('it counts and resumes at its position', () => {
  const r = new Plugin(new Params({ count: '5' }));
  r.open(0, undefined);
  let out = new BatchBuilder();
  let poll = r.poll(0, 3, 1 << 20, out);
  assert.equal(out.length, 3);
  assert.deepEqual(poll, { position: '3', end: false });

  const again = new Plugin(new Params({ count: '5' }));
  again.open(0, poll.position);
  out = new BatchBuilder();
  poll = again.poll(0, 100, 1 << 20, out);
  const batch = out.finish();
  assert.deepEqual([batch.text(0), batch.text(1)], ['3', '4']);
  assert.equal(poll.end, true);
});
"#;

const AGGREGATE_APP: &str = r#"// NAME: a sluice aggregate for `reduce-by-key-and-window` (`aggregate-plugin`): the sum of
// the values, as decimal integers, per key. Every method must be deterministic.

const MIN = -(2n ** 63n);
const MAX = 2n ** 63n - 1n;

/// The plugin (it keeps no state of its own: the host keeps the accumulators, as bytes).
export default class Plugin {
  constructor(params) {
    params.allowOnly([]);
  }

  /// The accumulator of no records.
  zero() {
    return 0n;
  }

  /// Adds one record; throw to leave it out (it is rejected with the message).
  add(acc, record) {
    const text = record.text.trim();
    if (!/^[+-]?\d+$/.test(text)) throw new Error('the value is not a decimal integer');
    const sum = acc + BigInt(text);
    if (sum < MIN || sum > MAX) throw new Error('the sum overflows');
    return sum;
  }

  merge(acc, other) {
    const sum = acc + other;
    return sum < MIN ? MIN : sum > MAX ? MAX : sum;
  }

  canRetract() {
    return true;
  }

  /// `acc` without `expired` (return `undefined` when no records are left).
  retract(acc, expired) {
    return acc - expired;
  }

  finish(key, acc) {
    return acc.toString();
  }

  encode(acc) {
    const bytes = new Uint8Array(8);
    new DataView(bytes.buffer).setBigInt64(0, acc, true);
    return bytes;
  }

  decode(bytes) {
    if (bytes.length !== 8) throw new Error('not 8 bytes');
    return new DataView(bytes.buffer, bytes.byteOffset, 8).getBigInt64(0, true);
  }
}
"#;

const AGGREGATE_TEST: &str = r#"import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Batch, Params } from './sluice.js';
import Plugin from './app.js';

test('values are summed and survive encoding', () => {
  const sum = new Plugin(new Params());
  let acc = sum.zero();
  const batch = Batch.from(['2', '40', 'x']);
  acc = sum.add(acc, batch.record(0));
  acc = sum.add(acc, batch.record(1));
  assert.throws(() => sum.add(acc, batch.record(2)), /not a decimal integer/);
  assert.equal(sum.finish(new Uint8Array(0), acc), '42');
  assert.equal(sum.decode(sum.encode(acc)), 42n);
  assert.equal(sum.retract(acc, 40n), 2n);
});
"#;
