"""The registry table: object types, workflows, capabilities and triggers.

Items are the models' fields plus `kind` (the partition key). Only triggers carry
`object_type_id` and `workflow_id`, so the table's two indexes hold triggers alone.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel

from jobtriggers.dal.dynamo import dynamodb, from_item, get_item, raise_store_error, to_item
from jobtriggers.dal.pages import query_all
from jobtriggers.errors import NotFoundError
from jobtriggers.models import REGISTRY_MODELS, ObjectType, Trigger, Workflow
from jobtriggers.settings import table_names

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
        self.table = table_name or table_names().registry_table

    def get(self, kind: str, entry_id: str) -> Any:
        item = get_item(
            self.table, {"kind": kind, "id": entry_id}, f"read {KIND_LABEL[kind]} {entry_id}", False
        )
        if item is None:
            raise NotFoundError(f"{KIND_LABEL[kind]} '{entry_id}' does not exist")
        return _model(kind, item)

    def workflow(self, workflow_id: str) -> Workflow:
        workflow: Workflow = self.get("workflow", workflow_id)
        return workflow

    def workflows(self) -> list[Workflow]:
        return list(self.list_all("workflow"))

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
        items = query_all(
            table=self.table,
            key_condition="kind = :k",
            values={":k": "trigger"},
            consistent=True,
            action="read the triggers",
        )
        return [_model("trigger", i) for i in items]

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
        consistent: fine for the public registry routes; TriggerEngine reads all_triggers())."""
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
