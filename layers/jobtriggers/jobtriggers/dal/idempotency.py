"""Idempotency records of POST /jobs:claim: Powertools' Idempotency utility, on its own table.

The table is declared in template.yaml (IdempotencyTable: key `id`, TTL on `expiration`) and only
ApiFunction may read and write it. The persistence layer uses the data-access layer's DynamoDB
client, so its calls are retried, configured and observed like every other store call.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

from jobtriggers.dal.dynamo import dynamodb
from jobtriggers.settings import idempotency_settings


def claim_records() -> DynamoDBPersistenceLayer:
    """The persistence layer for claim-next's idempotency keys (one per table and client)."""
    return _persistence(idempotency_settings().idempotency_table, dynamodb())


@lru_cache(maxsize=4)
def _persistence(table_name: str, client: Any) -> DynamoDBPersistenceLayer:
    return DynamoDBPersistenceLayer(table_name=table_name, boto3_client=client)
