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

Azurite's address and account come from SLUICE_AZURITE_BLOB_URL, SLUICE_AZURITE_ACCOUNT and
SLUICE_AZURITE_KEY (scripts/services env).
"""

import json
import os
import sys

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
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
