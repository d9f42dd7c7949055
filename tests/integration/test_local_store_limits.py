"""The embedded DynamoDB refuses what DynamoDB refuses: key sizes, item size, transaction and batch
limits, over HTTP through boto3 (issue 8.9: a 3 KB key read is a 500 on AWS; moto answered it).

Each case here is one moto 5.2.5 lets through (or refuses where DynamoDB accepts); the store rules
are jobtriggers/local/store_rules.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

HASH_TOO_LONG = (
    "One or more parameter values were invalid: Size of hashkey has exceeded the maximum size limit "
    "of2048 bytes"  # sic: no space in DynamoDB's message
)
RANGE_TOO_LONG = (
    "One or more parameter values were invalid: Aggregated size of all range keys has exceeded the size "
    "limit of 1024 bytes"
)
ITEM_TOO_LARGE = "Item size has exceeded the maximum allowed size"
UPDATE_TOO_LARGE = "Item size to update has exceeded the maximum allowed size"
MAX_ITEM = 409_600


@pytest.fixture(scope="module")
def ddb(dynamo_endpoint: str) -> Any:
    return boto3.client(
        "dynamodb",
        endpoint_url=dynamo_endpoint,
        config=Config(retries={"mode": "standard", "max_attempts": 1}),
    )


@pytest.fixture
def table(ddb: Any) -> Iterator[str]:
    """A table with a sort key and an index (partition key `g`, sort key `h`)."""
    name = f"limits-{uuid.uuid4().hex[:8]}"
    ddb.create_table(
        TableName=name,
        AttributeDefinitions=[{"AttributeName": a, "AttributeType": "S"} for a in ("pk", "sk", "g", "h")],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "by_g",
                "KeySchema": [
                    {"AttributeName": "g", "KeyType": "HASH"},
                    {"AttributeName": "h", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    yield name
    ddb.delete_table(TableName=name)


def _refused(call: Any, code: str = "ValidationException") -> str:
    with pytest.raises(ClientError) as caught:
        call()
    assert caught.value.response["Error"]["Code"] == code, caught.value.response["Error"]
    return str(caught.value.response["Error"]["Message"])


def _key(pk: str, sk: str = "s") -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": sk}}


def _sized_item(pk: str, size: int) -> dict[str, Any]:
    """{pk, sk, p} of exactly `size` bytes by DynamoDB's rules (names count: 'pk', 'sk', 'p')."""
    fixed = len("pk") + len(pk) + len("sk") + len("s") + len("p")
    return {**_key(pk), "p": {"S": "x" * (size - fixed)}}


# A partition key of 2049 bytes in 683 characters: the limit is in UTF-8 bytes.
LONG_HASH = "€" * 683
LONG_RANGE = "r" * 1025


def test_reads_and_deletes_by_a_key_over_dynamodbs_limits_are_refused(ddb: Any, table: str) -> None:
    # Given keys one byte over the partition (2048) and sort key (1024) limits
    over_hash, over_range = _key(LONG_HASH), _key("p", LONG_RANGE)
    reads = {
        "GetItem": lambda key: ddb.get_item(TableName=table, Key=key),
        "DeleteItem": lambda key: ddb.delete_item(TableName=table, Key=key),
        "BatchGetItem": lambda key: ddb.batch_get_item(RequestItems={table: {"Keys": [key]}}),
        "TransactGetItems": lambda key: ddb.transact_get_items(
            TransactItems=[{"Get": {"TableName": table, "Key": key}}]
        ),
        "ConditionCheck": lambda key: ddb.transact_write_items(
            TransactItems=[
                {
                    "ConditionCheck": {
                        "TableName": table,
                        "Key": key,
                        "ConditionExpression": "attribute_exists(pk)",
                    }
                }
            ]
        ),
        "transacted Delete": lambda key: ddb.transact_write_items(
            TransactItems=[{"Delete": {"TableName": table, "Key": key}}]
        ),
    }
    for name, call in reads.items():
        # When each operation names them
        # Then DynamoDB's ValidationException comes back, with its message
        assert _refused(lambda call=call: call(over_hash)) == HASH_TOO_LONG, name
        assert _refused(lambda call=call: call(over_range)) == RANGE_TOO_LONG, name
    # And keys exactly at the limits are fine
    assert "Item" not in ddb.get_item(TableName=table, Key=_key("€" * 682 + "xx", "r" * 1024))


