// sluice.js: the thin helper a JavaScript plugin is written against (sluice issue #15).
//
// It gives the host's columnar batch (one byte buffer and end offsets, `bytes-column` in
// plugin.wit) as a record view, and builds the output the same way: values appended into one
// growing buffer, one call across the boundary per batch. It imports nothing from the
// component, so a plugin's logic runs under plain Node (`node --test`); the entry that
// `sluice plugin build` generates wires the host's imports in with `setHost`.

const utf8 = new TextDecoder('utf-8');
const utf8Strict = new TextDecoder('utf-8', { fatal: true });
const encoder = new TextEncoder();

// ---------------------------------------------------------------------------------------------
// Errors: each class is one case of the WIT `error` variant.

/// A passing failure (a busy downstream): the host retries the call on a fresh instance.
export class Retryable extends Error {
  constructor(message) {
    super(message);
    this.name = 'Retryable';
  }
}

/// The plugin cannot go on: the host stops the pipeline, naming the plugin and the batch.
export class Fatal extends Error {
  constructor(message) {
    super(message);
    this.name = 'Fatal';
  }
}

/// One record made the whole call fail: the host dead-letters it and calls again with the
/// rest. Prefer `out.reject(record, reason)`, which needs no second call.
export class BadRecord extends Error {
  constructor(record, reason) {
    super(reason);
    this.name = 'BadRecord';
    this.index = typeof record === 'number' ? record : record.index;
  }
}

/// The WIT `error` for anything a plugin threw: the three classes above map to their case,
/// anything else becomes `fatal` with its name, message and the first line of its stack.
export function toWitError(e) {
  if (e instanceof Retryable) return { tag: 'retryable', val: e.message };
  if (e instanceof Fatal) return { tag: 'fatal', val: e.message };
  if (e instanceof BadRecord) return { tag: 'bad-record', val: { index: e.index >>> 0, reason: e.message } };
  return { tag: 'fatal', val: describe(e) };
}

function describe(e) {
  if (!(e instanceof Error)) return `uncaught ${typeof e}: ${String(e)}`;
  const head = `${e.name}: ${e.message}`;
  const where = (e.stack || '').split('\n').map((l) => l.trim()).find((l) => l && !l.startsWith(head));
  return where ? `${head} (at ${where.replace(/^at /, '')})` : head;
}

// ---------------------------------------------------------------------------------------------
// The host's imports (log, counters, gauges). Natively they go to stderr and to `metrics`.

const native = {
  log(level, message) {
    if (level !== 'trace' && level !== 'debug') console.error(`[${level}] ${message}`);
  },
  counterAdd(name, delta) {
    metrics.counters.set(name, (metrics.counters.get(name) || 0) + Number(delta));
  },
  gaugeSet(name, value) {
    metrics.gauges.set(name, value);
  },
};
let host = native;

/// What `counterAdd` and `gaugeSet` recorded when run natively (for a plugin's own tests).
export const metrics = { counters: new Map(), gauges: new Map() };

/// Called by the generated component entry with the `sluice:plugin/host` import.
export function setHost(imports) {
  host = imports;
}

/// Log lines, into the host's log (tagged with the plugin, partition and batch).
export const log = {
  trace: (message) => host.log('trace', String(message)),
  debug: (message) => host.log('debug', String(message)),
  info: (message) => host.log('info', String(message)),
  warn: (message) => host.log('warn', String(message)),
  error: (message) => host.log('error', String(message)),
};

/// Adds `delta` to the plugin's counter `name` (names end in `_total`).
export function counterAdd(name, delta = 1) {
  host.counterAdd(name, BigInt(delta));
}

/// Sets the plugin's gauge `name` to `value`.
export function gaugeSet(name, value) {
  host.gaugeSet(name, Number(value));
}

// ---------------------------------------------------------------------------------------------
// Parameters.

/// The plugin's parameters from the pipeline file (strings by name).
export class Params {
  constructor(pairs = []) {
    this.map = new Map(pairs instanceof Map ? pairs : Array.isArray(pairs) ? pairs : Object.entries(pairs));
  }

  /// The value of `name`, or `fallback` when it is not given.
  get(name, fallback = undefined) {
    return this.map.has(name) ? this.map.get(name) : fallback;
  }

  /// The value of `name` as a non-negative integer, or `fallback`; throws naming the key.
  int(name, fallback) {
    const text = this.get(name);
    if (text === undefined) return fallback;
    if (!/^\d+$/.test(text)) throw new Error(`parameter ${name}: ${JSON.stringify(text)} is not a whole number`);
    return Number(text);
  }

