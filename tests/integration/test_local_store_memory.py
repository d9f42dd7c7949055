"""The embedded store holds what its tables hold, not every object moto ever made.

moto keeps each model object it creates in a class-level list (for a dashboard nothing here serves),
so the tables' item versions, stream records and each transaction's backups stayed alive for the
whole process: the heap only grew, and full garbage collections paused every thread for 600-800 ms
after 2,000 tags, the local runtime's tail latency (docs/benchmarks.md, figure 1).
"""

from __future__ import annotations

import gc
import uuid
from typing import Any

import boto3
from moto.dynamodb.models.dynamo_type import Item
from moto.dynamodb.models.table import Table


def _live(kind: type) -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) is kind)


def test_transactions_and_overwrites_leave_no_objects_behind(dynamo_endpoint: str) -> None:
    ddb: Any = boto3.client("dynamodb", endpoint_url=dynamo_endpoint)
    name = f"memory-{uuid.uuid4().hex[:8]}"
    ddb.create_table(
        TableName=name,
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    try:
        tables_before, items_before = _live(Table), _live(Item)
        for i in range(60):
            # Each transaction backs up the partition it touches; each put replaces an item.
            ddb.transact_write_items(
                TransactItems=[
                    {"Put": {"TableName": name, "Item": {"pk": {"S": f"k{i % 5}"}, "n": {"N": str(i)}}}}
                ]
            )
            ddb.put_item(TableName=name, Item={"pk": {"S": f"k{i % 5}"}, "n": {"N": str(-i)}})
        # Five items live in the table; moto used to keep all 120 versions and 60 table backups.
        assert _live(Table) - tables_before <= 1
        assert _live(Item) - items_before < 60
    finally:
        ddb.delete_table(TableName=name)
