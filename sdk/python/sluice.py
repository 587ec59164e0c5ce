"""sluice: the helper for sluice plugins written in Python (built with componentize-py).

A plugin is a class in ``plugin.py`` named ``Plugin``, made once per instance with the
pipeline's parameters and called once per batch (never once per record) with the batch as a
columnar view:

    import sluice

    class Plugin(sluice.Transform):
        def __init__(self, params: sluice.Params):
            params.allow_only([])

        def transform(self, ctx: sluice.Context, batch: sluice.Batch, out: sluice.Output):
            for record in batch:
                if not record.value:
                    out.reject(record, "empty value")
                else:
                    out.push(record, record.value.upper())

This module is plain Python: the plugin's logic and its tests run natively
(``python3 -m unittest``). The component's glue (``sluice_component.py``, imported only by
``app.py`` when ``sluice plugin build`` runs componentize-py) binds it to the WIT world.

Errors: raise ``Retryable`` (a passing failure: the host retries on a fresh instance),
``BadRecord`` (one record spoils the call: the host dead-letters it and calls again without it)
or ``Fatal`` (the pipeline stops). Any other exception is fatal too, and its message names the
exception, its text and the innermost frame (``ZeroDivisionError: division by zero (at
plugin.py:12 in transform)``).
"""

import sys
import traceback

__all__ = [
    "Aggregator", "BadRecord", "Batch", "BatchBuilder", "Context", "Fatal", "Output", "Params",
    "Poll", "Receiver", "Record", "Retryable", "Sink", "Transform", "counter_add", "describe",
    "gauge_set", "log",
]


# Errors ------------------------------------------------------------------------------------


class Retryable(Exception):
    """A passing failure (a busy downstream, a timeout): the host retries the same call on a
    fresh instance, with backoff, a bounded number of times."""


class Fatal(Exception):
    """The plugin cannot go on (a bad parameter, a broken invariant): the host stops the
    pipeline and names the plugin and the batch."""


class BadRecord(Exception):
    """One record made the whole call fail: the host dead-letters it and calls again with the
    rest. ``record`` is a ``Record`` or its index. Prefer ``Output.reject``, which needs no
    second call. In an aggregate's ``add`` it leaves just that record out."""

    def __init__(self, record, reason):
        super().__init__(reason)
        self.index = record if isinstance(record, int) else record.index
        self.reason = str(reason)


def describe(error):
    """The message a plugin's unexpected exception becomes: the traceback's last line (the
    exception's type and text) and the innermost frame as ``file:line in function``."""
    last = traceback.format_exception_only(type(error), error)[-1].strip()
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return last
    frame = frames[-1]
    name = frame.filename.replace("\\", "/").rsplit("/", 1)[-1]
    return f"{last} (at {name}:{frame.lineno} in {frame.name})"


# Host functions ------------------------------------------------------------------------------

LEVELS = ("trace", "debug", "info", "warn", "error")

# Set by sluice_component in a component; natively, lines go to stderr and numbers stay here.
_host = None
counters = {}
gauges = {}


def log(level, message):
    """Writes ``message`` into the host's log at ``level`` (one of ``LEVELS``), tagged with the
    plugin, partition and batch. Natively it goes to stderr."""
    if level not in LEVELS:
        raise ValueError(f"log level {level!r}: choose one of {', '.join(LEVELS)}")
    if _host is not None:
        _host.log(level, message)
    else:
        print(f"{level.upper()} {message}", file=sys.stderr)


def counter_add(name, delta=1):
    """Adds ``delta`` to the plugin's counter ``name`` (names end in ``_total``). Natively the
    counts are kept in ``sluice.counters``."""
    if _host is not None:
        _host.counter_add(name, delta)
    else:
        counters[name] = counters.get(name, 0) + delta


def gauge_set(name, value):
    """Sets the plugin's gauge ``name`` to ``value``. Natively kept in ``sluice.gauges``."""
    if _host is not None:
        _host.gauge_set(name, float(value))
    else:
        gauges[name] = float(value)


# Inputs ---------------------------------------------------------------------------------------