  /// Throws naming the first parameter not in `known`.
  allowOnly(known) {
    for (const key of this.map.keys()) {
      if (!known.includes(key)) {
        const which = known.length ? `it takes ${known.join(', ')}` : 'it takes none';
        throw new Error(`unknown parameter ${JSON.stringify(key)}: ${which}`);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Columns and batches.

function asBytes(value) {
  if (value instanceof Uint8Array) return value;
  if (typeof value === 'string') return encoder.encode(value);
  // The component's bindings make the batch's arrays in another realm, where `instanceof`
  // does not see them: any byte view will do.
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  throw new TypeError(`a value must be a string or a Uint8Array, not ${typeof value}`);
}

/// Row `i` of a WIT `bytes-column`, as a view into its data (no copy).
function cell(column, i) {
  const start = i === 0 ? 0 : column.ends[i - 1];
  return column.data.subarray(start, column.ends[i]);
}

/// A column built from strings or byte arrays (for tests and receivers).
export function column(values) {
  const b = new ColumnBuilder();
  for (const v of values) b.push(v);
  return b.finish();
}

/// One record of a batch: its position, its value (a view, no copy) and its key.
export class Record {
  constructor(batch, index) {
    this.batch = batch;
    this.index = index;
  }

  /// The value's bytes, a view into the batch (no copy).
  get value() {
    return this.batch.value(this.index);
  }

  /// The value decoded as UTF-8 (invalid bytes become U+FFFD).
  get text() {
    return this.batch.text(this.index);
  }

  /// The key's bytes, or `undefined` when the record has no key.
  get key() {
    return this.batch.key(this.index);
  }

  /// The timestamp in milliseconds since the epoch (a BigInt), or `undefined`.
  get timestamp() {
    const ts = this.batch.wit.timestamps;
    return ts && ts.length ? ts[this.index] : undefined;
  }
}

function own(array, Type) {
  return array instanceof Type ? array : new Type(array);
}

/// A partition's records for one call: a view over the WIT `batch` the host sent.
export class Batch {
  constructor(wit) {
    this.wit = wit;
    // The component's bindings make these arrays in another realm, where every access is
    // slower: one copy per batch makes each record's access a plain one.
    this.data = own(wit.values.data, Uint8Array);
    this.ends = own(wit.values.ends, Uint32Array);
    this.length = this.ends.length;
  }

  /// A batch of `values` (strings or Uint8Arrays), with `keys` (same length, `undefined` for
  /// none) when given: for a plugin's tests.
  static from(values, keys = undefined) {
    const wit = { values: column(values), keys: undefined, timestamps: new BigInt64Array(0), headers: undefined };
    if (keys) {
      const present = new Uint8Array((keys.length + 7) >> 3);
      keys.forEach((k, i) => {
        if (k !== undefined && k !== null) present[i >> 3] |= 1 << (i & 7);
      });
      wit.keys = { column: column(keys.map((k) => (k === undefined || k === null ? '' : k))), present };
    }
    return new Batch(wit);
  }

  /// Value `i`'s bytes, a view into the batch (no copy).
  value(i) {
    return this.data.subarray(i === 0 ? 0 : this.ends[i - 1], this.ends[i]);
  }

  /// Value `i` decoded as UTF-8; invalid bytes become U+FFFD, or, with `strict`, throw a
  /// TypeError.
  text(i, strict = false) {
    return (strict ? utf8Strict : utf8).decode(this.value(i));
  }

  /// Key `i`'s bytes, or `undefined` when record `i` has none.
  key(i) {
    const keys = this.wit.keys;
    if (!keys || !(keys.present[i >> 3] & (1 << (i & 7)))) return undefined;
    return cell(keys.column, i);
  }

  /// Record `i`.
  record(i) {
    return new Record(this, i);
  }

  *[Symbol.iterator]() {
    for (let i = 0; i < this.length; i++) yield new Record(this, i);
  }
}

/// A growing column: values appended into one buffer that doubles when full.
export class ColumnBuilder {
  constructor(bytes = 4096, rows = 256) {
    this.data = new Uint8Array(bytes);
    this.ends = new Uint32Array(rows);
    this.used = 0;
    this.length = 0;
  }

  reserve(more) {
    if (this.used + more <= this.data.length) return;
    let size = this.data.length * 2;
    while (size < this.used + more) size *= 2;
    const data = new Uint8Array(size);
    data.set(this.data.subarray(0, this.used));
    this.data = data;
  }

  /// Appends one value: a string (written as UTF-8 straight into the buffer) or bytes.
  push(value) {
    this.write(value);
    this.end();
  }

  /// Appends bytes to the current value, which `end()` closes.
  write(value) {
    if (typeof value === 'string') {
      this.reserve(value.length * 3);
      this.used += encoder.encodeInto(value, this.data.subarray(this.used)).written;
    } else {
      const bytes = asBytes(value);
      this.reserve(bytes.length);
      this.data.set(bytes, this.used);
      this.used += bytes.length;
    }
  }

  /// Closes the current value at the buffer's end (after bytes were written in place).
  end() {
    if (this.length === this.ends.length) {
      const ends = new Uint32Array(this.ends.length * 2);
      ends.set(this.ends);
      this.ends = ends;
    }
    this.ends[this.length++] = this.used;
  }

  /// Row `i` (a view).
  get(i) {
    return this.data.subarray(i === 0 ? 0 : this.ends[i - 1], this.ends[i]);
  }

  /// The WIT `bytes-column` (views of the buffers, no copy).
  finish() {
    return { data: this.data.subarray(0, this.used), ends: this.ends.subarray(0, this.length) };
  }
}

// ---------------------------------------------------------------------------------------------
// What a transformation returns.

/// A transformation's output for one batch: kept values with the record each came from, and
/// rejected records with their reasons.
export class Output {
  constructor(input = undefined) {
    this.input = input;
    this.column = new ColumnBuilder();
    this.origins = new Uint32Array(256);
    this.rejected = [];
    this.passed = false;
  }

  /// Appends `value` (a string or bytes) as an output record that came from `record` (a
  /// Record or its index): it inherits that record's key, timestamp and headers.
  push(record, value) {
    this.column.write(value);
    this.pushEnd(typeof record === 'number' ? record : record.index);
  }

  pushEnd(index) {
    const n = this.column.length;
    if (n === this.origins.length) {
      const origins = new Uint32Array(n * 2);
      origins.set(this.origins);
      this.origins = origins;
    }
    this.origins[n] = index;
    this.column.end();
  }

  /// Appends an output value of exactly `size` bytes from `record`, written in place by
  /// `write(bytes)` into the output buffer (no allocation per record).
  pushWith(record, size, write) {
    const c = this.column;
    c.reserve(size);
    write(c.data.subarray(c.used, c.used + size));
    c.used += size;
    this.pushEnd(typeof record === 'number' ? record : record.index);
  }

  /// Rejects `record` (a Record or its index): the host sends it to the dead letters with
  /// `reason`; the batch goes on.
  reject(record, reason) {
    this.rejected.push({ index: typeof record === 'number' ? record : record.index, reason: String(reason) });
  }

  /// Passes the whole input through unchanged, with no per-record work. Nothing else may be
  /// pushed or rejected in the same call.
  passThrough() {
    this.passed = true;
  }

  /// The number of output records.
  get length() {
    return this.passed ? this.input.length : this.column.length;
  }

  /// Output value `i`'s bytes.
  value(i) {
    return this.passed ? this.input.value(i) : this.column.get(i);
  }

  /// The output values decoded as UTF-8 (for tests).
  texts() {
    const all = [];
    for (let i = 0; i < this.length; i++) all.push(utf8.decode(this.value(i)));
    return all;
  }

  /// The WIT `output` record.
  toWit() {
    if (this.passed) {
      if (this.column.length || this.rejected.length) {
        throw new Fatal('passThrough() cannot be mixed with push() or reject() in one call');
      }
      return { values: this.input.wit.values, origins: new Uint32Array(0), keys: undefined, rejected: [] };
    }
    return {
      values: this.column.finish(),
      origins: this.origins.subarray(0, this.column.length),
      keys: undefined,
      rejected: this.rejected,
    };
  }
}

/// The records a receiver's `poll` returns: values (and optional keys) appended in one buffer.
export class BatchBuilder {
  constructor() {
    this.column = new ColumnBuilder();
  }

  /// Appends one record's value (a string or bytes).
  push(value) {
    this.column.push(value);
  }

  get length() {
    return this.column.length;
  }

  /// The WIT `batch`.
  toWit() {
    return { values: this.column.finish(), keys: undefined, timestamps: new BigInt64Array(0), headers: undefined };
  }

  /// The records as a Batch (for tests).
  finish() {
    return new Batch(this.toWit());
  }
}

/// The context of a call (stream, partition, batch id, batch time, part); `Context.test()` for
/// a plugin's tests.
export const Context = {
  test(fields = {}) {
    return { stream: 'test', partition: 0, batchId: 0n, batchTimeMs: 0n, part: 0, ...fields };
  },
};

// ---------------------------------------------------------------------------------------------
// The exports of each world, made from the user's plugin class. Called by the generated entry;
// each turns a thrown error into the WIT error (see `toWitError`).

function make(Plugin, params) {
  return new Plugin(new Params(params));
}

function guard(call) {
  try {
    return call();
  } catch (e) {
    return { tag: 'err', val: toWitError(e) };
  }
}

function initWith(set, Plugin) {
  return (params) => {
    try {
      set(make(Plugin, params));
    } catch (e) {
      return { tag: 'err', val: e instanceof Error ? e.message : String(e) };
    }
  };
}

function ready(plugin) {
  if (!plugin) throw new Fatal('called before init');
  return plugin;
}

/// The `transform` export of world `transformer`: `Plugin` has `constructor(params)` and
/// `transform(ctx, batch, out)`.
export function transformer(Plugin) {
  let plugin;
  return {
    init: initWith((p) => (plugin = p), Plugin),
    transform: (ctx, input) =>
      guard(() => {
        const batch = new Batch(input);
        const out = new Output(batch);
        ready(plugin).transform(ctx, batch, out);
        return out.toWit();
      }),
  };
}

/// The `deliver` export of world `sink`: `Plugin` has `constructor(params)`, `write(ctx,
/// batch)` and `commit(stream, batchId)`.
export function sink(Plugin) {
  let plugin;
  return {
    init: initWith((p) => (plugin = p), Plugin),
    write: (ctx, input) => guard(() => void ready(plugin).write(ctx, new Batch(input))),
    commit: (stream, batchId) => guard(() => void ready(plugin).commit(stream, batchId)),
  };
}

/// The `source` export of world `receiver`: `Plugin` has `constructor(params)`,
/// `partitions()`, `open(partition, position)` and `poll(partition, maxRecords, maxBytes, out)`
/// returning `{ position, end }`.
export function receiver(Plugin) {
  let plugin;
  return {
    init: initWith((p) => (plugin = p), Plugin),
    partitions: () => ready(plugin).partitions() >>> 0,
    open: (partition, position) => guard(() => void ready(plugin).open(partition, position ?? undefined)),
    poll: (partition, maxRecords, maxBytes) =>
      guard(() => {
        const out = new BatchBuilder();
        const { position, end } = ready(plugin).poll(partition, maxRecords, maxBytes, out);
        return { records: out.toWit(), position: position ?? undefined, end: Boolean(end) };
      }),
  };
}

const ACC_TAG = 1;

function accIn(plugin, bytes) {
  if (bytes.length === 0 || bytes[0] !== ACC_TAG) {
    throw new Fatal('an accumulator the host sent was not written by this helper');
  }
  return plugin.decode(bytes.subarray(1));
}

function accOut(plugin, acc, out) {
  const body = asBytes(plugin.encode(acc));
  const tagged = new Uint8Array(body.length + 1);
  tagged[0] = ACC_TAG;
  tagged.set(body, 1);
  out.push(tagged);
}

/// The `aggregate` export of world `aggregator`: `Plugin` has `constructor(params)`, `zero()`
/// (the accumulator of no records), `add(acc, record)` returning the new accumulator (throw
/// to leave the record out, rejected with the message), `merge(a, b)`, optionally
/// `canRetract()` and `retract(acc, expired)` (the new accumulator, or `undefined` when no
/// records are left), `finish(key, acc)` (a string or bytes), `encode(acc)` (bytes) and
/// `decode(bytes)`.
export function aggregator(Plugin) {
  let plugin;
  const pairwise = (keys, left, right, retract) =>
    guard(() => {
      const p = ready(plugin);
      const out = new ColumnBuilder();
      for (let i = 0; i < keys.ends.length; i++) {
        const acc = accIn(p, cell(left, i));
        const other = accIn(p, cell(right, i));
        const next = retract ? p.retract(acc, other) : p.merge(acc, other);
        if (next === undefined) out.push(new Uint8Array(0));
        else accOut(p, next, out);
      }
      return out.finish();
    });
  return {
    init: initWith((p) => (plugin = p), Plugin),
    canRetract: () => Boolean(plugin && plugin.canRetract && plugin.canRetract()),
    add: (ctx, input) =>
      guard(() => {
        const p = ready(plugin);
        const batch = new Batch(input);
        const byKey = new Map();
        const rejected = [];
        for (let i = 0; i < batch.length; i++) {
          const key = batch.key(i) || new Uint8Array(0);
          const name = String.fromCharCode.apply(null, key);
          let entry = byKey.get(name);
          try {
            const acc = p.add(entry ? entry.acc : p.zero(), batch.record(i));
            if (entry) entry.acc = acc;
            else byKey.set(name, (entry = { key, acc }));
          } catch (e) {
            rejected.push({ index: i, reason: e instanceof Error ? e.message : String(e) });
          }
        }
        const keys = new ColumnBuilder();
        const accs = new ColumnBuilder();
        for (const { key, acc } of byKey.values()) {
          keys.push(key);
          accOut(p, acc, accs);
        }
        return { keys: keys.finish(), accs: accs.finish(), rejected };
      }),
    merge: (keys, left, right) => pairwise(keys, left, right, false),
    retract: (keys, acc, expired) => pairwise(keys, acc, expired, true),
    finish: (keys, accs) =>
      guard(() => {
        const p = ready(plugin);
        const out = new ColumnBuilder();
        for (let i = 0; i < keys.ends.length; i++) out.push(p.finish(cell(keys, i), accIn(p, cell(accs, i))));
        return out.finish();
      }),
  };
}
