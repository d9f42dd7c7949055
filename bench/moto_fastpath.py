"""Make moto's TransactWriteItems cost what DynamoDB's does: proportional to the items it touches.

moto backs up every table a transaction names with `copy.deepcopy` before it starts, stream records
included, so one tag (a ConditionCheck on the object + a Put of the assignment) costs O(store):
about 0.5 s at 2,000 tagged objects, tens of seconds at 50,000. That is the emulator's cost, not
the service's, and it would swamp every figure. In the benchmark process only, the backup keeps
the touched items and each table's stream length instead, and restores exactly those on failure.
The embedded server runs one request at a time (jobtriggers.local.store), so nothing else can
change those items between the backup and a rollback. What a transaction reads, writes and
returns is unchanged; the bench's own counts come from the client side either way.

Also: moto compares key values through `DynamoType.cast_value`, which runs five type tests before
it returns a string as it is; a Query over 50,000 items calls it about a million times per page.
Strings, binaries and booleans now return at once (the same value the original returns).
"""

from __future__ import annotations

import copy
from typing import Any

_installed = False


class _TableCopyShim:
    """moto.dynamodb.models' `copy`, except that copying a whole Table returns the table itself."""

    def __init__(self, table_type: type) -> None:
        self._table_type = table_type

    def __getattr__(self, name: str) -> Any:
        return getattr(copy, name)

    def deepcopy(self, value: Any, memo: Any = None) -> Any:
        if isinstance(value, self._table_type):
            return value
        return copy.deepcopy(value, memo)


def _key_of(table: Any, op: dict[str, Any]) -> tuple[Any, Any] | None:
    from moto.dynamodb.models.dynamo_type import DynamoType

    raw = op.get("Key") or op.get("Item")
    if not raw or table.hash_key_attr not in raw:
        return None
    hash_value = DynamoType(raw[table.hash_key_attr])
    range_value = None
    if table.range_key_attr:
        if table.range_key_attr not in raw:
            return None
        range_value = DynamoType(raw[table.range_key_attr])
    return hash_value, range_value


def _fast_scalar_cast() -> None:
    from moto.dynamodb.models.dynamo_type import DynamoType

    original = DynamoType.cast_value

    def cast_value(self: Any) -> Any:
        if self.type in ("S", "B", "BOOL"):
            return self.value
        return original.fget(self)  # type: ignore[attr-defined]

    DynamoType.cast_value = property(cast_value)  # type: ignore[assignment,method-assign]


def install() -> None:
    """Patch moto in this process (idempotent)."""
    global _installed
    if _installed:
        return
    import moto.dynamodb.models as models
    from moto.dynamodb.models.table import Table

    models.copy = _TableCopyShim(Table)  # type: ignore[assignment]
    _fast_scalar_cast()
    original = models.DynamoDBBackend.transact_write_items

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        saved: list[tuple[Any, Any, Any, Any]] = []
        stream_lengths: dict[str, tuple[Any, int]] = {}
        for action in transact_items:
            _, op = next(iter(action.items()))
            table = self.tables.get(op.get("TableName"))
            if table is None:
                continue
            if table.stream_shard is not None and table.name not in stream_lengths:
                stream_lengths[table.name] = (table, len(table.stream_shard.items))
            key = _key_of(table, op)
            if key is None:
                continue
            current = table.get_item(*key) if key[1] is not None or not table.range_key_attr else None
            saved.append((table, key[0], key[1], copy.deepcopy(current)))
        try:
            original(self, transact_items)
        except Exception:
            for table, hash_value, range_value, item in reversed(saved):
                if range_value is not None:
                    bucket = table.items[hash_value]
                    if item is None:
                        bucket.pop(range_value, None)
                    else:
                        bucket[range_value] = item
                    if not bucket:
                        table.items.pop(hash_value, None)
                elif item is None:
                    table.items.pop(hash_value, None)
                else:
                    table.items[hash_value] = item
            for table, length in stream_lengths.values():
                del table.stream_shard.items[length:]
            raise

    models.DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]
    _installed = True
