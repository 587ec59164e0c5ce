"""The glue between a Python plugin (``plugin.Plugin``, written against ``sluice``) and the WIT
world it is built for. Only ``app.py`` imports it, when ``sluice plugin build`` runs
componentize-py; the plugin's tests never do (the ``wit_world`` bindings exist only there).

Each function returns the class componentize-py exports for one WIT interface. The plugin
instance lives in this module (one per component instance); every export catches the plugin's
exceptions and returns them as the WIT error they stand for.
"""

import sluice
from componentize_py_types import Err
from wit_world.imports import host, types

_LEVELS = {name: getattr(host.Level, name.upper()) for name in sluice.LEVELS}


class _Host:
    """The host functions, as ``sluice`` calls them."""

    @staticmethod
    def log(level, message):
        host.log(_LEVELS[level], message)

    @staticmethod
    def counter_add(name, delta):
        host.counter_add(name, delta)

    @staticmethod
    def gauge_set(name, value):
        host.gauge_set(name, value)


sluice._host = _Host
_state = {}


def _plugin():
    plugin = _state.get("plugin")
    if plugin is None:
        raise Err(types.Error_Fatal("the plugin was called before init"))
    return plugin


def _init(plugin_class, params):
    try:
        _state["plugin"] = plugin_class(sluice.Params(params))
    except Exception as e:  # noqa: BLE001 - every failure of init is the plugin's message
        message = str(e) if isinstance(e, (ValueError, sluice.Fatal)) else sluice.describe(e)
        raise Err(message) from None


def _error(e):
    """The WIT error a plugin's exception stands for."""
    if isinstance(e, Err):
        return e
    if isinstance(e, sluice.Retryable):
        return Err(types.Error_Retryable(str(e)))
    if isinstance(e, sluice.BadRecord):
        return Err(types.Error_BadRecord(types.BadRecord(e.index, e.reason)))
    if isinstance(e, sluice.Fatal):
        return Err(types.Error_Fatal(str(e)))
    return Err(types.Error_Fatal(sluice.describe(e)))


def _batch(b):
    keys = None
    if b.keys is not None:
        keys = (b.keys.column.data, b.keys.column.ends, b.keys.present)
    headers = None
    if b.headers is not None:
        h = b.headers
        headers = (h.record_ends, (h.names.data, h.names.ends), (h.values.data, h.values.ends))
    return sluice.Batch(b.values.data, b.values.ends, keys, b.timestamps, headers)


def _context(c):
    return sluice.Context(c.stream, c.partition, c.batch_id, c.batch_time_ms, c.part)


def _column(values):
    data, ends = sluice._column(values)
    return types.BytesColumn(data, ends)


def _keys(column, present):
    return types.Keys(types.BytesColumn(bytes(column.data), column.ends), bytes(present))


def _output(out, input):
    rejected = [types.BadRecord(i, r) for i, r in out.rejected]
    if out.passed:
        return types.Output(input.values, [], None, [])
    keys = None if out._keys is None else _keys(out._keys, out._present)
    values = types.BytesColumn(bytes(out._values.data), out._values.ends)
    return types.Output(values, out.origins, keys, rejected)


def transformer(plugin_class):
    """The ``transform`` export for ``plugin_class`` (a ``sluice.Transform``)."""
    from wit_world import exports

    class Transform(exports.Transform):
        def init(self, params):
            _init(plugin_class, params)

        def transform(self, ctx, input):
            try:
                batch = _batch(input)
                out = sluice.Output(batch)
                _plugin().transform(_context(ctx), batch, out)
                return _output(out, input)
            except BaseException as e:  # noqa: BLE001 - every failure becomes a WIT error
                raise _error(e) from None

    return Transform


