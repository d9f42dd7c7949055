"""The board over the tables: `TableSource` reads them for the page, `SteeringActions` cancels and
reruns through `JobSteering`, the logic behind `jobtriggers jobs cancel|rerun` too.

One refresh of the overview reads, and never scans the jobs table:
1. at once: the registry's workflows (Query kind = workflow); the workflows the counts table has
   counted (Query of its keys-only `by_kind` index: those that left the registry, or were never in
   it, show too); the sites (the sites table, a few items a site); the lists below;
2. at once, from the counts table (BatchGetItem): the counts of those workflows, and per site the
   jobs it holds (`held#<site>`) and its claims this UTC hour and the one before;
3. at once, per workflow shown that has pending jobs: its oldest (`by_workflow_status`, oldest
   first, Limit 1).
The lists, each the page's limit + 1 jobs at most (the one more says there are more):
- failed: `by_status` = failed (`by_workflow_status` with a workflow filter), newest first; a site
  filter filters that index's pages;
- claimed: `by_status` = claimed (`by_workflow_status` with a workflow), lease ending soonest first;
  with a site filter alone, `by_site` from the earliest lease end on (one item to find it), so the
  site's finished jobs are not read;
- a status that has no list of its own (pending, done, cancelled): its index, newest first;
- an object id: `by_object`, every job of the object: each list shows its jobs.
So a refresh reads about: the registry's workflows twice (registry items, index keys), two items a
site (sites table) and three (counts), one per workflow with pending jobs, and the rows it shows.
Independent reads run in parallel threads: DynamoDB answers them at once, and from a laptop far
from the region the round trips are most of a refresh. `items_read` is what DynamoDB counts as read
(dal/read_tally.py), whichever code read it, the lineage seam included.
"""

from __future__ import annotations

