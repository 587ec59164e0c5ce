"""json-upper in Python: keeps the string fields `user` (ASCII letters upper-cased) and `item`
of JSON objects, as `{"user":U,"item":I}`; rejects the rest with the reasons of SPEC.md."""

import json

import sluice

_UPPER = {c: c - 32 for c in range(ord("a"), ord("z") + 1)}


def _invalid_constant(name):
    # json.loads takes NaN, Infinity and -Infinity; RFC 8259 does not.
    raise ValueError(f"{name} is not JSON")


_decode = json.JSONDecoder(parse_constant=_invalid_constant).decode
_encode = json.JSONEncoder(ensure_ascii=False).encode


def convert(value):
    """The output for one value (``bytes``), or raises ``ValueError`` with the reject reason."""
    try:
        # Decoded first, as UTF-8: json.loads on bytes would guess UTF-16 or UTF-32 too.
        doc = _decode(value.decode("utf-8"))
    except (ValueError, RecursionError):
        raise ValueError("not valid JSON") from None
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    user = doc.get("user")
    if not isinstance(user, str):
        raise ValueError('field "user" is missing or not a string')
    item = doc.get("item")
    if not isinstance(item, str):
        raise ValueError('field "item" is missing or not a string')
    text = '{"user":' + _encode(user.translate(_UPPER)) + ',"item":' + _encode(item) + "}"
    # surrogatepass: a `\u` escape of an unpaired surrogate is out of the spec's scope.
    return text.encode("utf-8", "surrogatepass")


class Plugin(sluice.Transform):
    """No parameters."""

    def __init__(self, params):
        params.allow_only([])

    def transform(self, ctx, batch, out):
        data = batch.data
        start = 0
        for index, end in enumerate(batch.ends):
            try:
                out.push(index, convert(data[start:end]))
            except ValueError as e:
                out.reject(index, str(e))
            start = end