def test_an_update_that_makes_an_index_key_too_long_is_refused_and_changes_nothing(
    ddb: Any, table: str
) -> None:
    # Given an item with a short index key
    ddb.put_item(TableName=table, Item={**_key("idx"), "g": {"S": "short"}, "h": {"S": "h"}})
    # When an update sets the index's partition key to 2049 bytes, or its sort key to 1025
    for attribute, value, message in (("g", LONG_HASH, HASH_TOO_LONG), ("h", LONG_RANGE, RANGE_TOO_LONG)):
        refused = _refused(
            lambda attribute=attribute, value=value: ddb.update_item(
                TableName=table,
                Key=_key("idx"),
                UpdateExpression="SET #a = :v",
                ExpressionAttributeNames={"#a": attribute},
                ExpressionAttributeValues={":v": {"S": value}},
            )
        )
        # Then it is refused as DynamoDB refuses it, and the item is as it was
        assert refused == message
    item = ddb.get_item(TableName=table, Key=_key("idx"))["Item"]
    assert (item["g"]["S"], item["h"]["S"]) == ("short", "h")


def test_item_size_is_measured_as_dynamodb_measures_it(ddb: Any, table: str) -> None:
    # When an item of exactly 400 KB (409,600 bytes, names included) is put, and one a byte larger
    ddb.put_item(TableName=table, Item=_sized_item("at-limit", MAX_ITEM))
    message = _refused(lambda: ddb.put_item(TableName=table, Item=_sized_item("over", MAX_ITEM + 1)))
    # Then the first is stored and the second refused with DynamoDB's message
    assert "Item" in ddb.get_item(TableName=table, Key=_key("at-limit"))
    assert message == ITEM_TOO_LARGE
    # And a list is charged 3 bytes plus 1 per element: 205,000 nulls are over the limit
    nulls = {**_key("nulls"), "l": {"L": [{"NULL": True}] * 205_000}}
    assert _refused(lambda: ddb.put_item(TableName=table, Item=nulls)) == ITEM_TOO_LARGE
    # And the same goes for BatchWriteItem and a transaction's Put
    over = _sized_item("over", MAX_ITEM + 1)
    assert (
        _refused(lambda: ddb.batch_write_item(RequestItems={table: [{"PutRequest": {"Item": over}}]}))
        == ITEM_TOO_LARGE
    )
    assert (
        _refused(
            lambda: ddb.transact_write_items(TransactItems=[{"Put": {"TableName": table, "Item": over}}])
        )
        == ITEM_TOO_LARGE
    )
    assert "Item" not in ddb.get_item(TableName=table, Key=_key("over"))


def test_an_update_is_measured_on_the_item_it_leaves(ddb: Any, table: str) -> None:
    # Given a small item
    ddb.put_item(TableName=table, Item={**_key("grow"), "a": {"S": "small"}})

    def grow_to(size: int) -> None:
        pad = size - (len("pk") + len("grow") + len("sk") + len("s") + len("a") + len("small") + len("p"))
        ddb.update_item(
            TableName=table,
            Key=_key("grow"),
            UpdateExpression="SET p = :p",
            ExpressionAttributeValues={":p": {"S": "x" * pad}},
        )

    # When it is updated to exactly 400 KB, then to a byte more
    grow_to(MAX_ITEM)
    refused = _refused(lambda: grow_to(MAX_ITEM + 1))
    # Then the first update stands and the second is refused as DynamoDB refuses it
    assert refused == UPDATE_TOO_LARGE
    item = ddb.get_item(TableName=table, Key=_key("grow"))["Item"]
    assert len(item["p"]["S"]) == MAX_ITEM - (2 + 4 + 2 + 1 + 1 + 5 + 1)


