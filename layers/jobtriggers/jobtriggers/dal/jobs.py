"""The jobs table, keyed by `{workflow_id}#{object_id}`.

A job is created with a conditional put (`attribute_not_exists(job_key)`): a redelivered stream
record, a second type that triggers the same workflow, a backfill and a reconcile all race for
the same key, and exactly one of them wins.

Index attributes kept on every item (see template.yaml):
- `listing` = "job" and `created_at`            -> by_created (all jobs, oldest/newest first)
- `workflow_id` and `created_at`                -> by_workflow
- `object_id` and `workflow_id`                 -> by_object
- `status` and `queue_at`                        -> by_status
- `workflow_status` = "{workflow}#{status}"      -> by_workflow_status
- `site_id` (holder) and `queue_at`              -> by_site
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from jobtriggers.dal.tables import (
    dynamodb,
    error_code,
    from_item,
    query_page,
    raise_store_error,
    tables,
    to_item,
)
from jobtriggers.errors import NotFoundError
from jobtriggers.models import Job, JobStatus, job_id_for, job_key, job_key_from_id


def new_job_item(workflow_id: str, object_id: str, trigger_id: str | None, created_at: str) -> dict[str, Any]:
    status = JobStatus.pending.value
    return {
        "job_key": job_key(workflow_id, object_id),
        "id": job_id_for(workflow_id, object_id),
        "workflow_id": workflow_id,
        "object_id": object_id,
        "trigger_id": trigger_id,
        "config": {"object_id": object_id},
        "status": status,
        "workflow_status": f"{workflow_id}#{status}",
        "listing": "job",
        "created_at": created_at,
        "queue_at": created_at,
        "updated_at": created_at,
        "attempts": 0,
        "claims": [],
    }


def job_from_item(item: dict[str, Any]) -> Job:
    return Job(
        id=item["id"],
        workflow={"id": item["workflow_id"]},
        config=item.get("config") or {"object_id": item["object_id"]},
        created_at=item["created_at"],
        status=item["status"],
        trigger_id=item.get("trigger_id"),
        claims=item.get("claims", []),
        attempts=item.get("attempts", 0),
        max_attempts=item.get("max_attempts"),
        site_id=item.get("site_id"),
        operation_id=item.get("operation_id"),
        lease_expires_at=item.get("lease_expires_at") if item["status"] == JobStatus.claimed.value else None,
        result=item.get("result"),
        last_error=item.get("last_error"),
        updated_at=item.get("updated_at"),
    )


class JobRepository:
    def __init__(self, table_name: str | None = None) -> None:
        self.table = table_name or tables().jobs_table

    def create_if_absent(self, item: dict[str, Any]) -> bool:
        """Put a new job unless its key exists. True when this call created it."""
        try:
            dynamodb().put_item(
                TableName=self.table,
                Item=to_item(item),
                ConditionExpression="attribute_not_exists(job_key)",
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise_store_error(exc, f"create job {item['job_key']}")
        except BotoCoreError as exc:
            raise_store_error(exc, f"create job {item['job_key']}")
        return True

    def get_item(self, key: str, consistent: bool = True) -> dict[str, Any] | None:
        try:
            resp = dynamodb().get_item(
                TableName=self.table, Key=to_item({"job_key": key}), ConsistentRead=consistent
            )
        except (ClientError, BotoCoreError) as exc:
            raise_store_error(exc, f"read job {key}")
        return from_item(resp["Item"]) if "Item" in resp else None

    def get_item_by_id(self, job_id: str, consistent: bool = True) -> dict[str, Any]:
        key = job_key_from_id(job_id)
        item = self.get_item(key, consistent) if key else None
        if item is None:
            raise NotFoundError(f"job '{job_id}' does not exist")
        return item

    def get(self, job_id: str) -> Job:
        return job_from_item(self.get_item_by_id(job_id))

    def list_page(
        self,
        *,
        workflow_id: str | None = None,
        object_id: str | None = None,
        status: str | None = None,
        site_id: str | None = None,
        limit: int = 20,
        page_token: str | None = None,
        newest_first: bool = False,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Pick the index that answers the filters; remaining equalities become a filter on it."""
        names: dict[str, str] = {}
        values: dict[str, Any] = {}
        filters: list[str] = []

        def add_filter(attr: str, value: str) -> None:
            names[f"#{attr}"] = attr
            values[f":f_{attr}"] = value
            filters.append(f"#{attr} = :f_{attr}")

        if object_id is not None:
            index, cond = "by_object", "object_id = :o"
            values[":o"] = object_id
            if workflow_id is not None:
                cond += " AND workflow_id = :w"
                values[":w"] = workflow_id
            if status is not None:
                add_filter("status", status)
            if site_id is not None:
                add_filter("site_id", site_id)
        elif site_id is not None:
            index, cond = "by_site", "site_id = :s"
            values[":s"] = site_id
            if workflow_id is not None:
                add_filter("workflow_id", workflow_id)
            if status is not None:
                add_filter("status", status)
        elif workflow_id is not None and status is not None:
            index, cond = "by_workflow_status", "workflow_status = :ws"
            values[":ws"] = f"{workflow_id}#{status}"
        elif workflow_id is not None:
            index, cond = "by_workflow", "workflow_id = :w"
            values[":w"] = workflow_id
        elif status is not None:
            index, cond = "by_status", "#st = :st"
            names["#st"] = "status"
            values[":st"] = status
        else:
            index, cond = "by_created", "listing = :l"
            values[":l"] = "job"
        return query_page(
            table=self.table,
            index=index,
            key_condition=cond,
            values=values,
            names=names or None,
            filter_expression=" AND ".join(filters) or None,
            limit=limit,
            page_token=page_token,
            forward=not newest_first,
            action="list jobs",
        )
