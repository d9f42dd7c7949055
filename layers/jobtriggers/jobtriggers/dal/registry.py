"""The registry table: object types, workflows, capabilities and triggers.

Items are the models' fields plus `kind` (the partition key). Only triggers carry
`object_type_id` and `workflow_id`, so the table's two indexes hold triggers alone.
"""

from __future__ import annotations

from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel

from jobtriggers.dal.tables import (
    dynamodb,
    from_item,
    query_all,
    query_page,
    raise_store_error,
    tables,
    to_item,
)
from jobtriggers.errors import NotFoundError
from jobtriggers.models import REGISTRY_MODELS, ObjectType, Trigger, Workflow

M = TypeVar("M", bound=BaseModel)

KIND_LABEL = {
    "object_type": "object type",
    "workflow": "workflow",
    "capability": "capability",
    "trigger": "trigger",
}


def _model(kind: str, item: dict[str, Any]) -> Any:
    item.pop("kind", None)
    return REGISTRY_MODELS[kind].model_validate(item)


class RegistryRepository:
    """Reads and writes registry entries; returns pydantic models."""

    def __init__(self, table_name: str | None = None) -> None:
        self.table = table_name or tables().registry_table

    def get(self, kind: str, entry_id: str) -> Any:
        try:
            resp = dynamodb().get_item(TableName=self.table, Key=to_item({"kind": kind, "id": entry_id}))
        except (ClientError, BotoCoreError) as exc:
            raise_store_error(exc, f"read {KIND_LABEL[kind]} {entry_id}")
        if "Item" not in resp:
            raise NotFoundError(f"{KIND_LABEL[kind]} '{entry_id}' does not exist")
        return _model(kind, from_item(resp["Item"]))

    def list_page(self, kind: str, limit: int, page_token: str | None) -> tuple[list[Any], str | None]:
        items, token = query_page(
            table=self.table,
            key_condition="kind = :k",
            values={":k": kind},
            limit=limit,
            page_token=page_token,
            action=f"list {KIND_LABEL[kind]}s",
        )
        return [_model(kind, i) for i in items], token

    def list_all(self, kind: str) -> list[Any]:
        items = query_all(
            table=self.table,
            key_condition="kind = :k",
            values={":k": kind},
            action=f"list {KIND_LABEL[kind]}s",
        )
        return [_model(kind, i) for i in items]

    def existing_ids(self, kind: str, ids: list[str]) -> set[str]:
        """Which of `ids` exist, in BatchGetItem calls of 100 keys."""
        found: set[str] = set()
        unique = sorted(set(ids))
        for start in range(0, len(unique), 100):
            keys: list[dict[str, Any]] = [
                to_item({"kind": kind, "id": i}) for i in unique[start : start + 100]
            ]
            request: dict[str, Any] = {self.table: {"Keys": keys, "ProjectionExpression": "id"}}
            while request:
                try:
                    resp = dynamodb().batch_get_item(RequestItems=request)
                except (ClientError, BotoCoreError) as exc:
                    raise_store_error(exc, f"look up {KIND_LABEL[kind]}s")
                found.update(from_item(i)["id"] for i in resp.get("Responses", {}).get(self.table, []))
                request = resp.get("UnprocessedKeys") or {}
        return found

    def all_triggers(self) -> list[Trigger]:
        """Every trigger, read strongly consistent from the base table (Query kind = trigger, a page
        at a time): it holds every trigger whose write was acknowledged before the read began, which
        the indexes, eventually consistent, need not. The registry is small (tens of triggers)."""
        triggers: list[Trigger] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "kind = :k",
            "ExpressionAttributeValues": to_item({":k": "trigger"}),
            "ConsistentRead": True,
        }
        while True:
            try:
                resp = dynamodb().query(**kwargs)
            except (ClientError, BotoCoreError) as exc:
                raise_store_error(exc, "read the triggers")
            triggers += [_model("trigger", from_item(i)) for i in resp.get("Items", [])]
            if not resp.get("LastEvaluatedKey"):
                return triggers
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    def _triggers_by(self, attribute: str, value: str, action: str) -> list[Trigger]:
        """Triggers through the index named after `attribute` (by_object_type / by_workflow)."""
        items = query_all(
            table=self.table,
            index=f"by_{attribute.removesuffix('_id')}",
            key_condition=f"{attribute} = :v",
            values={":v": value},
            action=action,
        )
        return [_model("trigger", i) for i in items]

    def triggers_for_object_type(self, object_type_id: str) -> list[Trigger]:
        """The triggers an object type fires: one Query on the by_object_type index (eventually
        consistent: fine for the public registry routes; TriggerResolver reads all_triggers())."""
        return self._triggers_by(
            "object_type_id", object_type_id, f"resolve the triggers of object type {object_type_id}"
        )

    def triggers_for_workflow(self, workflow_id: str) -> list[Trigger]:
        return self._triggers_by("workflow_id", workflow_id, f"list the triggers of workflow {workflow_id}")

    def workflows_for_object_type(self, object_type_id: str) -> list[Workflow]:
        return [self.get("workflow", t.workflow_id) for t in self.triggers_for_object_type(object_type_id)]

    def object_types_for_workflow(self, workflow_id: str) -> list[ObjectType]:
        return [self.get("object_type", t.object_type_id) for t in self.triggers_for_workflow(workflow_id)]

    def put(self, kind: str, entry: BaseModel) -> None:
        """Upsert (the seed is the source of truth: a replay writes the same item)."""
        item = {"kind": kind, **entry.model_dump(mode="json")}
        try:
            dynamodb().put_item(TableName=self.table, Item=to_item(item))
        except (ClientError, BotoCoreError) as exc:
            raise_store_error(exc, f"write {KIND_LABEL[kind]} {item['id']}")

    def delete(self, kind: str, entry_id: str) -> None:
        try:
            dynamodb().delete_item(TableName=self.table, Key=to_item({"kind": kind, "id": entry_id}))
        except (ClientError, BotoCoreError) as exc:
            raise_store_error(exc, f"delete {KIND_LABEL[kind]} {entry_id}")
