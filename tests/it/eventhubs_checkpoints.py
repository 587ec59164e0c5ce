#!/usr/bin/env python3
"""Microsoft's own checkpoint store (azure-eventhub-checkpointstoreblob, from PyPI) against
Azurite, for tests/it/eventhubs_checkpoints.rs: the judge of sluice's blob layout.

Usage: eventhubs_checkpoints.py COMMAND CONTAINER NAMESPACE HUB CONSUMER_GROUP [ARGS]

  create-container                      creates CONTAINER (no error when it exists)
  list                                  prints {"checkpoints": [...], "ownership": [...]} as
                                        BlobCheckpointStore.list_checkpoints / list_ownership
                                        return them (JSON; times dropped)
  update-checkpoint PARTITION OFFSET SEQ   as a processor's partition_context.update_checkpoint
  claim PARTITION OWNER                 as a processor's claim_ownership (on the etag listed)
  process UPTO_JSON                     runs Microsoft's processor (EventHubConsumerClient with
                                        this checkpoint store, greedy load balancing) on the hub
                                        of $EVENTHUB_CONNECTION_STRING from the start, checkpoints
                                        the event with sequence number UPTO_JSON[partition] of each
                                        partition named there, then closes; prints the partitions
                                        it checkpointed

Azurite's address and account come from SLUICE_AZURITE_BLOB_URL, SLUICE_AZURITE_ACCOUNT and
SLUICE_AZURITE_KEY (scripts/services env).
"""

import json
import os
import sys
import threading

from azure.core.exceptions import ResourceExistsError
from azure.eventhub.extensions.checkpointstoreblob import BlobCheckpointStore
from azure.storage.blob import BlobServiceClient


def connection_string():
    url = os.environ.get("SLUICE_AZURITE_BLOB_URL", "http://127.0.0.1:10000/devstoreaccount1")
    account = os.environ.get("SLUICE_AZURITE_ACCOUNT", "devstoreaccount1")
    key = os.environ["SLUICE_AZURITE_KEY"]
    return (
        f"DefaultEndpointsProtocol=http;AccountName={account};AccountKey={key};"
        f"BlobEndpoint={url};"
    )


def process(store, group, upto):
    # The stand-in's socket-option workaround, nothing of the dialect (see eventhubs_client.py).
    import eventhubs_client  # noqa: F401
    from azure.eventhub import EventHubConsumerClient

    client = EventHubConsumerClient.from_connection_string(
        os.environ["EVENTHUB_CONNECTION_STRING"],
        consumer_group=group,
        checkpoint_store=store,
        load_balancing_strategy="greedy",
        load_balancing_interval=1,
    )
    done = set()
    lock = threading.Lock()

    def on_event(context, event):
        if event is None or upto.get(context.partition_id) != event.sequence_number:
            return
        context.update_checkpoint(event)
        with lock:
            done.add(context.partition_id)
            if len(done) == len(upto):
                threading.Thread(target=client.close).start()

    timer = threading.Timer(45, client.close)
    timer.start()
    client.receive(on_event=on_event, starting_position="-1")
    timer.cancel()
    return sorted(done)


def main(argv):
    command, container, namespace, hub, group, *args = argv
    if command == "create-container":
        service = BlobServiceClient.from_connection_string(connection_string())
        try:
            service.create_container(container)
        except ResourceExistsError:
            pass
        return
    store = BlobCheckpointStore.from_connection_string(connection_string(), container)
    if command == "list":
        checkpoints = list(store.list_checkpoints(namespace, hub, group))
        ownership = [
            {k: v for k, v in o.items() if k != "last_modified_time"}
            for o in store.list_ownership(namespace, hub, group)
        ]
        print(json.dumps({"checkpoints": checkpoints, "ownership": ownership}, sort_keys=True))
    elif command == "update-checkpoint":
        partition, offset, sequence_number = args
        store.update_checkpoint(
            {
                "fully_qualified_namespace": namespace,
                "eventhub_name": hub,
                "consumer_group": group,
                "partition_id": partition,
                "offset": offset,
                "sequence_number": int(sequence_number),
            }
        )
    elif command == "claim":
        partition, owner = args
        listed = {o["partition_id"]: o for o in store.list_ownership(namespace, hub, group)}
        ownership = listed.get(
            partition,
            {
                "fully_qualified_namespace": namespace,
                "eventhub_name": hub,
                "consumer_group": group,
                "partition_id": partition,
            },
        )
        ownership["owner_id"] = owner
        claimed = list(store.claim_ownership([ownership]))
        print(json.dumps([c["owner_id"] for c in claimed]))
    elif command == "process":
        print(json.dumps(process(store, group, json.loads(args[0]))))
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
