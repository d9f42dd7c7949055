"""From an object-type assignment to jobs: resolve the type's triggers, put one job per workflow.

Every write is a conditional put on the job's key `workflow#object`, so a redelivered record, two
types that trigger the same workflow, and a backfill racing the stream all end in one job.

No tag falls between the stream and the backfill of a new trigger (docs/architecture.md, "A new
trigger and a tag at the same time"): TriggerEngine reads the whole trigger set strongly
consistent and trusts it for TRIGGER_CACHE_SECONDS at most, and a seed load starts a new trigger's
backfill BACKFILL_DELAY_SECONDS after writing it, by which time every tag the resolver may have
resolved without it is in the object-type index the backfill reads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from aws_lambda_powertools.metrics import MetricUnit

from jobtriggers.dal.dynamo import from_item
from jobtriggers.logic.stream_batch import OrderedBatchResult
from jobtriggers.models import (
    Job,
    JobEventType,
    Lineage,
    ObjectTypeAssignment,
    Transition,
    Trigger,
    iso,
    utcnow,
)
from jobtriggers.observability import logger, metrics

# How long a warm TriggerEngine uses the trigger set it read before reading it again. Short: the
# read is one small Query, and a new trigger's backfill waits this long (and the margin below).
TRIGGER_CACHE_SECONDS = 1.0
# How far the object-type index (a GSI: eventually consistent) may lag its table, assumed. GSIs
# usually catch up within a fraction of a second; a longer lag is the one gap left, and the
# scheduled (or a manual) reconcile is the net under it.
INDEX_LAG_MARGIN_SECONDS = 4.0
# A seed load waits this long after writing new triggers before their backfill reads the index.
BACKFILL_DELAY_SECONDS = TRIGGER_CACHE_SECONDS + INDEX_LAG_MARGIN_SECONDS


class TriggerLookup(Protocol):
    def triggers_for_object_type(self, object_type_id: str) -> list[Trigger]: ...


class TriggerSet:
    """The whole trigger set, read with `load` (strongly consistent, from the registry's base table)
    and used for at most `ttl` seconds, counted from when the read *began*: a trigger written before
    that read is in the set, and a set read before a trigger was written is dropped within `ttl`.

    The age is measured on the wall clock (Lambda keeps it synchronised), not the monotonic one,
    which need not count the time a Lambda environment spends frozen between invocations; a clock
    that went backwards counts as expired.
    """

    def __init__(
        self,
        load: Callable[[], list[Trigger]],
        ttl: float = TRIGGER_CACHE_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.load = load
        self.ttl = ttl
        self.clock = clock
        self.reads = 0
        self._lock = threading.Lock()
        self._cached: tuple[float, dict[str, list[Trigger]]] | None = None

    def _current(self) -> dict[str, list[Trigger]]:
        with self._lock:
            now = self.clock()
            if self._cached is not None and 0 <= now - self._cached[0] < self.ttl:
                return self._cached[1]
            by_type: dict[str, list[Trigger]] = {}
            for trigger in self.load():
                by_type.setdefault(trigger.object_type_id, []).append(trigger)
            self.reads += 1
            self._cached = (now, by_type)
            return by_type

    def triggers_for_object_type(self, object_type_id: str) -> list[Trigger]:
        return list(self._current().get(object_type_id, []))


class JobWriter(Protocol):
    def create(self, job: Job, transition: Transition) -> bool: ...

    def find(self, job_id: str, consistent: bool = True) -> Job | None: ...


class TaggedObjects(Protocol):
    def objects_with_type(
        self, object_type_id: str, limit: int, page_token: str | None
    ) -> tuple[list[str], str | None]: ...

    def assignments_of(
        self, object_type_id: str, object_ids: list[str]
    ) -> dict[str, ObjectTypeAssignment]: ...


@dataclass
class Resolution:
    """What one assignment produced: job ids created now, and job ids that already existed."""

    created: list[str] = field(default_factory=list)
    already_present: list[str] = field(default_factory=list)

    def merge(self, other: Resolution) -> None:
        self.created += other.created
        self.already_present += other.already_present


def assignment_from_stream_record(record: Mapping[str, Any]) -> ObjectTypeAssignment | None:
    """The assignment an INSERT record carries, or None for records we must not act on.

    MODIFY (a rewrite of the same assignment) and REMOVE (a type taken away) create nothing; the
    stream filter in template.yaml drops them already, but a filter is a hint, not a guarantee.
    """
    if record.get("eventName") != "INSERT":
        return None
    image = record.get("dynamodb", {}).get("NewImage")
    if not image:
        raise ValueError("INSERT record without NewImage: the stream must use NEW_AND_OLD_IMAGES")
    return ObjectTypeAssignment.model_validate(from_item(image))


class TriggerEngine:
    """Turns assignments into jobs. Ports are injected so unit tests use in-memory fakes."""

    def __init__(self, triggers: TriggerLookup, jobs: JobWriter, clock: Callable[[], Any] = utcnow) -> None:
        self.triggers = triggers
        self.jobs = jobs
        self.clock = clock

    def put_job(
        self, trigger: Trigger, object_id: str, tagged_at: str | None, lineage: Lineage | None = None
    ) -> tuple[str, bool]:
        """Put the trigger's job for `object_id`, unless it exists. `lineage` is the object's (what
        its assignment carries); without one the object is the root of its chain."""
        now = iso(self.clock())
        lineage = (
            lineage
            or ObjectTypeAssignment(
                object_id=object_id, object_type_id=trigger.object_type_id, assigned_at=tagged_at or now
            ).lineage()
        )
        job = Job.new(
            trigger.workflow_id, object_id, now, trigger_id=trigger.id, tagged_at=tagged_at, lineage=lineage
        )
        details: dict[str, Any] = {"trigger_id": trigger.id}
        if lineage.generated_by:
            details["parent_job_id"] = lineage.generated_by
        created = self.jobs.create(
            job, Transition(events=[JobEventType.created], at=now, by="service", details=details)
        )
        log = {
            "job_id": job.id,
            "workflow_id": trigger.workflow_id,
            "object_id": object_id,
            "object_type_id": trigger.object_type_id,
        }
        if created:
            logger.info("job created", extra={**log, "trigger_id": trigger.id})
        else:
            logger.debug("job already present", extra=log)
        return job.id, created

    def lineage_of(
        self, assignment: ObjectTypeAssignment, parents: dict[str, Job | None] | None = None
    ) -> Lineage:
        """The lineage of the jobs an assignment makes: what it carries. An output's assignment
        written without the chain's inputs (its type triggered nothing when the job finished, and a
        trigger names it now) gets them from its parent job: the parent's inputs and its outputs,
        one read (kept in `parents` across a backfill's objects)."""
        if not assignment.lacks_inputs:
            return assignment.lineage()
        parent_id = assignment.generated_by or ""
        cache = parents if parents is not None else {}
        if parent_id not in cache:
            cache[parent_id] = self.jobs.find(parent_id)
        parent = cache[parent_id]
        lineage = assignment.lineage()
        if parent is None:
            return lineage
        return lineage.model_copy(update={"inputs": [*parent.inputs, *parent.outputs]})

    def resolve(self, assignment: ObjectTypeAssignment) -> Resolution:
        """The assignment's jobs. Its lineage comes with it (a completion writes it on the
        assignment, so the stream record carries it): no read beyond the trigger set."""
        out = Resolution()
        triggers = self.triggers.triggers_for_object_type(assignment.object_type_id)
        if not triggers:
            return out
        lineage = self.lineage_of(assignment)
        for trigger in triggers:
            job_id, created = self.put_job(trigger, assignment.object_id, assignment.assigned_at, lineage)
            (out.created if created else out.already_present).append(job_id)
        return out

    def handle_stream_record(self, record: Mapping[str, Any]) -> Resolution:
        """One stream record: raises on failure so that the batch processor reports it alone."""
        assignment = assignment_from_stream_record(record)
        if assignment is None:
            return Resolution()
        out = self.resolve(assignment)
        record_resolution_metrics(out)
        return out

    def backfill(
        self,
        trigger: Trigger,
        objects: TaggedObjects,
        page_size: int = 500,
        progress: Callable[[int, int], None] | None = None,
    ) -> Resolution:
        """Jobs for objects that carried the trigger's type before the trigger existed.

        Reads the object-type index a page at a time (a Query, never a Scan); each put is
        conditional, so running it twice, or beside the stream, makes nothing twice. The index holds
        keys only, so each page's assignments are read (BatchGetItem) for their lineage: a job a
        backfill or a reconcile makes for a chain's output knows its chain as the stream's would.
        """
        out = Resolution()
        token: str | None = None
        seen = 0
        parents: dict[str, Job | None] = {}
        while True:
            object_ids, token = objects.objects_with_type(trigger.object_type_id, page_size, token)
            assignments = objects.assignments_of(trigger.object_type_id, object_ids) if object_ids else {}
            for object_id in object_ids:
                assignment = assignments.get(object_id)
                lineage = self.lineage_of(assignment, parents) if assignment else None
                job_id, created = self.put_job(trigger, object_id, None, lineage)
                (out.created if created else out.already_present).append(job_id)
            seen += len(object_ids)
            if progress:
                progress(seen, len(out.created))
            if not token:
                break
        logger.info(
            "backfill finished",
            extra={"trigger_id": trigger.id, "objects": seen, "jobs_created": len(out.created)},
        )
        return out


def record_resolution_metrics(out: Resolution) -> None:
    if out.created:
        metrics.add_metric(name="JobsCreated", unit=MetricUnit.Count, value=len(out.created))
    if out.already_present:
        metrics.add_metric(name="JobsAlreadyPresent", unit=MetricUnit.Count, value=len(out.already_present))


def record_batch_metrics(result: OrderedBatchResult) -> None:
    """`RecordsFailed` counts records whose handling failed (one per failed batch: the batch stops
    there, and the records after it were not tried); the alarm `stream-records-failed` reads it."""
    if result.failed:
        metrics.add_metric(name="RecordsFailed", unit=MetricUnit.Count, value=1)