def test_a_transacted_update_over_the_item_limit_cancels_the_transaction(ddb: Any, table: str) -> None:
    # When a transaction puts a small item and updates another past 400 KB
    with pytest.raises(ClientError) as caught:
        ddb.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": table, "Item": _key("tx-small")}},
                {
                    "Update": {
                        "TableName": table,
                        "Key": _key("tx-big"),
                        "UpdateExpression": "SET p = :p",
                        "ExpressionAttributeValues": {":p": {"S": "x" * MAX_ITEM}},
                    }
                },
            ]
        )
    # Then the transaction is cancelled with a ValidationError reason for the update, as DynamoDB
    # reports it, and neither write happened
    error = caught.value.response
    assert error["Error"]["Code"] == "TransactionCanceledException"
    reasons = error["CancellationReasons"]
    assert [r["Code"] for r in reasons] == ["None", "ValidationError"]
    assert reasons[1]["Message"] == UPDATE_TOO_LARGE
    for pk in ("tx-small", "tx-big"):
        assert "Item" not in ddb.get_item(TableName=table, Key=_key(pk))


def test_transactions_hold_up_to_100_items_and_4_mb(ddb: Any, table: str) -> None:
    # Given 100 items
    keys = [_key("many", f"{i:03d}") for i in range(101)]
    for start in range(0, 100, 25):
        ddb.batch_write_item(
            RequestItems={table: [{"PutRequest": {"Item": k}} for k in keys[start : start + 25]]}
        )
    # When a transaction reads all 100, and another 101
    got = ddb.transact_get_items(TransactItems=[{"Get": {"TableName": table, "Key": k}} for k in keys[:100]])
    too_many = _refused(
        lambda: ddb.transact_get_items(TransactItems=[{"Get": {"TableName": table, "Key": k}} for k in keys])
    )
    # Then 100 is fine (DynamoDB's limit since 2022) and 101 is not
    assert len(got["Responses"]) == 100
    assert "Member must have length less than or equal to 100" in too_many
    # And a transaction of 11 puts of 390 KB (over 4 MB in all) is refused, and writes nothing
    puts = [{"Put": {"TableName": table, "Item": _sized_item(f"big-{i}", 390_000)}} for i in range(11)]
    assert _refused(lambda: ddb.transact_write_items(TransactItems=puts)).endswith("4 MB")
    assert "Item" not in ddb.get_item(TableName=table, Key=_key("big-0"))
    # While 10 of them (3.9 MB) go through
    ddb.transact_write_items(TransactItems=puts[:10])
    assert "Item" in ddb.get_item(TableName=table, Key=_key("big-9"))


def test_batch_write_takes_at_most_25_requests(ddb: Any, table: str) -> None:
    # When 26 puts go to one table in one BatchWriteItem, or 13 to each of two tables
    other = f"{table}-b"
    ddb.create_table(
        TableName=other,
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        BillingMode="PAY_PER_REQUEST",
    )
    try:
        puts = [{"PutRequest": {"Item": _key("batch", f"{i:02d}")}} for i in range(26)]
        one_table = _refused(lambda: ddb.batch_write_item(RequestItems={table: puts}))
        two_tables = _refused(lambda: ddb.batch_write_item(RequestItems={table: puts[:13], other: puts[13:]}))
    finally:
        ddb.delete_table(TableName=other)
    # Then both are refused with DynamoDB's messages, and nothing was written
    assert one_table.startswith(f"1 validation error detected: Value '{{{table}=[")
    assert one_table.endswith(
        "Map value must satisfy constraint: [Member must have length less than or equal to 25, "
        "Member must have length greater than or equal to 1]"
    )
    assert two_tables == "Too many items requested for the BatchWriteItem call"
    assert (
        ddb.query(
            TableName=table,
            KeyConditionExpression="pk = :p",
            ExpressionAttributeValues={":p": {"S": "batch"}},
        )["Count"]
        == 0
    )
