"""The local runtime's DynamoDB proxy, and tests/faults.py applied through it: what a client in
another process sees when its calls pass through a disturbed network to the embedded DynamoDB."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError

from jobtriggers.local.proxy import Answer, DynamoDBProxy, error_body
from tests.faults import (
    KINDS,
    LOST_RESPONSE,
    SERVER_ERROR,
    THROTTLE,
    TIMEOUT,
    FaultInjector,
    FaultKind,
    fast_backoff,
    transaction_items,
)


@pytest.fixture(scope="module")
def proxy(dynamo_endpoint: str) -> Iterator[DynamoDBProxy]:
    p = DynamoDBProxy(dynamo_endpoint)
    p.start()
    yield p
    p.stop()


def _client(endpoint: str, attempts: int = 1) -> Any:
    """A client that makes at most `attempts` attempts per call."""
    config = Config(
        retries={"mode": "standard", "total_max_attempts": attempts}, read_timeout=5, connect_timeout=2
    )
    return boto3.client("dynamodb", endpoint_url=endpoint, config=config)


@pytest.fixture
def table(dynamo_endpoint: str) -> str:
    name = f"proxy-{uuid.uuid4().hex[:8]}"
    _client(dynamo_endpoint).create_table(
        TableName=name,
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return name


@pytest.fixture(autouse=True)
def _compressed_backoff() -> Iterator[None]:
    with fast_backoff():
        yield


def _put(table: str, pk: str) -> dict[str, Any]:
    return {"TableName": table, "Item": {"pk": {"S": pk}}, "ConditionExpression": "attribute_not_exists(pk)"}


def _exists(dynamo_endpoint: str, table: str, pk: str) -> bool:
    return "Item" in _client(dynamo_endpoint).get_item(TableName=table, Key={"pk": {"S": pk}})


def _seed_for(rate: float, kinds: Sequence[str], pattern: list[bool]) -> int:
    """A seed whose first draws fault (True) or pass (False) the calls in `pattern` order."""
    for seed in range(10_000):
        rng = random.Random(seed)
        ok = True
        for faulted in pattern:
            hit = rng.random() < rate
            if hit:
                rng.choice(list(kinds))
            if hit != faulted:
                ok = False
                break
        if ok:
            return seed
    raise AssertionError("no such seed")


def test_requests_pass_through_unchanged_and_are_counted(
    proxy: DynamoDBProxy, dynamo_endpoint: str, table: str
) -> None:
    # Given a client that reaches the store through the proxy
    client = _client(proxy.endpoint)
    before = proxy.stats()
    # When it writes, reads, and makes a conditional write fail
    client.put_item(**_put(table, "a"))
    assert client.get_item(TableName=table, Key={"pk": {"S": "a"}})["Item"]["pk"] == {"S": "a"}
    with pytest.raises(ClientError) as caught:
        client.put_item(**_put(table, "a"))
    # Then the store's answers came back as they were, and the proxy counted them by operation
    assert caught.value.response["Error"]["Code"] == "ConditionalCheckFailedException"
    after = proxy.stats()
    assert after["requests"]["PutItem"] - before["requests"].get("PutItem", 0) == 2
    assert after["requests"]["GetItem"] - before["requests"].get("GetItem", 0) == 1
    failed = after["errors"]["ConditionalCheckFailedException"]
    assert failed - before["errors"].get("ConditionalCheckFailedException", 0) == 1


@pytest.mark.parametrize(
    ("kind", "code"),
    [(THROTTLE, "ProvisionedThroughputExceededException"), (SERVER_ERROR, "InternalServerError")],
)
def test_answered_faults_are_retried_by_botocore_then_raised(
    proxy: DynamoDBProxy, dynamo_endpoint: str, table: str, kind: str, code: str
) -> None:
    # Given every PutItem through the proxy answered with the fault
    client = _client(proxy.endpoint, attempts=3)
    with FaultInjector(rate=1.0, kinds=[kind], operations={"PutItem"}).attached(proxy) as faults:
        # When a put is made
        with pytest.raises(ClientError) as caught:
            client.put_item(**_put(table, f"{kind}-1"))
        # Then botocore tried 3 times, each was faulted, and the error is DynamoDB's
        assert caught.value.response["Error"]["Code"] == code
        assert (faults.calls, faults.faults[kind], faults.by_operation["PutItem"]) == (3, 3, 3)
        # And reads were never touched (operations=), nor anything while paused
        client.get_item(TableName=table, Key={"pk": {"S": "x"}})
        with faults.paused():
            client.put_item(**_put(table, f"{kind}-2"))
    assert not _exists(dynamo_endpoint, table, f"{kind}-1")
    assert _exists(dynamo_endpoint, table, f"{kind}-2")
    assert faults.summary()["by_operation"] == {"PutItem": 3}


def test_a_timeout_never_reaches_the_table(proxy: DynamoDBProxy, dynamo_endpoint: str, table: str) -> None:
    client = _client(proxy.endpoint, attempts=2)
    injector = FaultInjector(rate=1.0, kinds=[TIMEOUT], operations={"PutItem"})
    with injector.attached(proxy) as faults, pytest.raises(ConnectionClosedError):
        client.put_item(**_put(table, "timeout"))
    assert faults.faults[TIMEOUT] == 2
    assert not _exists(dynamo_endpoint, table, "timeout")


def test_a_lost_response_was_applied_and_a_retried_transaction_is_not_applied_twice(
    proxy: DynamoDBProxy, dynamo_endpoint: str, table: str
) -> None:
    # Given the first TransactWriteItems through the proxy applied and its answer lost, the retry not
    seed = _seed_for(0.5, [LOST_RESPONSE], [True, False])
    client = _client(proxy.endpoint, attempts=3)
    items = [
        {"Put": _put(table, "tx-claim")},
        {
            "Update": {
                "TableName": table,
                "Key": {"pk": {"S": "tx-count"}},
                "UpdateExpression": "ADD n :one",
                "ExpressionAttributeValues": {":one": {"N": "1"}},
            }
        },
    ]
    injector = FaultInjector(rate=0.5, seed=seed, kinds=[LOST_RESPONSE], operations={"TransactWriteItems"})
    with injector.attached(proxy) as faults:
        # When the transaction is made (botocore retries it with the same ClientRequestToken)
        client.transact_write_items(TransactItems=items)
    # Then it succeeded, once: the store recognised the token of the write that had landed
    assert faults.faults[LOST_RESPONSE] == 1 and faults.calls == 2
    count = _client(dynamo_endpoint).get_item(TableName=table, Key={"pk": {"S": "tx-count"}})["Item"]["n"]
    assert count == {"N": "1"}
    # And a plain put whose answer is lost was applied, so its retry meets its own write
    injector = FaultInjector(rate=0.5, seed=seed, kinds=[LOST_RESPONSE], operations={"PutItem"})
    with injector.attached(proxy), pytest.raises(ClientError) as caught:
        client.put_item(**_put(table, "lost-put"))
    assert caught.value.response["Error"]["Code"] == "ConditionalCheckFailedException"
    assert _exists(dynamo_endpoint, table, "lost-put")


def test_a_new_kind_is_one_entry_in_kinds_and_works_in_process_and_through_the_proxy(
    proxy: DynamoDBProxy, dynamo_endpoint: str, table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a kind that cancels transactions as a conflicting one would, and only transactions
    def conflict(_operation: str, body: bytes) -> Answer:
        n = transaction_items(body)
        reasons = [{"Code": "TransactionConflict", "Message": "Transaction is ongoing for the item"}] * n
        codes = ", ".join(["TransactionConflict"] * n)
        message = f"Transaction cancelled, please refer cancellation reasons for specific reasons [{codes}]"
        return Answer(400, error_body("TransactionCanceledException", message, CancellationReasons=reasons))

    monkeypatch.setitem(KINDS, "conflict", FaultKind(conflict, operations=frozenset({"TransactWriteItems"})))
    transaction = [{"Put": _put(table, "conflict")}]
    for target, client in ((proxy, _client(proxy.endpoint)), (None, _client(dynamo_endpoint))):
        injector = FaultInjector(rate=1.0, kinds=["conflict"])
        with injector.attached(target if target is not None else client) as faults:
            # When a transaction and a plain put are made
            with pytest.raises(ClientError) as caught:
                client.transact_write_items(TransactItems=transaction)
            client.put_item(**_put(table, f"plain-{uuid.uuid4().hex[:6]}"))
        # Then the transaction was cancelled with the conflict's reasons, and the put went through
        assert caught.value.response["Error"]["Code"] == "TransactionCanceledException"
        assert [r["Code"] for r in caught.value.response["CancellationReasons"]] == ["TransactionConflict"]
        assert faults.summary()["by_operation"] == {"TransactWriteItems": 1}
    assert not _exists(dynamo_endpoint, table, "conflict")
