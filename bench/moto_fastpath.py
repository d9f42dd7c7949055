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
from collections.abc import Iterator
from contextlib import contextmanager
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


# Calls that leave every table as it was (any other clears the grouping below).
_READ_ACTIONS = frozenset(
    {"Query", "Scan", "GetItem", "BatchGetItem", "TransactGetItems", "DescribeTable", "ListTables"}
)


def _hashable(value: Any) -> tuple[str, Any]:
    return (value.type, value.value if isinstance(value.value, str | bytes) else repr(value.value))


@contextmanager
def index_queries_by_their_key() -> Iterator[None]:
    """While inside: a Query of a global secondary index looks only at the items whose index
    partition key has the value asked for, as DynamoDB does, instead of at every item of the table.

    moto answers such a Query by sorting the whole table by its primary key (`all_items()`: O(N log N)
    comparisons, about 90 ms at 10,000 items here), walking it to keep the items whose index keys
    match, then sorting those by the index's keys and the table's (a total order) and paging them.
    Here the table's items are grouped by each index partition key once (again after any write),
    and the walk is given the one group asked for, through the embedded store's candidate finders
    (jobtriggers.local.store, which gives a Query of a table's own key its partition the same way):
    moto checks, sorts, filters and pages them exactly as before, so the answer is the same; only
    the items it could never return are not walked. Benchmark only: the grouping is redone after
    every write, which pays in read-heavy runs like the board's. Scans are unchanged."""
    from moto.dynamodb.models.table import Table
    from moto.dynamodb.responses import DynamoHandler

    from jobtriggers.local import store

    if not getattr(Table, "_queries_only_candidates", False):
        raise RuntimeError("start the embedded store first: its Query asks the candidate finders")
    groups: dict[tuple[int, str], dict[tuple[str, Any], list[Any]]] = {}
    original_call = DynamoHandler.call_action

    def call_action(self: Any) -> Any:
        if self._get_action() not in _READ_ACTIONS:
            groups.clear()
        return original_call(self)

    def index_group(
        table: Any, hash_key: Any, index_name: str | None, conditions: list[tuple[str, Any]]
    ) -> list[Any] | None:
        if index_name is None or len(conditions) != 1:
            return None
        attribute, value = conditions[0]
        key = (id(table), attribute)
        if key not in groups:
            by_value: dict[tuple[str, Any], list[Any]] = {}
            for item in Table.all_items(table):  # no Query under way here: the whole table
                found = item.attrs.get(attribute)
                if found is not None:
                    by_value.setdefault(_hashable(found), []).append(item)
            groups[key] = by_value
        return list(groups[key].get(_hashable(value), []))

    store.candidate_finders.insert(0, index_group)
    DynamoHandler.call_action = call_action  # type: ignore[method-assign]
    try:
        yield
    finally:
        store.candidate_finders.remove(index_group)
        DynamoHandler.call_action = original_call  # type: ignore[method-assign]


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
