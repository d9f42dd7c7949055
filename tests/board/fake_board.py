"""An in-memory implementation of the board's port: the page's tests run against it, and so does the
screenshot until the board is wired to the tables.

It keeps the lifecycle rules of issue 9 (what rerun and cancel may act on, and what they do), so that
the page is tested against the answers, and the refusals, that the real actions will give.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from jobtriggers.board.port import (
    CANCELLABLE,
    RERUNNABLE,
    STATUSES,
    ClaimedJob,
    FailedJob,
    Filters,
    JobError,
    JobEvent,
    JobPage,
    JobRow,
    LineageNode,
    OperationRow,
    Overview,
    SiteSummary,
    Status,
    StatusCounts,
    WorkflowSummary,
)
from jobtriggers.errors import ConflictError, NotFoundError


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class FakeJob:
    id: str
    workflow_id: str
    object_id: str
    status: Status
    created_at: datetime
    updated_at: datetime
    attempts: int = 0
    max_attempts: int = 3
    site_id: str | None = None
    lease_seconds: int = 3600
    lease_expires_at: datetime | None = None
    last_error: JobError | None = None
    cancel_requested: bool = False
    parent_job_id: str | None = None
    duration_seconds: float | None = None
    operations: list[OperationRow] = field(default_factory=list)
    events: list[JobEvent] = field(default_factory=list)

    def row(self) -> JobRow:
        return JobRow(
            id=self.id,
            workflow_id=self.workflow_id,
            object_id=self.object_id,
            status=self.status,
            site_id=self.site_id,
            attempts=self.attempts,
            max_attempts=self.max_attempts,
            updated_at=self.updated_at,
            cancel_requested=self.cancel_requested,
        )

    def claim(self, now: datetime) -> ClaimedJob:
        assert self.site_id and self.lease_expires_at
        return ClaimedJob(
            id=self.id,
            workflow_id=self.workflow_id,
            object_id=self.object_id,
            site_id=self.site_id,
            attempt=self.attempts,
            max_attempts=self.max_attempts,
            lease_expires_at=self.lease_expires_at,
            lease_seconds=self.lease_seconds,
            seconds_left=(self.lease_expires_at - now).total_seconds(),
            cancel_requested=self.cancel_requested,
        )

    def api_view(self) -> dict[str, Any]:
        """Roughly the API's job: enough for the page's JSON view."""
        return {
            "id": self.id,
            "workflow": {"id": self.workflow_id},
            "config": {"object_id": self.object_id, "parent_job_id": self.parent_job_id},
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "status": self.status,
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "site_id": self.site_id,
            "lease_expires_at": self.lease_expires_at.isoformat() if self.lease_expires_at else None,
            "claims": [
                {"op_id": op.id, "site_id": op.site_id, "done": op.done, "cancelled": op.cancelled}
                for op in self.operations
            ],
            "last_error": self.last_error.model_dump() if self.last_error else None,
        }


class InMemoryBoard:
    """`BoardSource` and `BoardActions` over a dict of jobs. `calls` records every action asked for."""

    def __init__(
        self, workflows: dict[str, str], sites: list[str], clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.workflows = dict(workflows)
        self.sites = list(sites)
        self.clock = clock
        self.jobs: dict[str, FakeJob] = {}
        self.calls: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def add(self, job: FakeJob) -> FakeJob:
        self.jobs[job.id] = job
        return job

    # ------------------------------------------------------------------ BoardSource

    def counts(self) -> dict[str, StatusCounts]:
        by_workflow: dict[str, dict[str, int]] = {w: dict.fromkeys(STATUSES, 0) for w in self.workflows}
        for job in self.jobs.values():
            by_workflow.setdefault(job.workflow_id, dict.fromkeys(STATUSES, 0))[job.status] += 1
        return {w: StatusCounts(**c) for w, c in by_workflow.items()}

    def overview(self, filters: Filters) -> Overview:
        with self._lock:
            now = self.clock()
            counts = self.counts()
            workflows = []
            for wf_id in sorted(counts):
                pending = [
                    j.created_at
                    for j in self.jobs.values()
                    if j.workflow_id == wf_id and j.status == "pending"
                ]
                oldest = min(pending) if pending else None
                workflows.append(
                    WorkflowSummary(
                        id=wf_id,
                        name=self.workflows.get(wf_id, wf_id),
                        counts=counts[wf_id],
                        in_registry=wf_id in self.workflows,
                        oldest_pending_at=oldest,
                        oldest_pending_age_seconds=(now - oldest).total_seconds() if oldest else None,
                    )
                )
            matching = [j for j in self.jobs.values() if self._matches(j, filters)]

            failed: list[FailedJob] = []
            if filters.status in (None, "failed"):
                failed = [
                    FailedJob(
                        id=j.id,
                        workflow_id=j.workflow_id,
                        object_id=j.object_id,
                        last_error=j.last_error,
                        attempts=j.attempts,
                        max_attempts=j.max_attempts,
                        site_id=j.site_id,
                        failed_at=j.updated_at,
                    )
                    for j in sorted(matching, key=lambda j: j.updated_at, reverse=True)
                    if j.status == "failed"
                ]
            claimed: list[ClaimedJob] = []
            if filters.status in (None, "claimed"):
                claimed = [
                    j.claim(now)
                    for j in sorted(matching, key=lambda j: j.lease_expires_at or now)
                    if j.status == "claimed"
                ]
            rows: list[JobRow] = []
            if filters.lists_jobs():
                rows = [j.row() for j in sorted(matching, key=lambda j: j.updated_at, reverse=True)]
            # the counts table's buckets: claims per UTC hour
            this_hour = now.replace(minute=0, second=0, microsecond=0)
            previous_hour = this_hour - timedelta(hours=1)

            def claims(site: str, start: datetime) -> int:
                end = start + timedelta(hours=1)
                return sum(
                    1
                    for j in self.jobs.values()
                    for op in j.operations
                    if op.site_id == site and start <= op.created_at < end
                )

            # every site (the page's filter offers them all), the numbers of the filtered one only
            sites = [
                SiteSummary(
                    id=site,
                    jobs_held=sum(
                        1 for j in self.jobs.values() if j.status == "claimed" and j.site_id == site
                    ),
                    claims_this_hour=claims(site, this_hour),
                    claims_previous_hour=claims(site, previous_hour),
                )
                if filters.site in (None, site)
                else SiteSummary(id=site)
                for site in sorted(self.sites)
            ]
            limit = filters.limit
            shown = min(len(failed), limit) + min(len(claimed), limit) + min(len(rows), limit)
            return Overview(
                generated_at=now,
                filters=filters,
                workflows=workflows,
                failed=failed[:limit],
                failed_truncated=len(failed) > limit,
                claimed=claimed[:limit],
                claimed_truncated=len(claimed) > limit,
                jobs=rows[:limit],
                jobs_truncated=len(rows) > limit,
                sites=sites,
                # what an implementation reading exactly this would read: a counts item per workflow,
                # a site item per site, the rows shown
                items_read=len(workflows) + len(sites) + shown,
            )

    @staticmethod
    def _matches(job: FakeJob, filters: Filters) -> bool:
        return (
            (filters.workflow is None or job.workflow_id == filters.workflow)
            and (filters.status is None or job.status == filters.status)
            and (filters.site is None or job.site_id == filters.site)
            and (filters.object_id is None or job.object_id == filters.object_id)
        )

    def job(self, job_id: str) -> JobPage | None:
        with self._lock:
            job = self.jobs.get(job_id)
            if job is None:
                return None
            now = self.clock()
            return JobPage(
                generated_at=now,
                job=job.api_view(),
                summary=job.row(),
                last_error=job.last_error,
                claim=job.claim(now) if job.status == "claimed" else None,
                operations=list(job.operations),
                lineage=self._lineage(job),
                events=list(job.events),
                items_read=1 + len(job.operations) + len(job.events),
            )

    def _lineage(self, job: FakeJob) -> LineageNode | None:
        children: dict[str, list[FakeJob]] = {}
        for j in self.jobs.values():
            if j.parent_job_id:
                children.setdefault(j.parent_job_id, []).append(j)

        def subtree(j: FakeJob) -> LineageNode:
            kids = sorted(children.get(j.id, []), key=lambda k: (k.created_at, k.workflow_id))
            return self._node(j, [subtree(k) for k in kids])

        node = subtree(job)
        ancestor = self.jobs.get(job.parent_job_id) if job.parent_job_id else None
        if ancestor is None and not node.children:
            return None
        while ancestor is not None:
            node = self._node(ancestor, [node])
            ancestor = self.jobs.get(ancestor.parent_job_id) if ancestor.parent_job_id else None
        return node

    @staticmethod
    def _node(j: FakeJob, children: list[LineageNode]) -> LineageNode:
        return LineageNode(
            job_id=j.id,
            workflow_id=j.workflow_id,
            object_id=j.object_id,
            status=j.status,
            duration_seconds=j.duration_seconds,
            children=children,
        )

    # ------------------------------------------------------------------ BoardActions

    def _get(self, job_id: str) -> FakeJob:
        job = self.jobs.get(job_id)
        if job is None:
            raise NotFoundError(f"job '{job_id}' does not exist")  # JobRepository.get's words
        return job

    def rerun(self, job_id: str) -> str:
        with self._lock:
            self.calls.append(("rerun", job_id))
            job = self._get(job_id)
            # JobSteering's rules and words (logic/lifecycle.py)
            if job.status not in RERUNNABLE:
                raise ConflictError(
                    f"job '{job_id}' is {job.status}; only done, failed or cancelled jobs can be rerun"
                )
            now = self.clock()
            was = job.status
            # the last holder stays on the job, as on the table
            job.status, job.attempts, job.last_error = "pending", 0, None
            job.lease_expires_at, job.cancel_requested = None, False
            job.updated_at = now
            job.events.append(JobEvent(type="rerun", at=now, detail={"was": was, "by": "operator"}))
            return f"{job.workflow_id} on {job.object_id} is pending again, with {job.max_attempts} attempts"

    def cancel(self, job_id: str) -> str:
        with self._lock:
            self.calls.append(("cancel", job_id))
            job = self._get(job_id)
            what = f"{job.workflow_id} on {job.object_id}"
            if job.status not in CANCELLABLE:
                raise ConflictError(
                    f"job '{job_id}' is {job.status}; only pending, claimed or failed jobs can be cancelled"
                )
            now = self.clock()
            if job.status == "claimed" and job.cancel_requested:
                raise ConflictError(
                    f"job '{job_id}': a cancel was already asked of site '{job.site_id}'; it stops at "
                    "its next heartbeat, or its lease ends"
                )
            job.updated_at = now
            if job.status == "claimed":
                job.cancel_requested = True
                job.events.append(JobEvent(type="cancel_requested", at=now, detail={"site": job.site_id}))
                return f"{what} is running at {job.site_id}: it is told to stop at its next heartbeat"
            job.status = "cancelled"
            job.events.append(JobEvent(type="cancelled", at=now, detail={"by": "operator"}))
            return f"{what} is cancelled"
