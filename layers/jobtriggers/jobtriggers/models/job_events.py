"""Job events: what the jobs table's stream turns each transition into, the counts they move, and
what recording them found (only the job events handler, the board and the CLI need them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import Field

from jobtriggers.models import JobEventType, JobStatus, _Deferred

# EventBridge's `source` of every job event (docs/architecture.md, "Job events").
JOB_EVENT_SOURCE = "jobtriggers"
# Every event type a job transition may carry, in the order a life usually meets them.
JOB_EVENT_TYPES = tuple(t.value for t in JobEventType)
# The statuses the counts table keeps per workflow (one attribute each).
COUNTED_STATUSES = tuple(s.value for s in JobStatus)


class JobEvent(_Deferred):
    """One job event: EventBridge's `detail` (its `detail-type` is `type`). The job's fields are
    as the transition left them; `previous_*` as they were before it."""

    event_id: str = Field(description="`<job_id>:<version>:<n>`: the same on every delivery; dedupe on it")
    type: str = Field(description="the event type, e.g. job.claimed (also EventBridge's detail-type)")
    job_id: str
    version: int = Field(description="the job's version after the transition (1: created)")
    workflow_id: str
    object_id: str | None = None
    status: str
    previous_status: str | None = None
    attempt: int = Field(default=0, description="attempts used, as the transition left them")
    max_attempts: int | None = None
    run: int | None = None
    site_id: str | None = Field(default=None, description="the site holding (or last holding) the job")
    previous_site_id: str | None = None
    operation_id: str | None = None
    cancel_requested: bool = False
    last_error: dict[str, Any] | None = Field(
        default=None, description="the job's last error as the transition left it ({code, message})"
    )
    occurred_at: str = Field(description="when the transition was written (transition.at)")
    by: str = Field(description='who made it: a site id, "operator:<name>" or "service"')
    details: dict[str, Any] = Field(
        default_factory=dict, description="the transition's other fields, as the service wrote them"
    )


class JobTransitionRecord(_Deferred):
    """One item of the job events table: one transition (one version) of a job and its events."""

    job_id: str
    version: int
    workflow_id: str
    status: str
    previous_status: str | None = None
    at: str
    by: str
    events: list[JobEvent]
    published: bool = False
    published_at: str | None = None


class WorkflowCounts(_Deferred):
    """A workflow's jobs by status (the counts table's `workflow#<id>` item)."""

    workflow_id: str
    pending: int = 0
    claimed: int = 0
    done: int = 0
    failed: int = 0
    cancelled: int = 0


class SiteHourClaims(_Deferred):
    """How many claims a site made in one hour (the counts table's `site#<id>#<yyyy-mm-ddThh>`)."""

    site_id: str
    hour: str = Field(description="UTC, yyyy-mm-ddThh")
    claims: int = 0


@dataclass(frozen=True)
class CountDelta:
    """`ADD attribute delta` on the counts table's item `scope`."""

    scope: str
    attribute: str
    delta: int


@dataclass(frozen=True)
class JobTransition:
    """One job transition as read from the jobs stream: its events and the counts it moves
    (logic/job_events.py makes it, dal/job_events.py records it)."""

    job_id: str
    version: int
    workflow_id: str
    status: str
    previous_status: str | None
    at: str
    by: str
    events: tuple[JobEvent, ...]
    deltas: tuple[CountDelta, ...] = ()


@dataclass(frozen=True)
class Recorded:
    """What recording a transition found: `applied` (this call counted it) or not (it had been
    already); `published`: its events had been put on the bus already."""

    applied: bool
    published: bool = False
