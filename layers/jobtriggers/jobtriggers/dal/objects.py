"""The objects table: `object#<id>` items (DRS objects) and `checksum#<type>#<value>` guard items.

Creating an object puts the object and one guard per checksum in one transaction, each with
`attribute_not_exists(pk)`: two objects never share a checksum and a retried create never makes a
second object, without a scan. A guard records the object it belongs to, so a conflict can name it.
"""

from __future__ import annotations

from typing import Any

from jobtriggers.dal.dynamo import Transacted, get_item, to_item, transact
from jobtriggers.errors import ConflictError, NotFoundError, ValidationFailed
from jobtriggers.models import Checksum, DrsObject
from jobtriggers.settings import table_names


def object_pk(object_id: str) -> str:
    return f"object#{object_id}"


def checksum_pk(checksum: Checksum) -> str:
    return f"checksum#{checksum.type}#{checksum.checksum}"


def object_puts(obj: DrsObject, table: str) -> list[dict[str, Any]]:
    """The transaction items that create `obj`: the object and one guard per checksum, each only if
    absent (the object first: cancellation reasons are read by position)."""
    doc = obj.model_dump(mode="json", exclude={"types"})
    try:
        item = to_item({"pk": object_pk(obj.id), **doc})
    except (TypeError, ArithmeticError) as exc:  # numbers DynamoDB cannot keep
        raise ValidationFailed(
            "the store cannot keep a number in this object: use numbers of at most 38 significant "
            "digits (exponent -130 to 125), or strings",
            loc=["body"],
        ) from exc
    puts: list[dict[str, Any]] = [
        {"Put": {"TableName": table, "Item": item, "ConditionExpression": "attribute_not_exists(pk)"}}
    ]
    for c in obj.checksums:
        guard = {"pk": checksum_pk(c), "object_id": obj.id, "type": c.type, "checksum": c.checksum}
        puts.append(
            {
                "Put": {
                    "TableName": table,
                    "Item": to_item(guard),
                    "ConditionExpression": "attribute_not_exists(pk)",
                    "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                }
            }
        )
    return puts


def object_conflict(
    obj: DrsObject, cancelled: Transacted, offset: int, table: str, what: str = "object"
) -> ConflictError | None:
    """The 409 naming what clashed when the items of `object_puts(obj)`, from position `offset` of
    a cancelled transaction, failed their conditions: the object id that exists already, or the
    checksum another object (named) carries. None when none of them failed."""
    if cancelled.failed_at(offset):
        return ConflictError(f"{what} '{obj.id}' already exists", object_id=obj.id)
    for position, checksum in enumerate(obj.checksums, start=offset + 1):
        if not cancelled.failed_at(position):
            continue
        old = cancelled.old_items[position] if position < len(cancelled.old_items) else None
        owner = (old or {}).get("object_id") or _checksum_owner(checksum, table)
        return ConflictError(
            f"checksum {checksum.type}:{checksum.checksum} of {what} '{obj.id}' belongs to object "
            f"'{owner}' already",
            object_id=owner,
        )
    return None


def _checksum_owner(checksum: Checksum, table: str) -> str | None:
    guard = get_item(table, {"pk": checksum_pk(checksum)}, "read a checksum guard")
    return guard.get("object_id") if guard else None


class ObjectRepository:
    def __init__(self, table_name: str | None = None) -> None:
        self.table = table_name or table_names().objects_table

    def create(self, obj: DrsObject) -> None:
        """Put the object and its checksum guards, all or nothing.

        ConflictError names the object id that exists already, or the checksum that another
        object (named too) carries.
        """
        done = transact(object_puts(obj, self.table), action=f"create object {obj.id}", site_data=True)
        if not done:
            self._raise_conflict(obj, done)

    def _raise_conflict(self, obj: DrsObject, cancelled: Transacted) -> None:
        """Turn the transaction's cancellation reasons into a 409 that names what clashed."""
        conflict = object_conflict(obj, cancelled, 0, self.table)
        raise conflict or ConflictError(
            f"object '{obj.id}' or one of its checksums changed concurrently; retry"
        )

    def get(self, object_id: str) -> DrsObject:
        item = get_item(self.table, {"pk": object_pk(object_id)}, f"read object {object_id}")
        if item is None:
            raise NotFoundError(f"object '{object_id}' does not exist")
        item.pop("pk", None)
        return DrsObject.model_validate(item)
