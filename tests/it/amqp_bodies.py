"""Publishes one message of every AMQP 1.0 body kind, with properties and application
properties, to a queue, with python-qpid-proton: an AMQP 1.0 client independent of sluice's
(fe2o3-amqp). `tests/it/amqp_bodies.rs` runs it and checks what sluice makes of each message.

Usage: python amqp_bodies.py URL ADDRESS [--undecodable]
  URL      amqp://user:password@host:port
  ADDRESS  the queue address, e.g. /queue/sluice-bodies-1
  --undecodable  instead: a data message `before`, then an amqp-value array with a null
                 descriptor (valid AMQP that fe2o3-amqp cannot decode), then `after`

Every message carries the application property `case` (its name), so the test can match
records to cases whatever the order. Bodies that proton's Message cannot make (several data
or amqp-sequence sections, an amqp-value null) are written as section bytes after the
encoded message (AMQP 1.0 part 3.2: a data section is descriptor 0x75, amqp-sequence 0x76,
amqp-value 0x77). Prints the number of messages published.
"""

import sys
import uuid

from proton import (UNDESCRIBED, Array, Data, Described, Message, byte, char, decimal32, decimal64,
                    decimal128, float32, int32, short, symbol, timestamp, ubyte, uint, ulong,
                    ushort)
from proton.utils import BlockingConnection

UUID = uuid.UUID("0f8fad5b-d9cb-469f-a165-70867728950e")


class Raw:
    """A message given as its encoded bytes: proton's `Sender.send` calls `send` on it."""

    def __init__(self, encoded):
        self.encoded = encoded

    def send(self, sender, tag=None):
        dlv = sender.delivery(tag or sender.delivery_tag())
        sender.stream(self.encoded)
        sender.advance()
        return dlv


def section(descriptor, encoded_value):
    """A body section: the described type 0x00 0x53 <descriptor> and its encoded value."""
    return bytes([0x00, 0x53, descriptor]) + encoded_value


def binary(b):
    """The vbin32 encoding of `b`."""
    return b"\xb0" + len(b).to_bytes(4, "big") + b


def encoded(value):
    """`value` encoded by proton's Data."""
    d = Data()
    d.put_object(value)
    return d.encode()


def msg(case, body=None, inferred=False, **props):
    m = Message(body=body, inferred=inferred, **props)
    m.properties = dict(m.properties or {}, case=case)
    return m


def with_sections(case, sections, **props):
    """A message whose body is `sections` (bytes), after proton's encoding of the rest."""
    return Raw(msg(case, **props).encode() + b"".join(sections))


def cases():
    yield msg("data-one", b"\x00\xffhi\n", inferred=True)
    yield with_sections("data-several", [section(0x75, binary(b"ab")), section(0x75, binary(b"")),
                                         section(0x75, binary(b"c\xff"))])
    yield msg("value-string", "h\u00e9llo \"q\"")
    yield msg("value-binary", b"\x01\x02\xff")
    yield msg("value-symbol", symbol("a-symbol"))
    yield with_sections("value-null", [section(0x77, b"\x40")])
    yield msg("value-boolean", True)
    yield msg("value-ubyte", ubyte(255))
    yield msg("value-ushort", ushort(65535))
    yield msg("value-uint", uint(4294967295))
    yield msg("value-ulong", ulong(18446744073709551615))
    yield msg("value-byte", byte(-128))
    yield msg("value-short", short(-32768))
    yield msg("value-int", int32(-2147483648))
    yield msg("value-long", -9223372036854775808)
    yield msg("value-float", float32(1.5))
    yield msg("value-double", 0.1)
    yield msg("value-double-whole", 2.0)
    yield msg("value-double-nan", float("nan"))
    yield msg("value-float-inf", float32(float("-inf")))
    # 15 x 10^-1: exponent bias 101 (decimal32), 398 (decimal64), 6176 (decimal128).
    yield msg("value-decimal32", decimal32((101 - 1) << 23 | 15))
    yield msg("value-decimal64", decimal64((1 << 63) | (398 - 2) << 53 | 12345))
    yield msg("value-decimal128", decimal128(((6176 + 3) << 113 | 7).to_bytes(16, "big")))
    yield msg("value-char", char("\u20ac"))
    yield msg("value-timestamp", timestamp(1700000000123))
    yield msg("value-uuid", UUID)
    # One element (a list of several): RabbitMQ 3.10 drops the connection on an amqp-value
    # list of more than one element at the top.
    yield msg("value-list", [[1, "a", None, True, [symbol("s")], {"k": b"\x00"}, 2.0]])
    yield msg("value-map", {"a": int32(1), "$b": "x", "n": None})
    yield msg("value-map-keys", {ulong(1): "one", symbol("s"): 2.5})
    yield msg("value-array", Array(UNDESCRIBED, Data.INT, 1, 2, 3))
    yield msg("value-described", Described(symbol("com.example:point"), [int32(1), int32(2)]))
    yield msg("value-described-code", Described(ulong(0x1234), "x"))
    yield msg("sequence-one", [1, "two", b"\x03"], inferred=True)
    yield with_sections("sequence-several", [section(0x76, encoded([int32(1)])),
                                             section(0x76, encoded(["b", None]))])
    yield msg("none")
    yield msg("properties", b"p", inferred=True, id=ulong(42), correlation_id=UUID,
              subject="the subject", content_type=symbol("text/plain"),
              content_encoding=symbol("gzip"), user_id=b"guest", reply_to="/queue/replies",
              address="/queue/elsewhere", group_id="g1", group_sequence=7, reply_to_group_id="rg",
              creation_time=1700000000.5, expiry_time=1800000000.0)
    m = msg("app-properties", b"a", inferred=True, id="42", correlation_id=b"\x01\xfe")
    m.properties.update({"s": "text", "i": int32(-7), "l": 9, "b": False, "d": 0.25,
                         "bin": b"\xff\x00", "sym": symbol("sy"), "u": UUID, "nul": None,
                         "ts": timestamp(5)})
    yield m
    yield msg("id-uuid", b"u", inferred=True, id=UUID, correlation_id="c-1")
    yield msg("id-binary", b"b", inferred=True, id=b"\x00\xff", correlation_id=ulong(7))


def undecodable():
    yield msg("before", b"before", inferred=True)
    yield msg("undecodable", Array(None, Data.INT, 1, 2, 3))
    yield msg("after", b"after", inferred=True)


def main():
    url, address = sys.argv[1], sys.argv[2]
    which = undecodable if sys.argv[3:] == ["--undecodable"] else cases
    conn = BlockingConnection(url, timeout=30)
    try:
        sender = conn.create_sender(address)
        n = 0
        for m in which():
            sender.send(m)
            n += 1
        print(n)
    finally:
        conn.close()


if __name__ == "__main__":
    main()
