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

from collections.abc import Callable
from typing import Any, TypeVar

from jobtriggers.dal.dynamo import get_item
from jobtriggers.dal.pages import PageStats, Partition, ReadBudget, Selected, filtered_page, query_page
from jobtriggers.models import OperationRecord
from jobtriggers.settings import table_names

R = TypeVar("R")


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

    def filtered_page(
        self,
        site_id: str,
        done: frozenset[bool] | None,
        select: Callable[[list[OperationRecord]], list[Selected[R] | None]],
        *,
        limit: int,
        page_token: str | None,
        query_identity: Any,
        budget: ReadBudget = ReadBudget(),
    ) -> tuple[list[R], str | None, PageStats]:
        """One page of a site's own operations that a filter selects (GET /operations), oldest
        first: by_site_done when the filter pins `done` (one partition per value), else by_site."""
        if done is None:
            index, keys = "by_site", ("id", "site_id", "created_at")
            partitions = [Partition("#s = :s", {":s": site_id}, {"#s": "site_id"})]
        else:
            index, keys = "by_site_done", ("id", "site_done", "created_at")
            partitions = [
                Partition("#sd = :sd", {":sd": site_done(site_id, d)}, {"#sd": "site_done"})
                for d in sorted(done)
            ]
        return filtered_page(
            table=self.table,
            index=index,
            key_attributes=keys,
            partitions=partitions,
            select=lambda items: select([operation_from_item(i) for i in items]),
            limit=limit,
            page_token=page_token,
            query_identity=query_identity,
            budget=budget,
            action="list operations",
        )
