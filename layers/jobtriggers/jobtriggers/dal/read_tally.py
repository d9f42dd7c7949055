"""How many items a stretch of code read, counted where DynamoDB answers: the job board reports it
for each refresh (`items_read`), so an operator sees what a view costs.

A hook on the data-access layer's client adds up, for every call made inside `tallying_reads()`
(in this thread, or in threads that run a copy of its context), the items DynamoDB charges as read:
a Query's or Scan's `ScannedCount` (what it evaluated, not what a filter kept), the items a GetItem
or BatchGetItem returned. So whatever a view reads through dal/ is counted, by whichever repository.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from jobtriggers.dal.dynamo import dynamodb

_HOOK_ID = "jobtriggers.read_tally"


class ReadTally:
    """Items read and requests made, by operation; safe to add to from several threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items = 0
        self.requests: Counter[str] = Counter()

    def add(self, operation: str, parsed: dict[str, Any]) -> None:
        with self._lock:
            self.requests[operation] += 1
            self.items += items_read(operation, parsed)

    @property
    def total_requests(self) -> int:
        with self._lock:
            return sum(self.requests.values())


def items_read(operation: str, parsed: dict[str, Any]) -> int:
    """The items one answer counts as read (an error answer reads none)."""
    if "Error" in parsed:
        return 0
    if operation in ("Query", "Scan"):
        return int(parsed.get("ScannedCount", parsed.get("Count", 0)))
    if operation == "GetItem":
        return 1 if "Item" in parsed else 0
    if operation == "BatchGetItem":
        return sum(len(v) for v in parsed.get("Responses", {}).values())
    if operation == "TransactGetItems":
        return len(parsed.get("Responses", []))
    return 0


_current: ContextVar[ReadTally | None] = ContextVar("jobtriggers_read_tally", default=None)


def _after_call(parsed: dict[str, Any], model: Any, **_: Any) -> None:
    tally = _current.get()
    if tally is not None:
        tally.add(model.name, parsed)


@contextmanager
def tallying_reads() -> Iterator[ReadTally]:
    """Count what the code inside reads. Threads it starts count too when they run in a copy of its
    context (`contextvars.copy_context().run`); other threads' reads are not counted."""
    # Registered on the client of the moment (clients are rebuilt when the endpoint changes); the
    # unique id keeps it to one registration per client.
    dynamodb().meta.events.register("after-call.dynamodb", _after_call, unique_id=_HOOK_ID)
    tally = ReadTally()
    token = _current.set(tally)
    try:
        yield tally
    finally:
        _current.reset(token)