import contextvars
import getpass
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from jobtriggers.board.port import (
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
from jobtriggers.dal.job_events import JobEventsStore
from jobtriggers.dal.job_views import JobListing, JobViews
from jobtriggers.dal.jobs import JobRepository
from jobtriggers.dal.read_tally import tallying_reads
from jobtriggers.dal.registry import RegistryRepository
from jobtriggers.dal.sites import SiteRepository
from jobtriggers.errors import NotFoundError
from jobtriggers.logic.claims import is_error_result
from jobtriggers.logic.job_events import hour_of
from jobtriggers.logic.lifecycle import JobSteering
from jobtriggers.models import Claim, Job, JobStatus, OperationRecord, Workflow, iso, utcnow
from jobtriggers.models.job_events import JobEvent as StoredJobEvent

# The chain a job belongs to, rooted at its eldest ancestor (port.JobPage.lineage), or None; see
# `table_lineage()`, the seam where the tables' lineage read is connected.
LineageReader = Callable[[Job], LineageNode | None]

# An object has one job per workflow its types trigger: this many is all of them.
OBJECT_JOBS_MAX = 500
READ_THREADS = 8


def instant(value: str | None) -> datetime | None:
    """An ISO timestamp as the service writes it (`...Z`), as an aware UTC datetime."""
    if not value:
        return None
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def job_error(error: Any) -> JobError | None:
    """A job's or an operation's error result ({code, message, details?}) as the page shows it."""
    if not isinstance(error, Mapping):
        return None
    code, message = error.get("code"), error.get("message")
    if code is None and message is None:
        return None
    return JobError(code=str(code or "error"), message=str(message or ""))


@dataclass(frozen=True)
class JobDefaults:
    """What a job lacks until it is claimed (its limits): the workflow's, else the service's."""

    lease_seconds: int = 3600
    max_attempts: int = 3

    def max_attempts_of(self, job: Job, workflow: Workflow | None) -> int:
        return job.max_attempts or (workflow.max_attempts if workflow else None) or self.max_attempts

    def lease_seconds_of(self, workflow: Workflow | None) -> int:
        return (workflow.lease_seconds if workflow else None) or self.lease_seconds


@dataclass(frozen=True)
class _Lists:
    failed: list[Job]
    claimed: list[Job]
    listed: list[Job]
    failed_more: bool
    claimed_more: bool
    listed_more: bool


class TableSource:
    """`BoardSource` over the tables (see the module's docstring for what each view reads)."""

    def __init__(
        self,
        *,
        registry: RegistryRepository,
        sites: SiteRepository,
        jobs: JobRepository,
        views: JobViews,
        events: JobEventsStore,
        lineage: LineageReader | None = None,
        defaults: JobDefaults | None = None,
        clock: Callable[[], datetime] = utcnow,
        read_threads: int = READ_THREADS,
    ) -> None:
        self.registry = registry
        self.sites = sites
        self.jobs = jobs
        self.views = views
        self.events = events
        self.lineage = lineage
        self.defaults = defaults or JobDefaults()
        self.clock = clock
        self._pool = ThreadPoolExecutor(max_workers=read_threads, thread_name_prefix="board-read")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _gather(self, calls: Mapping[str, Callable[[], Any]]) -> dict[str, Any]:
        """Run the calls in parallel, each in a copy of this context (so their reads are tallied);
        the first failure is raised once all have ended."""
        futures: dict[str, Future[Any]] = {
            name: self._pool.submit(contextvars.copy_context().run, call) for name, call in calls.items()
        }
        results: dict[str, Any] = {}
        error: Exception | None = None
        for name, future in futures.items():
            try:
                results[name] = future.result()
            except Exception as exc:  # raised below, once every read has ended
                error = error or exc
        if error is not None:
            raise error
        return results

    # ------------------------------------------------------------------ the overview

    def overview(self, filters: Filters) -> Overview:
        now = self.clock()
        show_failed = filters.status in (None, "failed")
        show_claimed = filters.status in (None, "claimed")
        with tallying_reads() as tally:
            reads: dict[str, Callable[[], Any]] = {
                "registry": self.registry.workflows,
                "counted": self.events.counted_workflow_ids,
                "sites": self.sites.list_sites,
            }
            if filters.object_id is not None:
                reads["object"] = lambda: self.views.jobs_of_object(
                    filters.object_id or "", workflow_id=filters.workflow, limit=OBJECT_JOBS_MAX
                )
            else:
                if show_failed:
                    reads["failed"] = lambda: self.views.jobs_of_status(
                        JobStatus.failed,
                        workflow_id=filters.workflow,
                        site_id=filters.site,
                        limit=filters.limit,
                    )
                if show_claimed:
                    reads["claimed"] = lambda: self._claimed_list(filters)
                if filters.lists_jobs() and filters.status is not None:
                    status = filters.status
                    reads["jobs"] = lambda: self.views.jobs_of_status(
                        status, workflow_id=filters.workflow, site_id=filters.site, limit=filters.limit
                    )
            first = self._gather(reads)

            registry: dict[str, Workflow] = {w.id: w for w in first["registry"]}
            workflow_ids = sorted(set(registry) | set(first["counted"]))
            registered = {s.id for s in first["sites"]}
            lists = self._lists(first, filters)
            # a site that holds a job shown but is no longer in the sites table is shown too
            site_ids = sorted(registered | {j.site_id for j in lists.claimed if j.site_id})
            counted_sites = [filters.site] if filters.site else site_ids
            hours = [hour_of(iso(now)), hour_of(iso(now - timedelta(hours=1)))]
            second = self._gather(
                {
                    "counts": lambda: self.events.workflow_counts(workflow_ids),
                    "claims": lambda: self.events.site_claims(counted_sites, hours) if counted_sites else [],
                    "held": lambda: self.events.site_holdings(counted_sites) if counted_sites else {},
                }
            )
            counts = {
                w: StatusCounts(**c.model_dump(exclude={"workflow_id"})) for w, c in second["counts"].items()
            }
            shown = [filters.workflow] if filters.workflow else [w for w in workflow_ids if counts[w].total]
            waiting = [w for w in shown if w in counts and counts[w].pending]
            oldest = self._gather({w: self._oldest_pending(w) for w in waiting})

        workflows = []
        for w in workflow_ids:
            since = instant(oldest.get(w))
            workflows.append(
                WorkflowSummary(
                    id=w,
                    name=registry[w].name if w in registry else w,
                    counts=counts[w],
                    in_registry=w in registry,
                    oldest_pending_at=since,
                    oldest_pending_age_seconds=(now - since).total_seconds() if since else None,
                )
            )
        claims_of: dict[tuple[str, str], int] = {(c.site_id, c.hour): c.claims for c in second["claims"]}
        held: dict[str, int] = second["held"]
        sites = [
            SiteSummary(
                id=s,
                # a count moved by transitions; never shown below zero (docs/operations.md: recount)
                jobs_held=max(0, held.get(s, 0)),
                claims_this_hour=claims_of.get((s, hours[0]), 0),
                claims_previous_hour=claims_of.get((s, hours[1]), 0),
                registered=s in registered,
            )
            if filters.site in (None, s)
            else SiteSummary(id=s, registered=s in registered)
            for s in site_ids
        ]

        def workflow_of(job: Job) -> Workflow | None:
            return registry.get(job.workflow_id)

        limit = filters.limit
        failed = lists.failed if show_failed else []
        claimed = lists.claimed if show_claimed else []
        listed = lists.listed if filters.lists_jobs() else []
        return Overview(
            generated_at=now,
            filters=filters,
            workflows=workflows,
            failed=[self._failed(j, workflow_of(j)) for j in failed[:limit]],
            failed_truncated=show_failed and (lists.failed_more or len(failed) > limit),
            claimed=[self._claimed(j, workflow_of(j), now) for j in claimed[:limit]],
            claimed_truncated=show_claimed and (lists.claimed_more or len(claimed) > limit),
            jobs=[self._row(j, workflow_of(j)) for j in listed[:limit]],
            jobs_truncated=filters.lists_jobs() and (lists.listed_more or len(listed) > limit),
            sites=sites,
            items_read=tally.items,
        )

    @staticmethod
    def _lists(first: Mapping[str, Any], filters: Filters) -> _Lists:
        """The jobs of each list, from the reads made for them: an object's jobs split by status, or
        each list's own read."""
        if "object" in first:
            of_object: JobListing = first["object"]
            matching = [j for j in of_object.jobs if filters.site in (None, j.site_id)]
            more = of_object.more
            return _Lists(
                failed=sorted(
                    (j for j in matching if j.status == JobStatus.failed), key=_finished_at, reverse=True
                ),
                claimed=sorted(
                    (j for j in matching if j.status == JobStatus.claimed),
                    key=lambda j: j.lease_expires_at or "",
                ),
                listed=sorted(
                    (j for j in matching if filters.status in (None, j.status.value)),
                    key=_updated_at,
                    reverse=True,
                ),
                failed_more=more,
                claimed_more=more,
                listed_more=more,
            )
        empty = JobListing(jobs=[], more=False)
        failed: JobListing = first.get("failed", empty)
        claimed: JobListing = first.get("claimed", empty)
        listed: JobListing = first.get("jobs", empty)
        return _Lists(failed.jobs, claimed.jobs, listed.jobs, failed.more, claimed.more, listed.more)

    def _claimed_list(self, filters: Filters) -> JobListing:
        """Claimed jobs, lease ending soonest first: of all sites (by_status, or by_workflow_status),
        or of one: its by_site entries from the earliest lease end on, so its history is not read."""
        if filters.site is None or filters.workflow is not None:
            return self.views.jobs_of_status(
                JobStatus.claimed,
                workflow_id=filters.workflow,
                site_id=filters.site,
                newest_first=False,
                limit=filters.limit,
            )
        since = self.views.earliest_lease_end()
        if since is None:
            return JobListing(jobs=[], more=False)
        return self.views.claimed_of_site(filters.site, since, limit=filters.limit)

    def _oldest_pending(self, workflow_id: str) -> Callable[[], str | None]:
        return lambda: self.views.oldest_pending_since(workflow_id)

    # ------------------------------------------------------------------ rows

    def _row(self, job: Job, workflow: Workflow | None) -> JobRow:
        return JobRow(
            id=job.id,
            workflow_id=job.workflow_id,
            object_id=job.object_id,
            status=_status(job),
            site_id=job.site_id,
            attempts=job.attempts,
            max_attempts=self.defaults.max_attempts_of(job, workflow),
            updated_at=_updated_at(job),
            cancel_requested=job.cancel_requested,
        )

    def _failed(self, job: Job, workflow: Workflow | None) -> FailedJob:
        return FailedJob(
            id=job.id,
            workflow_id=job.workflow_id,
            object_id=job.object_id,
            last_error=job_error(job.last_error) or job_error(job.result),
            attempts=job.attempts,
            max_attempts=self.defaults.max_attempts_of(job, workflow),
            site_id=job.site_id,
            failed_at=_finished_at(job),
        )

    def _claimed(
        self, job: Job, workflow: Workflow | None, now: datetime, lease_seconds: int | None = None
    ) -> ClaimedJob:
        ends = instant(job.lease_expires_at) or _updated_at(job)
        return ClaimedJob(
            id=job.id,
            workflow_id=job.workflow_id,
            object_id=job.object_id,
            site_id=job.site_id or "",
            attempt=job.attempts,
            max_attempts=self.defaults.max_attempts_of(job, workflow),
            lease_expires_at=ends,
            lease_seconds=lease_seconds or self.defaults.lease_seconds_of(workflow),
            seconds_left=(ends - now).total_seconds(),
            cancel_requested=job.cancel_requested,
        )

    # ------------------------------------------------------------------ a job's page

    def job(self, job_id: str) -> JobPage | None:
        now = self.clock()
        with tallying_reads() as tally:
            job = self.jobs.find(job_id)
            if job is None:
                return None
            claims: list[Claim] = [*job.previous_claims, *job.claims]
            lineage = self.lineage
            got = self._gather(
                {
                    "workflow": lambda: self._workflow(job.workflow_id),
                    "operations": lambda: self.views.operations([c.op_id for c in claims]),
                    "events": lambda: self.events.events(job_id),
                    "lineage": lambda: lineage(job) if lineage else None,
                }
            )
        workflow: Workflow | None = got["workflow"]
        operations: dict[str, OperationRecord] = got["operations"]
        rows = [_operation_row(c, operations[c.op_id]) for c in claims if c.op_id in operations]
        live = operations.get(job.operation_id or "") if job.status == JobStatus.claimed else None
        served = job.model_copy(update={"workflow_missing": workflow is None}).model_dump(mode="json")
        return JobPage(
            generated_at=now,
            job=served,
            summary=self._row(job, workflow),
            last_error=job_error(job.last_error),
            claim=self._claimed(job, workflow, now, live.lease_seconds if live else None)
            if job.status == JobStatus.claimed
            else None,
            operations=rows,
            lineage=got["lineage"],
            events=[_event(e) for e in got["events"]],
            items_read=tally.items,
        )

    def _workflow(self, workflow_id: str) -> Workflow | None:
        try:
            return self.registry.workflow(workflow_id)
        except NotFoundError:
            return None


def _status(job: Job) -> Status:
    value: Status = job.status.value  # JobStatus has the port's five names
    return value


def _updated_at(job: Job) -> datetime:
    return instant(job.updated_at) or instant(job.created_at) or datetime.now(UTC)


def _finished_at(job: Job) -> datetime:
    return instant(job.finished_at) or _updated_at(job)


def _operation_row(claim: Claim, op: OperationRecord) -> OperationRow:
    error = op.result if is_error_result(op.result) else None
    return OperationRow(
        id=op.id,
        site_id=op.site_id,
        attempt=op.attempt,
        created_at=instant(op.created_at) or datetime.now(UTC),
        expires_at=instant(op.expire_time),
        done=op.done,
        cancelled=claim.cancelled or bool(op.metadata.get("cancelled")),
        result=None if error else op.result,
        error=job_error(error),
    )


# What of a stored event the page's list shows beside its type and time: the error of a failing
# one, and the site an event concerns when someone else made it (a cancel asked of it, its lease
# expired by the service).
_FAILING = {"job.attempt_failed", "job.failed", "job.lease_expired"}
_ABOUT_A_SITE = {"job.lease_expired", "job.released", "job.cancel_requested", "job.cancelled"}


def _event(event: StoredJobEvent) -> JobEvent:
    detail: dict[str, Any] = {"by": event.by}
    if event.type in _ABOUT_A_SITE and event.site_id and event.site_id != event.by:
        detail["site"] = event.site_id
    if event.attempt:
        detail["attempt"] = event.attempt
    if event.type == "job.rerun" and event.run:
        detail["run"] = event.run
    if event.type in _FAILING and event.last_error:
        error = job_error(event.last_error)
        if error:
            detail["error"] = f"{error.code}: {error.message}"
    return JobEvent(
        type=event.type.removeprefix("job."),
        at=instant(event.occurred_at) or datetime.now(UTC),
        detail=detail,
    )


# ----------------------------------------------------------------------------- the actions


def operator_name() -> str:
    """Who steers: the account running the board (it has no login of its own)."""
    try:
        return getpass.getuser() or "unknown"
    except (KeyError, OSError):  # no name for this uid (a container)
        return "unknown"


class SteeringActions:
    """`BoardActions` through JobSteering, as `operator:<name>`: each action is one conditional
    transaction, and a refusal (the job moved on) is JobSteering's ConflictError."""

    def __init__(self, steering: JobSteering, operator: str) -> None:
        self.steering = steering
        self.by = f"operator:{operator}"

    def rerun(self, job_id: str) -> str:
        job = self.steering.rerun(job_id, by=self.by)
        return f"{job.workflow_id} on {job.object_id} is pending again (run {job.run})"

    def cancel(self, job_id: str) -> str:
        job = self.steering.cancel(job_id, by=self.by)
        what = f"{job.workflow_id} on {job.object_id}"
        if job.status == JobStatus.claimed:
            return f"{what} is running at {job.site_id}: it is told to stop at its next heartbeat"
        return f"{what} is cancelled"


def table_lineage() -> LineageReader | None:
    """THE LINEAGE SEAM: how a job's page gets its chain (port.LineageNode) from the tables: the
    chain's jobs from the jobs' `by_root` index (LineageService.chain, one Query, counted in the
    page's `items_read`), drawn from the job's eldest ancestor down, each job under the one whose
    output made it. None when the job is alone: no parent and nothing made from its outputs, or in
    no chain (created over the API without an object)."""
    from jobtriggers import wiring

    service = wiring.lineage()

    def read(job: Job) -> LineageNode | None:
        if job.root_object_id is None:
            return None
        try:
            chain = service.chain(job.root_object_id)
        except NotFoundError:  # the index has not caught up with the job yet
            return None
        by_id = {j.id: j for j in chain.jobs}
        eldest, seen = job.id, {job.id}
        while (parent := by_id[eldest].parent_job_id if eldest in by_id else None) in by_id:
            if parent in seen:
                break
            seen.add(parent)
            eldest = parent
        if eldest not in by_id:
            return None

        def node(job_id: str, path: frozenset[str]) -> LineageNode:
            j = by_id[job_id]
            return LineageNode(
                job_id=j.id,
                workflow_id=j.workflow_id,
                object_id=j.object_id,
                status=j.status.value,
                duration_seconds=j.duration_seconds,
                children=[node(c.id, path | {c.id}) for c in chain.children(j.id) if c.id not in path],
            )

        tree = node(eldest, frozenset({eldest}))
        return tree if tree.children else None

    return read


def open_tables(
    lineage: LineageReader | None = None, operator: str | None = None
) -> tuple[TableSource, SteeringActions]:
    """The board's source and actions over the tables the environment names (cli/common's
    `configure_store` sets it from --endpoint-url or --stack); `lineage` defaults to
    `table_lineage()`."""
    from jobtriggers import wiring
    from jobtriggers.settings import job_settings

    settings = job_settings()
    source = TableSource(
        registry=wiring.registry(),
        sites=wiring.sites(),
        jobs=wiring.jobs(),
        views=wiring.job_views(),
        events=wiring.job_events_store(),
        lineage=lineage or table_lineage(),
        defaults=JobDefaults(settings.default_lease_seconds, settings.default_max_attempts),
    )
    return source, SteeringActions(wiring.job_steering(), operator or operator_name())