class Params(dict):
    """The plugin's parameters from the pipeline file, name to string value."""

    def allow_only(self, names):
        """Raises ``ValueError`` naming the first parameter not in ``names``."""
        for name in self:
            if name not in names:
                known = ", ".join(names) if names else "none"
                raise ValueError(f"unknown parameter {name!r} (this plugin takes: {known})")

    def parse_or(self, name, default, parse=int):
        """The parameter ``name`` read with ``parse``, or ``default`` when absent; a value
        ``parse`` refuses raises ``ValueError`` naming the parameter."""
        if name not in self:
            return default
        try:
            return parse(self[name])
        except ValueError as e:
            raise ValueError(f"parameter {name!r} = {self[name]!r}: {e}") from None


class Context:
    """Where and when a call happens: stream, partition, batch id, batch time (ms since the
    epoch) and the part (block) of the partition's batch."""

    __slots__ = ("stream", "partition", "batch_id", "batch_time_ms", "part")

    def __init__(self, stream="", partition=0, batch_id=0, batch_time_ms=0, part=0):
        self.stream = stream
        self.partition = partition
        self.batch_id = batch_id
        self.batch_time_ms = batch_time_ms
        self.part = part


class Record:
    """One record of a ``Batch``: a view, made when asked for, that copies nothing until a
    field is read."""

    __slots__ = ("_batch", "index")

    def __init__(self, batch, index):
        self._batch = batch
        self.index = index

    @property
    def value(self):
        """The value, as ``bytes``."""
        ends = self._batch.ends
        i = self.index
        return self._batch.data[ends[i - 1] if i else 0 : ends[i]]

    @property
    def view(self):
        """The value as a ``memoryview`` over the batch's buffer (no copy)."""
        ends = self._batch.ends
        i = self.index
        return memoryview(self._batch.data)[ends[i - 1] if i else 0 : ends[i]]

    @property
    def key(self):
        """The key, as ``bytes``, or ``None`` when the record has none."""
        return self._batch.key(self.index)

    @property
    def timestamp(self):
        """Milliseconds since the Unix epoch, or ``None`` when the batch carries none."""
        ts = self._batch.timestamps
        return ts[self.index] if ts else None

    @property
    def headers(self):
        """The headers as a list of ``(name, value)`` byte pairs."""
        return self._batch.headers_of(self.index)

    def __repr__(self):
        return f"Record({self.index}, {self.value!r})"


def _column_get(data, ends, i):
    return data[ends[i - 1] if i else 0 : ends[i]]


