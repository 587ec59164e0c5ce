"""Microsoft's own Event Hubs client (azure-eventhub from PyPI) against the stand-in, driven by
tests/it/eventhubs_dialect.rs. It is the judge of the dialect: CBS put-token with a SAS token,
$management READ, sends (batches, to a partition and by partition key), receives with offset
and sequence filters, and owner levels.

The client is pointed at the stand-in with the Event Hubs emulator's connection string:
  Endpoint=sb://127.0.0.1:<port>/;SharedAccessKeyName=…;SharedAccessKey=…;EntityPath=<hub>;UseDevelopmentEmulator=true
(`UseDevelopmentEmulator=true` makes it plain AMQP, `use_tls=False`; the port comes from the
Endpoint's netloc.)

Usage (the connection string comes in $EVENTHUB_CONNECTION_STRING, never on the command line):
  eventhubs_client.py props
      prints {"partition_ids": [...], "partitions": [{partition properties}...]}
  eventhubs_client.py send COUNT
      sends COUNT events "e<n>" over every partition: batches of 100 per partition id, and the
      last tenth by partition key; prints {"sent": COUNT}
  eventhubs_client.py receive PARTITION START COUNT [OWNER_LEVEL] [SECONDS]
      START: "offset:<o>" (after that offset) or "sequence:<n>" (from that sequence number,
      inclusive); receives until COUNT events or SECONDS (default 30) pass; prints
      {"events": [{"body", "offset", "sequence_number", "partition_key"}...], "error": ...}
"""

import json
import os
import sys
import threading
import time

from azure.eventhub import EventData, EventHubConsumerClient, EventHubProducerClient
from azure.eventhub._pyamqp import _transport


def _tolerant_socket_options(self, socket_settings):
    """The client's own TCP tuning (keepalive, user timeout), except that an option this
    kernel refuses with EINVAL (seen in sandboxes) is skipped instead of failing the connect.
    Nothing of the AMQP dialect changes."""
    opts = self._get_tcp_socket_defaults(self.sock)
    if socket_settings:
        opts.update(socket_settings)
    for opt, val in opts.items():
        try:
            self.sock.setsockopt(_transport.SOL_TCP, opt, val)
        except OSError as e:
            print(f"skipped TCP option {opt}={val}: {e}", file=sys.stderr)


_transport._AbstractTransport._set_socket_options = _tolerant_socket_options


def conn_str():
    return os.environ["EVENTHUB_CONNECTION_STRING"]


def props():
    with EventHubProducerClient.from_connection_string(conn_str()) as producer:
        ids = producer.get_partition_ids()
        parts = []
        for pid in ids:
            p = producer.get_partition_properties(pid)
            parts.append({k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in p.items()})
    print(json.dumps({"partition_ids": ids, "partitions": parts}))


def send(count):
    producer = EventHubProducerClient.from_connection_string(conn_str())
    with producer:
        ids = producer.get_partition_ids()
        by_key = count // 10
        n = 0
        per = (count - by_key) // len(ids)
        for i, pid in enumerate(ids):
            todo = per if i < len(ids) - 1 else count - by_key - per * (len(ids) - 1)
            while todo > 0:
                batch = producer.create_batch(partition_id=pid)
                k = 0
                while k < min(100, todo):
                    batch.add(EventData(f"e{n}"))
                    n += 1
                    k += 1
                producer.send_batch(batch)
                todo -= k
        while n < count:
            batch = producer.create_batch(partition_key=f"key-{n % 7}")
            for _ in range(min(100, count - n)):
                batch.add(EventData(f"e{n}"))
                n += 1
            producer.send_batch(batch)
    print(json.dumps({"sent": n}))


def receive(partition, start, count, owner_level=None, seconds=30.0):
    got = []
    errors = []
    done = threading.Event()
    if start.startswith("offset:"):
        position, inclusive = start[len("offset:"):], False
    elif start.startswith("sequence:"):
        position, inclusive = int(start[len("sequence:"):]), True
    else:
        raise SystemExit(f"bad START {start!r}")
    client = EventHubConsumerClient.from_connection_string(conn_str(), consumer_group="$Default")

    def on_event(ctx, event):
        if event is None:
            return
        got.append(
            {
                "body": event.body_as_str(),
                "offset": event.offset,
                "sequence_number": event.sequence_number,
                "partition_key": (
                    event.partition_key.decode()
                    if isinstance(event.partition_key, bytes)
                    else event.partition_key
                ),
            }
        )
        if len(got) >= count:
            done.set()

    def on_error(ctx, error):
        import traceback

        errors.append(f"{type(error).__name__}: {error}")
        if os.environ.get("EVENTHUB_CLIENT_DEBUG"):
            traceback.print_exception(error, file=sys.stderr)

    kwargs = dict(
        on_event=on_event,
        on_error=on_error,
        partition_id=partition,
        starting_position=position,
        starting_position_inclusive=inclusive,
    )
    if owner_level is not None:
        kwargs["owner_level"] = owner_level
    t = threading.Thread(target=client.receive, kwargs=kwargs, daemon=True)
    t.start()
    done.wait(seconds)
    client.close()
    t.join(10)
    print(json.dumps({"events": got, "errors": errors}))


def main():
    cmd = sys.argv[1]
    if cmd == "props":
        props()
    elif cmd == "send":
        send(int(sys.argv[2]))
    elif cmd == "receive":
        owner = int(sys.argv[5]) if len(sys.argv) > 5 and sys.argv[5] != "-" else None
        seconds = float(sys.argv[6]) if len(sys.argv) > 6 else 30.0
        receive(sys.argv[2], sys.argv[3], int(sys.argv[4]), owner, seconds)
    else:
        raise SystemExit(f"unknown command {cmd!r}")


if __name__ == "__main__":
    main()
