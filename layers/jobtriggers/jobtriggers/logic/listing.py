"""GET /jobs and GET /operations with a `filter`: which index partitions to read, what each candidate
is served as, and how much one page may cost.

A filter (logic/filters.py: the MongoDB subset NMDC's clients send) is evaluated whole on each
candidate *as it is served* (the job's or the operation's JSON, `workflow_missing` included), by
mongomock's matcher. Which candidates are read is chosen from what the filter pins with equalities
and `$in` (at its top or under `$and`):

- jobs: `config.object_id` -> by_object; the holder `site_id` -> by_site; `workflow.id` and
  `status` -> by_workflow_status; `workflow.id` -> by_workflow; `status` -> by_status; else every
  job, newest last (by_created). One partition per pinned value, read in order.
- operations: always the caller's own; `done` pinned -> by_site_done, else by_site.

A page reads at most `ReadBudget` (items, Queries, bytes of answer): a filter that pins nothing an
index holds (the scheduler's `config.git_repo`) reads through the jobs a page at a time, and a page
may hold fewer results than asked for, none even, and still carry `next_page_token`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from jobtriggers.dal.pages import PageStats, ReadBudget, Selected
from jobtriggers.errors import ValidationFailed
from jobtriggers.logic.filters import Filter, project
from jobtriggers.models import Job, JobStatus, OperationRecord

T = TypeVar("T")

# The served paths an index of the jobs table holds, and the index attribute each is.
JOB_INDEXED_PATHS = {
    "workflow.id": "workflow_id",
    "config.object_id": "object_id",
    "status": "status",
    "site_id": "site_id",
}


@dataclass(frozen=True)
class ListQuery:
    """One list request: the filter (query parameters already folded in), the fields to serve
    (None: all), the page size and where to go on."""

    filter: Filter
    projection: tuple[str, ...] | None = None
    limit: int = 20
    page_token: str | None = None


@dataclass
class ListPage:
    resources: list[dict[str, Any]]
    next_page_token: str | None
    stats: PageStats = field(default_factory=PageStats)


# --------------------------------------------------------------------------- ports


class FilteredJobs(Protocol):
    def filtered_page(
        self,
        pinned: Mapping[str, frozenset[str] | None],
        select: Callable[[list[Job]], list[Selected[T] | None]],
        *,
        limit: int,
        page_token: str | None,
        query_identity: Any,
        budget: ReadBudget = ...,
    ) -> tuple[list[T], str | None, PageStats]: ...


class FilteredOperations(Protocol):
    def filtered_page(
        self,
        site_id: str,
        done: frozenset[bool] | None,
        select: Callable[[list[OperationRecord]], list[Selected[T] | None]],
        *,
        limit: int,
        page_token: str | None,
        query_identity: Any,
        budget: ReadBudget = ...,
    ) -> tuple[list[T], str | None, PageStats]: ...


class WorkflowIds(Protocol):
    def existing_ids(self, kind: str, ids: list[str]) -> set[str]: ...


# --------------------------------------------------------------------------- helpers


def with_conditions(flt: Filter, conditions: Mapping[str, Any]) -> Filter:
    """`flt` and the query parameters' equalities (path -> value), all of which must hold."""
    extra = {path: value for path, value in conditions.items() if value is not None}
    if not extra:
        return flt
    if flt.is_empty:
        return Filter(extra)
    return Filter({"$and": [dict(flt.document), extra]})


def query_identity(query: ListQuery) -> str:
    """What a page token belongs to: the filter (canonical) and the fields served."""
    return json.dumps([query.filter.document, query.projection], sort_keys=True, default=str)


def _selected(docs: Iterable[dict[str, Any]], query: ListQuery) -> list[Selected[dict[str, Any]] | None]:
    out: list[Selected[dict[str, Any]] | None] = []
    for doc in docs:
        if not query.filter.matches(doc):
            out.append(None)
            continue
        served = project(doc, query.projection)
        out.append(Selected(served, len(json.dumps(served, separators=(",", ":")))))
    return out


def workflow_missing(job: Job, registered: set[str]) -> bool:
    """Nobody can claim it for want of its workflow: a triggered job whose workflow left the
    registry. A job a site created for a workflow the registry does not know is its creator's to
    claim (docs/architecture.md, "Who may create and claim jobs")."""
    return job.workflow_id not in registered and job.created_by is None


def with_registry_state(jobs: list[Job], registry: WorkflowIds) -> list[Job]:
    """The jobs, each saying whether its workflow is missing (one BatchGetItem for the workflows
    of the lot)."""
    workflow_ids = sorted({j.workflow_id for j in jobs})
    registered = registry.existing_ids("workflow", workflow_ids) if workflow_ids else set()
    return [j.model_copy(update={"workflow_missing": workflow_missing(j, registered)}) for j in jobs]


# --------------------------------------------------------------------------- listings


class JobListing:
    def __init__(self, jobs: FilteredJobs, registry: WorkflowIds, budget: ReadBudget | None = None) -> None:
        self.jobs = jobs
        self.registry = registry
        self.budget = budget or ReadBudget()

    def pinned(self, flt: Filter) -> dict[str, frozenset[str] | None]:
        """What the filter pins of each indexed path; a status no job can have is a 422 naming it."""
        pinned = {attr: flt.required_values(path) for path, attr in JOB_INDEXED_PATHS.items()}
        statuses = pinned["status"]
        unknown = sorted(s for s in statuses or () if s not in JobStatus.__members__.values())
        if unknown:
            raise ValidationFailed(
                f"filter status {', '.join(repr(s) for s in unknown)} is not one of "
                + ", ".join(s.value for s in JobStatus),
                loc=["query", "filter"],
            )
        return pinned

    def page(self, query: ListQuery) -> ListPage:
        def select(jobs: list[Job]) -> list[Selected[dict[str, Any]] | None]:
            served = with_registry_state(jobs, self.registry)
            return _selected((j.model_dump(mode="json") for j in served), query)

        resources, token, stats = self.jobs.filtered_page(
            self.pinned(query.filter),
            select,
            limit=query.limit,
            page_token=query.page_token,
            query_identity=query_identity(query),
            budget=self.budget,
        )
        return ListPage(resources, token, stats)

    def served(self, jobs: list[Job], query: ListQuery) -> list[dict[str, Any]]:
        """Jobs read another way (the claimable queues), filtered and projected as a listing serves them."""
        served = with_registry_state(jobs, self.registry)
        return [s.result for s in _selected((j.model_dump(mode="json") for j in served), query) if s]


class OperationListing:
    def __init__(self, operations: FilteredOperations, budget: ReadBudget | None = None) -> None:
        self.operations = operations
        self.budget = budget or ReadBudget()

    def page(self, site_id: str, query: ListQuery) -> ListPage:
        """The site's own operations the filter selects. A filter on `metadata.site_id` that leaves
        out the caller is a 422: a site sees its own operations only."""
        sites = query.filter.required_values("metadata.site_id")
        if sites is not None and site_id not in sites:
            raise ValidationFailed(
                f"a site sees only its own operations; metadata.site_id can only be '{site_id}'",
                loc=["query", "filter"],
            )

        def select(ops: list[OperationRecord]) -> list[Selected[dict[str, Any]] | None]:
            return _selected((op.served().model_dump(mode="json") for op in ops), query)

        resources, token, stats = self.operations.filtered_page(
            site_id,
            query.filter.required_values("done", kinds=(bool,)),
            select,
            limit=query.limit,
            page_token=query.page_token,
            query_identity=query_identity(query),
            budget=self.budget,
        )
        return ListPage(resources, token, stats)
