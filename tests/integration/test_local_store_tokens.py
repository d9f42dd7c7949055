"""TransactWriteItems' ClientRequestToken, as DynamoDB keeps it, over HTTP through boto3.

botocore puts a fresh token on every TransactWriteItems call and keeps it across its own retries,
so a retry of a transaction whose answer was lost must succeed without applying twice; the
embedded store emulates that (moto ignores the token). See jobtriggers/local/store_rules.py.
"""

from __future__ import annotations

import uuid
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError


@pytest.fixture
def ddb(dynamo_endpoint: str) -> Any:
    return boto3.client(
        "dynamodb",
        endpoint_url=dynamo_endpoint,
        config=Config(retries={"mode": "standard", "max_attempts": 1}),
    )


@pytest.fixture
def table(ddb: Any) -> str:
    name = f"tokens-{uuid.uuid4().hex[:8]}"
    ddb.create_table(
        TableName=name,
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return name


def _claim(table: str, job: str, site: str) -> list[dict[str, Any]]:
    """A claim-like transaction: create the claim only if absent, and count it on the job."""
    return [
        {
            "Put": {
                "TableName": table,
                "Item": {"pk": {"S": f"claim#{job}"}, "site": {"S": site}},
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        },
        {
            "Update": {
                "TableName": table,
                "Key": {"pk": {"S": f"job#{job}"}},
                "UpdateExpression": "ADD claims :one",
                "ExpressionAttributeValues": {":one": {"N": "1"}},
            }
        },
    ]


def _claims(ddb: Any, table: str, job: str) -> int:
    return int(ddb.get_item(TableName=table, Key={"pk": {"S": f"job#{job}"}})["Item"]["claims"]["N"])


def test_a_transaction_repeated_with_its_token_succeeds_without_applying_again(ddb: Any, table: str) -> None:
    # Given a transaction that went through with a token (its answer lost, say)
    token = str(uuid.uuid4())
    ddb.transact_write_items(TransactItems=_claim(table, "j1", "site-a"), ClientRequestToken=token)
    # When the same transaction is sent again with the same token, as botocore's retry sends it
    ddb.transact_write_items(TransactItems=_claim(table, "j1", "site-a"), ClientRequestToken=token)
    # Then it succeeds, and was applied once: its condition did not fail, its counter moved once
    assert _claims(ddb, table, "j1") == 1
    # While the same transaction with a new token is a new transaction, refused by its condition
    with pytest.raises(ClientError) as caught:
        ddb.transact_write_items(
            TransactItems=_claim(table, "j1", "site-a"), ClientRequestToken=str(uuid.uuid4())
        )
    assert caught.value.response["Error"]["Code"] == "TransactionCanceledException"


def test_the_same_token_with_other_items_is_an_idempotent_parameter_mismatch(ddb: Any, table: str) -> None:
    # Given a transaction that went through with a token
    token = str(uuid.uuid4())
    ddb.transact_write_items(TransactItems=_claim(table, "j2", "site-a"), ClientRequestToken=token)
    # When the token comes back with other items (another site's claim)
    with pytest.raises(ClientError) as caught:
        ddb.transact_write_items(TransactItems=_claim(table, "j2", "site-b"), ClientRequestToken=token)
    # Then DynamoDB's IdempotentParameterMismatchException comes back, and nothing changed
    assert caught.value.response["Error"]["Code"] == "IdempotentParameterMismatchException"
    claim = ddb.get_item(TableName=table, Key={"pk": {"S": "claim#j2"}})["Item"]
    assert claim["site"]["S"] == "site-a"
    assert _claims(ddb, table, "j2") == 1


def test_a_token_is_kept_for_ten_minutes(ddb: Any, table: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from jobtriggers.local import store_rules

    # Given a transaction that went through with a token
    token = str(uuid.uuid4())
    ddb.transact_write_items(TransactItems=_claim(table, "j3", "site-a"), ClientRequestToken=token)
    real_clock = store_rules._clock
    # When it is repeated 9 minutes later
    monkeypatch.setattr(store_rules, "_clock", lambda: real_clock() + 9 * 60)
    ddb.transact_write_items(TransactItems=_claim(table, "j3", "site-a"), ClientRequestToken=token)
    # Then it still succeeds without applying
    assert _claims(ddb, table, "j3") == 1
    # And 11 minutes later it is a new request: its condition now refuses it
    monkeypatch.setattr(store_rules, "_clock", lambda: real_clock() + 11 * 60)
    with pytest.raises(ClientError) as caught:
        ddb.transact_write_items(TransactItems=_claim(table, "j3", "site-a"), ClientRequestToken=token)
    assert caught.value.response["Error"]["Code"] == "TransactionCanceledException"
