"""The operations table: one operation per claim, the NMDC Runtime's long-running-operation record.

Items carry the served fields (`id`, `done`, `expire_time`, `result`, `metadata`) plus what the
rules need without reading the job (`job_id`, `site_id`, `attempt`, `claim_index`, `lease_seconds`,
`max_attempts`) and the index attributes:
- `site_id` and `created_at`                      -> by_site (a site's own operations)
- `site_done` = "{site_id}#{true|false}"          -> by_site_done (filter by `done`)
`expire_time` is the lease end while the operation is live (each heartbeat moves it), and the
last lease end once it is done. Operations are written only together with their job, in the
transactions of dal/jobs.py.
"""

from __future__ import annotations

from typing import Any

from jobtriggers.dal.dynamo import get_item
from jobtriggers.dal.pages import query_page
from jobtriggers.models import OperationRecord
from jobtriggers.settings import table_names


def site_done(site_id: str, done: bool) -> str:
    return f"{site_id}#{'true' if done else 'false'}"


def operation_item(op: OperationRecord) -> dict[str, Any]:
    return {**op.model_dump(mode="json"), "site_done": site_done(op.site_id, op.done)}


def operation_from_item(item: dict[str, Any]) -> OperationRecord:
    return OperationRecord.model_validate(
        {k: v for k, v in item.items() if k in OperationRecord.model_fields}
    )


class OperationRepository:
    def __init__(self, table_name: str | None = None) -> None:
        self.table = table_name or table_names().operations_table

    def get(self, op_id: str) -> OperationRecord | None:
        item = get_item(self.table, {"id": op_id}, f"read operation {op_id}")
        return operation_from_item(item) if item else None

    def list_page(
        self,
        *,
        site_id: str,
        done: bool | None = None,
        limit: int = 20,
        page_token: str | None = None,
    ) -> tuple[list[OperationRecord], str | None]:
        """A site's own operations, oldest first (by_site / by_site_done)."""
        if done is None:
            index, cond, values = "by_site", "site_id = :s", {":s": site_id}
        else:
            index, cond, values = "by_site_done", "site_done = :sd", {":sd": site_done(site_id, done)}
        items, token = query_page(
            table=self.table,
            index=index,
            key_condition=cond,
            values=values,
            limit=limit,
            page_token=page_token,
            action="list operations",
        )
        return [operation_from_item(i) for i in items], token
