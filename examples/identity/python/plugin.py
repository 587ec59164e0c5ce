"""identity in Python: every value unchanged, for measuring what a Python plugin costs.

Parameter `mode`: `bulk` (the default) passes the whole input through with no work per record;
`each` pushes every record's value, one Python call per record."""

import sluice

MODES = ("bulk", "each")


class Plugin(sluice.Transform):
    """Returns every value unchanged."""

    def __init__(self, params):
        params.allow_only(["mode"])
        self.mode = params.get("mode", "bulk")
        if self.mode not in MODES:
            raise ValueError(f"parameter 'mode' = {self.mode!r}: choose bulk or each")

    def transform(self, ctx, batch, out):
        if self.mode == "bulk":
            out.pass_through()
            return
        push = out.push
        for index, value in enumerate(batch.values()):
            push(index, value)
