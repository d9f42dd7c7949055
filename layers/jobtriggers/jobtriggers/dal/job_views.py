"""Reads of the jobs and operations tables for operators' views (the job board): bounded index
queries, never a Scan, and batch gets by key.

Which index answers what (see dal/jobs.py for the attributes):
- a status's jobs: `by_status` (status, queue_at), or `by_workflow_status` when the workflow is known;
  `queue_at` is when a job became pending or finished, or its lease end while claimed, so "newest
  first" is most recently failed/finished/queued first and "oldest first" of claimed jobs is the
  lease that ends soonest;
- what a site holds: `by_site` (site_id, queue_at) from the earliest lease end on, so the site's
  finished history is not read;
- an object's jobs: `by_object` (object_id, workflow_id).

A list that filters (a site on a status's index) reads pages until it has the jobs it was asked
for, and at most `max_pages` of them; `JobListing.more` says whether more may match. The items each
read costs are counted where they are read (dal/read_tally.py), not here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from jobtriggers.dal.dynamo import dynamodb, from_item, raise_store_error, to_item
from jobtriggers.dal.jobs import job_from_item
from jobtriggers.dal.operations import operation_from_item
from jobtriggers.dal.pages import query_page
from jobtriggers.errors import RetryableStoreError
from jobtriggers.models import Job, JobStatus, OperationRecord
from jobtriggers.settings import table_names

# What a row of a list needs: not `config`, `result`, `claims` (they can be large; a job's page reads
# the whole item). `object_id` stands in for `config` (job_from_item falls back to it).
ROW_FIELDS = (
    "id",
    "workflow_id",
    "object_id",
    "created_at",
    "status",
    "site_id",
    "attempts",
    "max_attempts",
    "operation_id",
    "lease_expires_at",
    "cancel_requested",
    "last_error",
    "updated_at",
    "finished_at",
    "run",
    "version",
)
# A filtered list reads pages of this many items (DynamoDB's Limit counts items evaluated).
FILTERED_PAGE_SIZE = 200
DEFAULT_MAX_PAGES = 10
# BatchGetItem takes 100 keys a call; unprocessed keys are asked for again this many times.
BATCH_GET_MAX_KEYS = 100
BATCH_GET_ROUNDS = 5


@dataclass(frozen=True)
class JobListing:
    """Jobs of one list, in the index's order; `more`: more jobs match than these (or the reading
    stopped at its page bound before the index ended)."""

    jobs: list[Job]
    more: bool


class JobViews:
    def __init__(self, jobs_table: str | None = None, operations_table: str | None = None) -> None:
        self.table = jobs_table or table_names().jobs_table
        self.operations_table = operations_table or table_names().operations_table

    # ------------------------------------------------------------------ lists

    def jobs_of_status(
        self,
        status: JobStatus | str,
        *,
        workflow_id: str | None = None,
        site_id: str | None = None,
        newest_first: bool = True,
        limit: int,
        max_pages: int = DEFAULT_MAX_PAGES,
    ) -> JobListing:
        """Up to `limit` jobs of a status (of a workflow, held last by a site), by `queue_at`."""
        value = JobStatus(status).value
        values: dict[str, Any]
        if workflow_id is None:
            index, key, values = "by_status", "#st = :k", {":k": value}
            names = {"#st": "status"}
        else:
            index, key, values = "by_workflow_status", "#ws = :k", {":k": f"{workflow_id}#{value}"}
            names = {"#ws": "workflow_status"}
        filter_expression = None
        if site_id is not None:
            filter_expression = "#site = :site"
            names["#site"] = "site_id"
            values[":site"] = site_id
        return self._list(
            index=index,
            key_condition=key,
            values=values,
            names=names,
            filter_expression=filter_expression,
            forward=not newest_first,
            limit=limit,
            max_pages=max_pages,
            action=f"list {value} jobs",
        )

    def claimed_of_site(
        self, site_id: str, since: str, *, limit: int, max_pages: int = DEFAULT_MAX_PAGES
    ) -> JobListing:
        """The jobs a site holds: its `by_site` entries from `since` (at or before the earliest lease
        end of all claimed jobs) on, claimed ones only, lease ending soonest first. The site's
        finished jobs lie before `since` and are not read."""
        return self._list(
            index="by_site",
            key_condition="#site = :site AND queue_at >= :since",
            values={":site": site_id, ":since": since, ":claimed": JobStatus.claimed.value},
            names={"#site": "site_id", "#st": "status"},
            filter_expression="#st = :claimed",
            forward=True,
            limit=limit,
            max_pages=max_pages,
            action=f"list the jobs site {site_id} holds",
        )

    def earliest_lease_end(self) -> str | None:
        """The lease end (`queue_at`) of the claimed job whose lease ends first; None when no job is
        claimed. One item."""
        items, _ = query_page(
            table=self.table,
            index="by_status",
            key_condition="#st = :k",
            values={":k": JobStatus.claimed.value},
            names={"#st": "status"},
            limit=1,
            page_token=None,
            projection=("queue_at",),
            action="read the earliest lease end",
        )
        return str(items[0]["queue_at"]) if items else None

    def oldest_pending_since(self, workflow_id: str) -> str | None:
        """When the workflow's oldest pending job became pending (its `queue_at`); None when none is.
        One item: `by_workflow_status`, oldest first, Limit 1."""
        items, _ = query_page(
            table=self.table,
            index="by_workflow_status",
            key_condition="#ws = :k",
            values={":k": f"{workflow_id}#{JobStatus.pending.value}"},
            names={"#ws": "workflow_status"},
            limit=1,
            page_token=None,
            projection=("queue_at",),
            action=f"read the oldest pending job of {workflow_id}",
        )
        return str(items[0]["queue_at"]) if items else None

    def jobs_of_object(
        self,
        object_id: str,
        *,
        workflow_id: str | None = None,
        limit: int,
        max_pages: int = DEFAULT_MAX_PAGES,
    ) -> JobListing:
        """An object's jobs, of every status (of one workflow when given), by workflow id."""
        key = "object_id = :o"
        values: dict[str, Any] = {":o": object_id}
        if workflow_id is not None:
            key += " AND workflow_id = :w"
            values[":w"] = workflow_id
        return self._list(
            index="by_object",
            key_condition=key,
            values=values,
            names=None,
            filter_expression=None,
            forward=True,
            limit=limit,
            max_pages=max_pages,
            action=f"list the jobs of object {object_id}",
        )

    def _list(
        self,
        *,
        index: str,
        key_condition: str,
        values: dict[str, Any],
        names: dict[str, str] | None,
        filter_expression: str | None,
        forward: bool,
        limit: int,
        max_pages: int,
        action: str,
    ) -> JobListing:
        """Pages of the index until `limit` + 1 jobs matched (the one more says there are more), the
        index ended, or `max_pages` were read."""
        wanted = limit + 1
        jobs: list[Job] = []
        token: str | None = None
        for _ in range(max_pages):
            page_size = FILTERED_PAGE_SIZE if filter_expression else wanted - len(jobs)
            items, token = query_page(
                table=self.table,
                index=index,
                key_condition=key_condition,
                values=values,
                names=names,
                filter_expression=filter_expression,
                forward=forward,
                limit=page_size,
                page_token=token,
                projection=ROW_FIELDS,
                action=action,
            )
            jobs += [job_from_item(i) for i in items]
            if len(jobs) >= wanted or not token:
                break
        return JobListing(jobs=jobs[:limit], more=len(jobs) > limit or token is not None)

    # ------------------------------------------------------------------ a job's page

    def operations(self, op_ids: Sequence[str]) -> dict[str, OperationRecord]:
        """Operations by id (BatchGetItem, 100 keys a call); ids that do not exist are left out."""
        wanted = list(dict.fromkeys(op_ids))
        found: dict[str, OperationRecord] = {}
        for start in range(0, len(wanted), BATCH_GET_MAX_KEYS):
            keys: list[dict[str, Any]] = [
                to_item({"id": op_id}) for op_id in wanted[start : start + BATCH_GET_MAX_KEYS]
            ]
            for _ in range(BATCH_GET_ROUNDS):
                try:
                    resp: dict[str, Any] = dict(
                        dynamodb().batch_get_item(RequestItems={self.operations_table: {"Keys": keys}})
                    )
                except (ClientError, BotoCoreError) as exc:
                    raise_store_error(exc, "read the operations of a job")
                for raw in resp.get("Responses", {}).get(self.operations_table, []):
                    op = operation_from_item(from_item(raw))
                    found[op.id] = op
                keys = list(resp.get("UnprocessedKeys", {}).get(self.operations_table, {}).get("Keys", []))
                if not keys:
                    break
            else:
                raise RetryableStoreError("the store left operations unread after 5 rounds; retry")
        return found
