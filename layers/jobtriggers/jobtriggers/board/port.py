"""The board's data port: everything the page shows comes through `BoardSource`, every action through
`BoardActions`. The page knows nothing of tables; an implementation over DynamoDB (the counts table and
the indexes, never a scan of the jobs table) and the in-memory one the tests use are interchangeable.

Times are timezone-aware UTC datetimes. Derived numbers the page shows (ages, seconds left on a lease)
are computed by the source at `Overview.generated_at`, so that one refresh is one consistent picture.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from jobtriggers.logic import lifecycle

Status = Literal["pending", "claimed", "done", "failed", "cancelled"]
STATUSES: tuple[Status, ...] = ("pending", "claimed", "done", "failed", "cancelled")

# What a rerun and a cancel may act on: JobSteering's own rules (logic/lifecycle.py), so the page
# offers exactly what the actions accept. The actions still decide (the job may have moved on).
RERUNNABLE: frozenset[str] = frozenset(s.value for s in lifecycle.RERUNNABLE)
CANCELLABLE: frozenset[str] = frozenset(s.value for s in lifecycle.CANCELLABLE)

# Rows per list on a first view: about a laptop screen of each; `limit` (up to 500) asks for more.
DEFAULT_LIST_LIMIT = 25
MAX_LIST_LIMIT = 500


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Filters(_Frozen):
    """What the operator narrowed the view to; each is kept in the page's URL under the same name.

    - `workflow`: a workflow id. Narrows the job lists; the workflow counts are always all shown.
    - `status`: the failed and claimed lists show only when it names them, or is unset; pending,
      done and cancelled list the matching jobs of that status in `Overview.jobs`.
    - `site`: the site holding (or, for failed jobs, that last held) the job; narrows `sites` too.
    - `object_id`: the job's input object (`config.object_id`): every job of that object, any status.
    """

    workflow: str | None = None
    status: Status | None = None
    site: str | None = None
    object_id: str | None = None
    limit: int = Field(default=DEFAULT_LIST_LIMIT, ge=1, le=MAX_LIST_LIMIT)

    def is_empty(self) -> bool:
        return not (self.workflow or self.status or self.site or self.object_id)

    def lists_jobs(self) -> bool:
        """Whether `Overview.jobs` is wanted: an object, or a status that has no list of its own."""
        return self.object_id is not None or self.status in ("pending", "done", "cancelled")


class JobError(_Frozen):
    """A failed job's last error: its failing operation's `result` error, or `lease_expired`."""

    code: str
    message: str


class StatusCounts(_Frozen):
    pending: int = 0
    claimed: int = 0
    done: int = 0
    failed: int = 0
    cancelled: int = 0

    @property
    def total(self) -> int:
        return self.pending + self.claimed + self.done + self.failed + self.cancelled

    def of(self, status: Status) -> int:
        return int(getattr(self, status))


class WorkflowSummary(_Frozen):
    """One workflow and its jobs by status (the counts table: one item per workflow)."""

    id: str
    name: str
    counts: StatusCounts
    in_registry: bool = Field(
        default=True,
        description="False for a workflow that has jobs but is not in the registry (it left it, or "
        "its jobs were made by a site): nobody but their creator can claim them",
    )
    oldest_pending_at: datetime | None = None
    oldest_pending_age_seconds: float | None = Field(
        default=None, description="generated_at - oldest_pending_at; None when nothing is pending"
    )


class FailedJob(_Frozen):
    id: str
    workflow_id: str
    object_id: str
    last_error: JobError | None
    attempts: int
    max_attempts: int
    site_id: str | None = Field(default=None, description="the site that held it last")
    failed_at: datetime


class ClaimedJob(_Frozen):
    id: str
    workflow_id: str
    object_id: str
    site_id: str
    attempt: int
    max_attempts: int
    lease_expires_at: datetime
    lease_seconds: int = Field(description="the lease's full length, to judge how close its end is")
    seconds_left: float = Field(description="lease_expires_at - generated_at; negative once it ended")
    cancel_requested: bool = False


class JobRow(_Frozen):
    """A job in `Overview.jobs` (any status)."""

    id: str
    workflow_id: str
    object_id: str
    status: Status
    site_id: str | None = None
    attempts: int = 0
    max_attempts: int
    updated_at: datetime
    cancel_requested: bool = False


class SiteSummary(_Frozen):
    """A site and its work. The numbers are None when the view did not read them (another site is
    filtered: only that one's are read)."""

    id: str
    jobs_held: int | None = Field(default=None, description="jobs it holds a claim on now")
    claims_this_hour: int | None = Field(default=None, description="claims it made this UTC hour so far")
    claims_previous_hour: int | None = Field(default=None, description="claims it made the UTC hour before")
    registered: bool = Field(
        default=True, description="False for a site that holds jobs but is no longer in the sites table"
    )


class Overview(_Frozen):
    """One refresh of the board.

    - `workflows`: every workflow of the registry, filters or not (the page needs them all for its
      workflow filter, and each is one item of the counts table).
    - `failed`: failed jobs matching the filters, most recently failed first.
    - `claimed`: claimed jobs matching the filters, the lease that ends soonest first.
    - `jobs`: when `filters.lists_jobs()`, the matching jobs (of `filters.status`, or of any status
      for an `object_id`), most recently updated first; otherwise empty.
    - `sites`: every site (the page's site filter offers them all); with `filters.site`, only that
      one's numbers are read.
    Each list holds at most `filters.limit` rows; `*_truncated` says there were more.
    """

    generated_at: datetime
    filters: Filters
    workflows: list[WorkflowSummary]
    failed: list[FailedJob] = Field(default_factory=list)
    failed_truncated: bool = False
    claimed: list[ClaimedJob] = Field(default_factory=list)
    claimed_truncated: bool = False
    jobs: list[JobRow] = Field(default_factory=list)
    jobs_truncated: bool = False
    sites: list[SiteSummary] = Field(default_factory=list)
    items_read: int = Field(ge=0, description="DynamoDB items this refresh read (the benchmark reports it)")


class OperationRow(_Frozen):
    """One claim of the job: an operation, kept as history after the job moves on."""

    id: str
    site_id: str
    attempt: int
    created_at: datetime
    expires_at: datetime | None = None
    done: bool = False
    cancelled: bool = False
    result: Any = None
    error: JobError | None = None


class LineageNode(_Frozen):
    job_id: str
    workflow_id: str
    object_id: str | None = None
    status: Status
    duration_seconds: float | None = Field(default=None, description="creation to its end (to now, running)")
    children: list[LineageNode] = Field(default_factory=list)


class JobEvent(_Frozen):
    """A transition of the job, as the events stream carries it (created, claimed, lease_expired,
    done, failed, cancel_requested, cancelled, rerun)."""

    type: str
    at: datetime
    detail: dict[str, Any] = Field(default_factory=dict)


class JobPage(_Frozen):
    """Everything the job's page shows.

    - `job`: the job exactly as the API serves it (shown as JSON).
    - `summary`: the same job as the board's lists show it.
    - `last_error`: the error of its last failed attempt, if any (a failed job's, or a pending one's
      whose attempt failed); a rerun clears it.
    - `claim`: its live claim, when it is claimed.
    - `operations`: its claims, oldest first.
    - `lineage`: the chain it belongs to, rooted at its eldest ancestor; the path from the root to the
      node whose `job_id` is this job's is its ancestors, that node's subtree its descendants. None
      when the job has neither.
    - `events`: its transitions, oldest first.
    """

    generated_at: datetime
    job: dict[str, Any]
    summary: JobRow
    last_error: JobError | None = None
    claim: ClaimedJob | None = None
    operations: list[OperationRow] = Field(default_factory=list)
    lineage: LineageNode | None = None
    events: list[JobEvent] = Field(default_factory=list)
    items_read: int = Field(ge=0)


@runtime_checkable
class BoardSource(Protocol):
    """What the page reads. Implementations must not scan the jobs table."""

    def overview(self, filters: Filters) -> Overview: ...

    def job(self, job_id: str) -> JobPage | None:
        """The job's page, or None when there is no such job."""
        ...


@runtime_checkable
class BoardActions(Protocol):
    """What the page's buttons do: the same logic as `jobtriggers jobs rerun|cancel`.

    Each returns a message for the operator ("... is pending again"). A refusal raises
    `jobtriggers.errors.ConflictError` (the job's status does not allow it) or `NotFoundError`, whose
    `detail` the page shows as it is.
    """

    def rerun(self, job_id: str) -> str: ...

    def cancel(self, job_id: str) -> str: ...
