"""A Query of a table's own key reads one partition in the embedded store, as in DynamoDB.

moto walked (and sorted) every item of the table for it, so each tag, which reads its object's
types, got slower as the store grew. The answers must be exactly moto's: order, paging, filters.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto.dynamodb.models.table import Table


@pytest.fixture
def table(dynamo_endpoint: str) -> Iterator[tuple[Any, str]]:
    ddb: Any = boto3.client("dynamodb", endpoint_url=dynamo_endpoint)
    name = f"queries-{uuid.uuid4().hex[:8]}"
    ddb.create_table(
        TableName=name,
        AttributeDefinitions=[{"AttributeName": a, "AttributeType": "S"} for a in ("pk", "sk")],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        BillingMode="PAY_PER_REQUEST",
    )
    for p in range(30):
        for s in range(4):
            ddb.put_item(
                TableName=name,
                Item={"pk": {"S": f"p{p:02d}"}, "sk": {"S": f"s{s}"}, "n": {"N": str(s)}},
            )
    yield ddb, name
    ddb.delete_table(TableName=name)


def test_a_base_table_query_walks_only_its_partition(
    table: tuple[Any, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ddb, name = table
    walked: list[int] = []
    all_items = Table.all_items

    def counting(self: Any) -> Any:
        items = all_items(self)
        walked.append(len(items))
        return items

    monkeypatch.setattr(Table, "all_items", counting)
    out = ddb.query(
        TableName=name, KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": {"S": "p07"}}
    )
    assert [i["sk"]["S"] for i in out["Items"]] == ["s0", "s1", "s2", "s3"]
    assert walked and max(walked) == 4  # the partition, not the table's 120 items


def test_order_paging_and_filters_are_moto_s(table: tuple[Any, str]) -> None:
    ddb, name = table
    common = {
        "TableName": name,
        "KeyConditionExpression": "pk = :p AND sk > :s",
        "ExpressionAttributeValues": {":p": {"S": "p12"}, ":s": {"S": "s0"}, ":n": {"N": "3"}},
        "ScanIndexForward": False,
    }
    first = ddb.query(**common, Limit=2)
    assert [i["sk"]["S"] for i in first["Items"]] == ["s3", "s2"]
    rest = ddb.query(**common, Limit=2, ExclusiveStartKey=first["LastEvaluatedKey"])
    assert [i["sk"]["S"] for i in rest["Items"]] == ["s1"]
    filtered = ddb.query(**common, FilterExpression="n < :n")
    assert [i["sk"]["S"] for i in filtered["Items"]] == ["s2", "s1"]
    assert filtered["ScannedCount"] == 3
    missing = ddb.query(
        TableName=name, KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": {"S": "nope"}}
    )
    assert missing["Items"] == [] and missing["Count"] == 0