class Batch:
    """One partition's records for one call, columnar: every value back to back in ``data``
    and the end offset of each in ``ends``. Iterating gives ``Record`` views; ``values()``
    gives the values alone, the fastest way through."""

    __slots__ = ("data", "ends", "keys", "timestamps", "headers")

    def __init__(self, data=b"", ends=(), keys=None, timestamps=(), headers=None):
        self.data = data
        self.ends = ends
        # None, or (data, ends, present bitmap)
        self.keys = keys
        self.timestamps = timestamps
        # None, or (record_ends, (name data, name ends), (value data, value ends))
        self.headers = headers

    @classmethod
    def from_values(cls, values, keys=None, timestamps=()):
        """A batch of ``values`` (``bytes`` or ``str``, taken as UTF-8), for tests; ``keys`` has
        one entry per value (``None``: no key)."""
        data, ends = _column([_bytes(v) for v in values])
        batch_keys = None
        if keys is not None:
            present = bytearray((len(keys) + 7) // 8)
            for i, k in enumerate(keys):
                if k is not None:
                    present[i // 8] |= 1 << (i % 8)
            kdata, kends = _column([b"" if k is None else _bytes(k) for k in keys])
            batch_keys = (kdata, kends, bytes(present))
        return cls(data, ends, batch_keys, list(timestamps))

    def __len__(self):
        return len(self.ends)

    def __iter__(self):
        for i in range(len(self.ends)):
            yield Record(self, i)

    def __getitem__(self, i):
        if not 0 <= i < len(self.ends):
            raise IndexError(f"record {i} of a batch of {len(self.ends)}")
        return Record(self, i)

    def values(self):
        """Every value, in order, as ``bytes``."""
        data = self.data
        start = 0
        for end in self.ends:
            yield data[start:end]
            start = end

    def key(self, i):
        """Record ``i``'s key as ``bytes``, or ``None``."""
        if self.keys is None:
            return None
        kdata, kends, present = self.keys
        if not present[i >> 3] & (1 << (i & 7)):
            return None
        return _column_get(kdata, kends, i)

    def headers_of(self, i):
        """Record ``i``'s headers as ``(name, value)`` pairs."""
        if self.headers is None:
            return []
        record_ends, (ndata, nends), (vdata, vends) = self.headers
        start = record_ends[i - 1] if i else 0
        return [
            (_column_get(ndata, nends, h), _column_get(vdata, vends, h))
            for h in range(start, record_ends[i])
        ]


def _bytes(v):
    return v.encode() if isinstance(v, str) else bytes(v)


def _column(values):
    ends = []
    n = 0
    for v in values:
        n += len(v)
        ends.append(n)
    return b"".join(values), ends


class _Column:
    """A column being built: values appended to one buffer, their end offsets beside."""

    __slots__ = ("data", "ends")

    def __init__(self):
        self.data = bytearray()
        self.ends = []

    def push(self, value):
        self.data += value
        self.ends.append(len(self.data))

    def get(self, i):
        return bytes(_column_get(self.data, self.ends, i))

    def values(self):
        return [self.get(i) for i in range(len(self.ends))]


# Outputs --------------------------------------------------------------------------------------


class Output:
    """What a transformation returns for one call: values pushed with the record each came
    from, rejected records with their reasons, or the whole input passed through unchanged."""

    __slots__ = ("_input", "_values", "origins", "_keys", "_present", "rejected", "passed")

    def __init__(self, input=None):
        self._input = input
        self._values = _Column()
        self.origins = []
        self._keys = None
        self._present = None
        # (index, reason) pairs, in the order rejected.
        self.rejected = []
        self.passed = False

    def push(self, record, value, key=None):
        """Appends an output record ``value`` (``bytes``, ``bytearray``, ``memoryview`` or
        ``str``) that came from ``record`` (a ``Record`` or its index): it inherits that
        record's timestamp and headers, and its key unless ``key`` is given (once one push
        gives a key, output records pushed without one have none)."""
        if self.passed:
            raise Fatal("Output.push after Output.pass_through")
        index = record if isinstance(record, int) else record.index
        if isinstance(value, str):
            value = value.encode()
        n = len(self.origins)
        self._values.push(value)
        self.origins.append(index)
        if key is not None:
            if self._keys is None:
                self._keys = _Column()
                for _ in range(n):
                    self._keys.ends.append(0)
                self._present = bytearray((n + 8) // 8)
            self._set_key(n, key)
        elif self._keys is not None:
            self._set_key(n, None)

    def _set_key(self, n, key):
        while len(self._present) * 8 <= n:
            self._present.append(0)
        if key is None:
            self._keys.ends.append(len(self._keys.data))
        else:
            self._keys.push(_bytes(key))
            self._present[n >> 3] |= 1 << (n & 7)

    def reject(self, record, reason):
        """Rejects ``record`` (a ``Record`` or its index): the host sends it to the dead letters
        with ``reason``; the rest of the call goes on."""
        index = record if isinstance(record, int) else record.index
        self.rejected.append((index, str(reason)))

    def pass_through(self):
        """Outputs the whole input as it came, with no work per record (no push, no reject)."""
        if self.origins or self.rejected:
            raise Fatal("Output.pass_through after push or reject")
        self.passed = True

    def values(self):
        """The output values as a list of ``bytes`` (for tests)."""
        if self.passed:
            return list(self._input.values()) if self._input is not None else []
        return self._values.values()

    def keys(self):
        """The output keys (``None`` where absent), or ``None`` when no push gave one."""
        if self._keys is None:
            return None
        return [
            self._keys.get(i) if self._present[i >> 3] & (1 << (i & 7)) else None
            for i in range(len(self.origins))
        ]

    def __len__(self):
        return len(self._input) if self.passed else len(self.origins)


class BatchBuilder:
    """The records a receiver's ``poll`` returns, built one ``push`` at a time."""

    __slots__ = ("_values", "_keys", "_present", "timestamps")

    def __init__(self):
        self._values = _Column()
        self._keys = None
        self._present = None
        self.timestamps = []

    def push(self, value, key=None, timestamp=None):
        """Appends a record; ``timestamp`` (ms since the epoch) must be given for all records
        or for none."""
        n = len(self._values.ends)
        self._values.push(_bytes(value))
        if key is not None and self._keys is None:
            self._keys = _Column()
            self._keys.ends.extend([0] * n)
            self._present = bytearray((n + 8) // 8)
        if self._keys is not None:
            while len(self._present) * 8 <= n:
                self._present.append(0)
            if key is None:
                self._keys.ends.append(len(self._keys.data))
            else:
                self._keys.push(_bytes(key))
                self._present[n >> 3] |= 1 << (n & 7)
        if timestamp is not None:
            self.timestamps.append(int(timestamp))

    def __len__(self):
        return len(self._values.ends)

    def values(self):
        """The values pushed so far, as a list of ``bytes``."""
        return self._values.values()

    def finish(self):
        """The records as a ``Batch``."""
        keys = None
        if self._keys is not None:
            keys = (bytes(self._keys.data), self._keys.ends, bytes(self._present))
        return Batch(bytes(self._values.data), self._values.ends, keys, self.timestamps)


class Poll:
    """What a receiver's ``poll`` says besides its records: the position after the last record
    (a string handed back to ``open`` on a restart; ``None``: cannot be replayed) and whether
    the partition has ended for good."""

    __slots__ = ("position", "end")

    def __init__(self, position=None, end=False):
        self.position = position
        self.end = end


# The plugin kinds -----------------------------------------------------------------------------


class Transform:
    """World ``transformer``. ``__init__(params)`` is called once per fresh instance (raise
    ``ValueError`` naming a wrong parameter); ``transform`` once per block of a partition's
    batch."""

    def __init__(self, params):
        params.allow_only([])

    def transform(self, ctx, batch, out):
        """Fills ``out`` (an ``Output``) from ``batch``."""
        raise NotImplementedError


class Sink:
    """World ``sink``: ``write`` per partition once per block of a batch, then ``commit`` once
    the batch is closed (again after a replay, where it must do no harm)."""

    def __init__(self, params):
        params.allow_only([])

    def write(self, ctx, batch):
        """Writes (stages) one block of records; nothing need be visible before ``commit``."""
        raise NotImplementedError

    def commit(self, stream, batch_id):
        """Makes batch ``batch_id`` visible."""
        raise NotImplementedError


class Receiver:
    """World ``receiver``: a source the host polls."""

    def __init__(self, params):
        params.allow_only([])

    def partitions(self):
        """How many partitions the source has; called once after ``__init__``."""
        return 1

    def open(self, partition, position):
        """Start reading ``partition`` at ``position`` (a string ``poll`` returned, or ``None``
        for the beginning)."""
        raise NotImplementedError

    def poll(self, partition, max_records, max_bytes, out):
        """Pushes the records available now (at most ``max_records``, about ``max_bytes``)
        into ``out`` (a ``BatchBuilder``) and returns a ``Poll``."""
        raise NotImplementedError


class Aggregator:
    """World ``aggregator`` (``reduce-by-key-and-window``'s ``aggregate-plugin``): per key an
    accumulator, any Python value, kept by the host as the bytes ``encode`` makes. Every method
    must be deterministic and depend only on its arguments and the parameters."""

    can_retract = False

    def __init__(self, params):
        params.allow_only([])

    def zero(self):
        """The accumulator of no records."""
        raise NotImplementedError

    def add(self, acc, record):
        """Returns ``acc`` with ``record`` added; raise ``BadRecord`` (or ``ValueError``) to
        leave the record out (the host dead-letters it with the message)."""
        raise NotImplementedError

    def merge(self, acc, other):
        """Returns ``acc`` and ``other`` (the same key's) merged: associative, commutative."""
        raise NotImplementedError

    def retract(self, acc, expired):
        """Returns ``acc`` without ``expired`` (merged into it earlier), or ``None`` when no
        records are left. Only called when ``can_retract`` is true."""
        raise Fatal("this aggregate cannot retract")

    def finish(self, key, acc):
        """The key's output value (``bytes`` or ``str``) from its accumulator."""
        raise NotImplementedError

    def encode(self, acc):
        """The accumulator's bytes (never empty: empty bytes stand for no records)."""
        raise NotImplementedError

    def decode(self, data):
        """The accumulator ``encode`` wrote as ``data``."""
        raise NotImplementedError

    # Whole-call helpers, the same natively and in a component.

    def add_batch(self, batch):
        """Groups ``batch`` by key (no key counts as the empty key) and adds each record to its
        key's accumulator: returns ``({key: acc}, [(index, reason)])``."""
        accs = {}
        rejected = []
        zero = self.zero
        add = self.add
        for record in batch:
            key = record.key or b""
            acc = accs[key] if key in accs else zero()
            try:
                accs[key] = add(acc, record)
            except (BadRecord, ValueError) as e:
                rejected.append((record.index, getattr(e, "reason", None) or str(e)))
        return accs, rejected
