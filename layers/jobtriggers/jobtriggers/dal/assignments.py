"""The object-type table: one item per (object, object type). Its stream drives the trigger engine.

Writes are conditional so that a retried request never produces a second INSERT record: adding an
assignment that exists is a no-op, and removing one that is gone is too.
"""

from __future__ import annotations

import time
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from jobtriggers.dal.dynamo import dynamodb, from_item, raise_store_error, to_item, transact
from jobtriggers.dal.objects import object_pk
from jobtriggers.dal.pages import query_all, query_page
from jobtriggers.errors import ConflictError, NotFoundError
from jobtriggers.models import ObjectTypeAssignment, iso, utcnow
from jobtriggers.settings import table_names

# A transaction holds at most 100 actions; one is the object's existence check.
MAX_TYPES_PER_REPLACE = 99
# BatchGetItem reads at most 100 keys a call.
BATCH_GET_KEYS = 100


def assignment_put(assignment: ObjectTypeAssignment, table: str) -> dict[str, Any]:
    """The transaction item that writes one assignment, only if absent: a retried write never makes
    a second INSERT record (the stream's, which makes jobs). Lineage fields ride on the item."""
    return {
        "Put": {
            "TableName": table,
            "Item": to_item(assignment.model_dump(mode="json")),
            "ConditionExpression": "attribute_not_exists(object_id)",
        }
    }


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

    def assignments_of(self, object_type_id: str, object_ids: list[str]) -> dict[str, ObjectTypeAssignment]:
        """The assignments of one type to these objects, by object id (BatchGetItem, 100 keys a
        call; strongly consistent): what a backfill needs to give each job its lineage, since the
        type index it pages through holds keys only."""
        found: dict[str, ObjectTypeAssignment] = {}
        unique = sorted(set(object_ids))
        for start in range(0, len(unique), BATCH_GET_KEYS):
            keys = [
                to_item({"object_id": o, "object_type_id": object_type_id})
                for o in unique[start : start + BATCH_GET_KEYS]
            ]
            request: dict[str, Any] = {self.table: {"Keys": keys, "ConsistentRead": True}}
            pause = 0.05
            while request:
                try:
                    resp = dynamodb().batch_get_item(RequestItems=request)
                except (ClientError, BotoCoreError) as exc:
                    raise_store_error(exc, f"read assignments of object type {object_type_id}")
                for item in resp.get("Responses", {}).get(self.table, []):
                    assignment = ObjectTypeAssignment.model_validate(from_item(item))
                    found[assignment.object_id] = assignment
                request = resp.get("UnprocessedKeys") or {}
                if request:  # throttled in part: back off before asking for the rest
                    time.sleep(pause)
                    pause = min(pause * 2, 1.0)
        return found

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
        return assignment_put(item, self.table)

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