def sink(plugin_class):
    """The ``deliver`` export for ``plugin_class`` (a ``sluice.Sink``)."""
    from wit_world import exports

    class Deliver(exports.Deliver):
        def init(self, params):
            _init(plugin_class, params)

        def write(self, ctx, input):
            try:
                _plugin().write(_context(ctx), _batch(input))
            except BaseException as e:  # noqa: BLE001
                raise _error(e) from None

        def commit(self, stream, batch_id):
            try:
                _plugin().commit(stream, batch_id)
            except BaseException as e:  # noqa: BLE001
                raise _error(e) from None

    return Deliver


def receiver(plugin_class):
    """The ``source`` export for ``plugin_class`` (a ``sluice.Receiver``)."""
    from wit_world import exports
    from wit_world.exports import source

    class Source(exports.Source):
        def init(self, params):
            _init(plugin_class, params)

        def partitions(self):
            return _state["plugin"].partitions() if "plugin" in _state else 0

        def open(self, partition, position):
            try:
                _plugin().open(partition, position)
            except BaseException as e:  # noqa: BLE001
                raise _error(e) from None

        def poll(self, partition, max_records, max_bytes):
            try:
                out = sluice.BatchBuilder()
                polled = _plugin().poll(partition, max_records, max_bytes, out)
                b = out.finish()
                keys = None
                if b.keys is not None:
                    keys = types.Keys(types.BytesColumn(b.keys[0], b.keys[1]), b.keys[2])
                batch = types.Batch(types.BytesColumn(b.data, b.ends), keys, b.timestamps, None)
                return source.Polled(batch, polled.position, bool(polled.end))
            except BaseException as e:  # noqa: BLE001
                raise _error(e) from None

    return Source


def aggregator(plugin_class):
    """The ``aggregate`` export for ``plugin_class`` (a ``sluice.Aggregator``)."""
    from wit_world import exports
    from wit_world.exports import aggregate

    def accs_in(plugin, column):
        data, ends = column.data, column.ends
        out = []
        start = 0
        for end in ends:
            out.append(plugin.decode(data[start:end]) if end > start else plugin.zero())
            start = end
        return out

    def rows(keys, *cols):
        n = len(keys.ends)
        for c in cols:
            if len(c.ends) != n:
                raise sluice.Fatal(f"the host sent a column of {len(c.ends)} rows for {n} keys")
        return n

    class Aggregate(exports.Aggregate):
        def init(self, params):
            _init(plugin_class, params)

        def can_retract(self):
            return bool(_state.get("plugin") and _state["plugin"].can_retract)

        def add(self, ctx, input):
            try:
                plugin = _plugin()
                accs, rejected = plugin.add_batch(_batch(input))
                return aggregate.Partials(
                    _column(list(accs)),
                    _column([plugin.encode(a) for a in accs.values()]),
                    [types.BadRecord(i, r) for i, r in rejected],
                )
            except BaseException as e:  # noqa: BLE001
                raise _error(e) from None

        def merge(self, keys, left, right):
            try:
                plugin = _plugin()
                rows(keys, left, right)
                merged = map(plugin.merge, accs_in(plugin, left), accs_in(plugin, right))
                return _column([plugin.encode(a) for a in merged])
            except BaseException as e:  # noqa: BLE001
                raise _error(e) from None

        def retract(self, keys, acc, expired):
            try:
                plugin = _plugin()
                rows(keys, acc, expired)
                left = map(plugin.retract, accs_in(plugin, acc), accs_in(plugin, expired))
                return _column([b"" if a is None else plugin.encode(a) for a in left])
            except BaseException as e:  # noqa: BLE001
                raise _error(e) from None

        def finish(self, keys, accs):
            try:
                plugin = _plugin()
                rows(keys, accs)
                key_list = list(sluice.Batch(keys.data, keys.ends).values())
                values = map(plugin.finish, key_list, accs_in(plugin, accs))
                return _column([sluice._bytes(v) for v in values])
            except BaseException as e:  # noqa: BLE001
                raise _error(e) from None

    return Aggregate
