"""The object-type table: one item per (object, object type). Its stream drives the trigger engine.

Writes are conditional so that a retried request never produces a second INSERT record: adding an
assignment that exists is a no-op, and removing one that is gone is too.
"""

from __future__ import annotations

from typing import Any

from jobtriggers.dal.dynamo import to_item, transact
from jobtriggers.dal.objects import object_pk
from jobtriggers.dal.pages import query_all, query_page
from jobtriggers.errors import ConflictError, NotFoundError
from jobtriggers.models import ObjectTypeAssignment, iso, utcnow
from jobtriggers.settings import table_names

# A transaction holds at most 100 actions; one is the object's existence check.
MAX_TYPES_PER_REPLACE = 99


class AssignmentRepository:
    def __init__(self, table_name: str | None = None, objects_table: str | None = None) -> None:
        self.table = table_name or table_names().object_types_table
        self.objects_table = objects_table or table_names().objects_table

    def types_of(self, object_id: str) -> list[ObjectTypeAssignment]:
        items = query_all(
            table=self.table,
            key_condition="object_id = :o",
            values={":o": object_id},
            action=f"read the types of object {object_id}",
        )
        return [ObjectTypeAssignment.model_validate(i) for i in items]

    def objects_with_type(
        self, object_type_id: str, limit: int, page_token: str | None
    ) -> tuple[list[str], str | None]:
        """Object ids carrying a type, a page at a time (the index is KEYS_ONLY)."""
        items, token = query_page(
            table=self.table,
            index="by_object_type",
            key_condition="object_type_id = :t",
            values={":t": object_type_id},
            limit=limit,
            page_token=page_token,
            action=f"list objects of type {object_type_id}",
        )
        return [i["object_id"] for i in items], token

    def _object_exists_check(self, object_id: str) -> dict[str, Any]:
        return {
            "ConditionCheck": {
                "TableName": self.objects_table,
                "Key": to_item({"pk": object_pk(object_id)}),
                "ConditionExpression": "attribute_exists(pk)",
            }
        }

    def _put(self, object_id: str, type_id: str, by: str | None, now: str) -> dict[str, Any]:
        item = ObjectTypeAssignment(
            object_id=object_id, object_type_id=type_id, assigned_at=now, assigned_by=by
        )
        return {
            "Put": {
                "TableName": self.table,
                "Item": to_item(item.model_dump()),
                "ConditionExpression": "attribute_not_exists(object_id)",
            }
        }

    def _delete(self, object_id: str, type_id: str) -> dict[str, Any]:
        return {
            "Delete": {
                "TableName": self.table,
                "Key": to_item({"object_id": object_id, "object_type_id": type_id}),
                "ConditionExpression": "attribute_exists(object_id)",
            }
        }

    def apply(self, object_id: str, add: list[str], remove: list[str], by: str | None) -> None:
        """Add and remove types of an existing object in one transaction (all or nothing).

        Raises NotFoundError when the object does not exist, ConflictError when the set changed
        under us (a concurrent writer); the caller re-reads and retries.
        """
        now = iso(utcnow())
        actions = [self._object_exists_check(object_id)]
        actions += [self._put(object_id, t, by, now) for t in add]
        actions += [self._delete(object_id, t) for t in remove]
        done = transact(actions, action=f"change the types of object {object_id}")
        if done.failed_at(0):
            raise NotFoundError(f"object '{object_id}' does not exist")
        if not done:
            raise ConflictError(f"the types of object '{object_id}' changed concurrently")
