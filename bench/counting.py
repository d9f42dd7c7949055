"""Count DynamoDB requests and items read/written with botocore's event hooks.

The hook sits on the client the data-access layer uses, so what it counts is exactly what the
code under test asks of DynamoDB. Items read follow DynamoDB's billing: a Query or Scan is
charged for every item it evaluates (`ScannedCount`), not for the ones a filter keeps.
`ReturnConsumedCapacity=TOTAL` is asked on every request and summed where the server answers it
(moto answers a constant 1.0 per request, which the report says rather than hides).
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

# Operations that accept ReturnConsumedCapacity.
_CAPACITY_OPS = frozenset(
    {
        "GetItem",
        "PutItem",
        "UpdateItem",
        "DeleteItem",
        "Query",
        "Scan",
        "BatchGetItem",
        "BatchWriteItem",
        "TransactGetItems",
        "TransactWriteItems",
    }
)


@dataclass
class Counts:
    """What a stretch of code asked of DynamoDB."""

    requests: Counter[str] = field(default_factory=Counter)
    items_read: int = 0
    # By the request's TableName ("" for the requests that name several: batches, transactions).
    items_read_by_table: Counter[str] = field(default_factory=Counter)
    items_written: int = 0
    conditional_failures: int = 0
    consumed_capacity: float = 0.0

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.total_requests,
            "requests_by_operation": dict(sorted(self.requests.items())),
            "items_read": self.items_read,
            "items_read_by_table": dict(sorted(self.items_read_by_table.items())),
            "items_written": self.items_written,
            "conditional_failures": self.conditional_failures,
            "consumed_capacity_reported": round(self.consumed_capacity, 3),
        }


def _items_read(operation: str, params: dict[str, Any], parsed: dict[str, Any]) -> int:
    """As the board's tally counts reads (jobtriggers.dal.read_tally), plus what a transaction's
    condition checks read, which the benchmark's write figures need."""
    from jobtriggers.dal.read_tally import items_read

    if operation == "TransactWriteItems" and "Error" not in parsed:
        return sum(1 for action in params.get("TransactItems", []) if "ConditionCheck" in action)
    return items_read(operation, parsed)


def _items_written(operation: str, params: dict[str, Any], parsed: dict[str, Any]) -> int:
    if "Error" in parsed:
        return 0
    if operation in ("PutItem", "UpdateItem", "DeleteItem"):
        return 1
    if operation == "BatchWriteItem":
        sent = sum(len(v) for v in params.get("RequestItems", {}).values())
        unprocessed = sum(len(v) for v in parsed.get("UnprocessedItems", {}).values())
        return sent - unprocessed
    if operation == "TransactWriteItems":
        return sum(1 for action in params.get("TransactItems", []) if "ConditionCheck" not in action)
    return 0


def _capacity(parsed: dict[str, Any]) -> float:
    consumed = parsed.get("ConsumedCapacity")
    if isinstance(consumed, dict):
        consumed = [consumed]
    if not isinstance(consumed, list):
        return 0.0
    return float(sum(c.get("CapacityUnits", 0.0) for c in consumed if isinstance(c, dict)))


class RequestCounter:
    """Attach to a boto3 DynamoDB client; `snapshot()` and `since()` give counts for a stretch."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = Counts()
        self._clients: list[Any] = []

    def attach(self, client: Any) -> None:
        client.meta.events.register("provide-client-params.dynamodb", self._ask_capacity)
        client.meta.events.register("after-call.dynamodb", self._after_call)
        self._clients.append(client)

    def detach(self) -> None:
        for client in self._clients:
            client.meta.events.unregister("provide-client-params.dynamodb", self._ask_capacity)
            client.meta.events.unregister("after-call.dynamodb", self._after_call)
        self._clients.clear()

    def _ask_capacity(self, params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        if model.name in _CAPACITY_OPS:
            params.setdefault("ReturnConsumedCapacity", "TOTAL")
        # after-call does not see the request parameters: keep them for it.
        context["bench_params"] = params

    def _after_call(self, parsed: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        operation = model.name
        params = context.get("bench_params", {})
        error = parsed.get("Error", {}).get("Code", "") if isinstance(parsed.get("Error"), dict) else ""
        with self._lock:
            c = self._counts
            c.requests[operation] += 1
            read = _items_read(operation, params, parsed)
            c.items_read += read
            if read:
                c.items_read_by_table[str(params.get("TableName", ""))] += read
            c.items_written += _items_written(operation, params, parsed)
            c.consumed_capacity += _capacity(parsed)
            if error in ("ConditionalCheckFailedException", "TransactionCanceledException"):
                c.conditional_failures += 1

    def snapshot(self) -> Counts:
        with self._lock:
            c = self._counts
            return Counts(
                requests=Counter(c.requests),
                items_read=c.items_read,
                items_read_by_table=Counter(c.items_read_by_table),
                items_written=c.items_written,
                conditional_failures=c.conditional_failures,
                consumed_capacity=c.consumed_capacity,
            )

    def since(self, before: Counts) -> Counts:
        now = self.snapshot()
        return Counts(
            requests=now.requests - before.requests,
            items_read=now.items_read - before.items_read,
            items_read_by_table=now.items_read_by_table - before.items_read_by_table,
            items_written=now.items_written - before.items_written,
            conditional_failures=now.conditional_failures - before.conditional_failures,
            consumed_capacity=now.consumed_capacity - before.consumed_capacity,
        )
