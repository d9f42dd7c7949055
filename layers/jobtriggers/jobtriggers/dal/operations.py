"""The operations table: one operation per claim, the NMDC Runtime's long-running-operation record.

Items carry the served fields (`id`, `done`, `expire_time`, `result`, `metadata`) plus:
- `site_id` and `created_at`                      -> by_site (a site's own operations)
- `site_done` = "{site_id}#{true|false}"          -> by_site_done (filter by `done`)
- `job_key`, `lease_seconds`, `max_attempts`       -> what PATCH needs without a registry read
`expire_time` is the lease end while the operation is live (each heartbeat moves it), and the
last lease end once it is done.
Operations are written only together with their job, in the transactions of dal/claims.py.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from jobtriggers.dal.tables import dynamodb, from_item, query_page, raise_store_error, tables, to_item
from jobtriggers.models import Operation


def site_done(site_id: str, done: bool) -> str:
    return f"{site_id}#{'true' if done else 'false'}"


def new_operation_item(
    *,
    op_id: str,
    job_key: str,
    site_id: str,
    created_at: str,
    lease_expires_at: str,
    lease_seconds: int,
    max_attempts: int,
    metadata: dict[str, Any],
) -> dict[str, Any]:
    return {
        "id": op_id,
        "job_key": job_key,
        "site_id": site_id,
        "site_done": site_done(site_id, False),
        "done": False,
        "created_at": created_at,
        "updated_at": created_at,
        "expire_time": lease_expires_at,
        "lease_seconds": lease_seconds,
        "max_attempts": max_attempts,
        "metadata": metadata,
    }


def operation_from_item(item: dict[str, Any]) -> Operation:
    return Operation(
        id=item["id"],
        done=bool(item.get("done", False)),
        expire_time=item["expire_time"],
        result=item.get("result"),
        metadata=item.get("metadata") or {},
    )


class OperationRepository:
    def __init__(self, table_name: str | None = None) -> None:
        self.table = table_name or tables().operations_table

    def get_item(self, op_id: str) -> dict[str, Any] | None:
        try:
            resp = dynamodb().get_item(TableName=self.table, Key=to_item({"id": op_id}), ConsistentRead=True)
        except (ClientError, BotoCoreError) as exc:
            raise_store_error(exc, f"read operation {op_id}")
        return from_item(resp["Item"]) if "Item" in resp else None

    def list_page(
        self,
        *,
        site_id: str,
        done: bool | None = None,
        limit: int = 20,
        page_token: str | None = None,
        newest_first: bool = False,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A site's own operations, oldest first unless asked otherwise (by_site / by_site_done)."""
        if done is None:
            index, cond, values = "by_site", "site_id = :s", {":s": site_id}
        else:
            index, cond, values = "by_site_done", "site_done = :sd", {":sd": site_done(site_id, done)}
        return query_page(
            table=self.table,
            index=index,
            key_condition=cond,
            values=values,
            limit=limit,
            page_token=page_token,
            forward=not newest_first,
            action="list operations",
        )
