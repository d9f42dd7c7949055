"""Job transitions, read from the jobs table's stream, become EventBridge events and running counts.

Every state-changing write of a job sets `version = version + 1` (create: 1) and `transition =
{"events": [...], "at", "by", ...details}` (docs/architecture.md, "Job events"). One stream record
with a higher version in its NewImage than in its OldImage (an INSERT counts) is one transition:

- its events: one per entry of `transition.events`, in order, each with the stable `event_id`
  `<job_id>:<version>:<n>` (n from 0), the job as the write left it and `previous_*` as it was;
- its count deltas: the workflow's status counts (old status -1, new status +1; an INSERT +1),
  per `job.claimed` the claiming site's claims of that hour (`site#<id>#<yyyy-mm-ddThh>` +1), and
  the jobs each site holds (`held#<id>`: +1 for the site that now holds it, -1 for the one that did).

Records whose version did not rise (heartbeats renew a lease without one), REMOVEs and writes
without a valid transition make neither.

`JobEventsProcessor` applies one record: the transition item and the counts in one transaction
(a transition already recorded is not counted again), then PutEvents, then marks the item
published. The functions here are pure; the processor's store and bus are ports (dal/job_events.py
on AWS, fakes in unit tests).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from aws_lambda_powertools.metrics import MetricUnit, single_metric

from jobtriggers.dal.dynamo import from_item
from jobtriggers.logic.stream_batch import OrderedBatchResult, Record
from jobtriggers.models.job_events import CountDelta, JobEvent, JobTransition, Recorded
from jobtriggers.observability import logger, metrics

# A job's last error travels in every event; its message is cut here so that one long error (its
# `details` stay on the job) can never push a PutEvents entry past EventBridge's 256 KB.
ERROR_MESSAGE_MAX_CHARS = 1024
# The dimension that tells this consumer's RecordsFailed from TriggerResolver's (template.yaml's
# alarms read each consumer's own).
METRICS_CONSUMER = "job-events"


class MalformedTransition(ValueError):
    """A job write that raised the version without a usable `transition`: a bug in the writer."""


def workflow_scope(workflow_id: str) -> str:
    return f"workflow#{workflow_id}"


def site_hour_scope(site_id: str, hour: str) -> str:
    return f"site#{site_id}#{hour}"


def holder_scope(site_id: str) -> str:
    """The counts item of the jobs a site holds now (`jobs`: how many are claimed by it)."""
    return f"held#{site_id}"


def _holder(image: Mapping[str, Any] | None) -> str | None:
    """The site holding the job in this image: its `site_id` while it is claimed."""
    if not image or image.get("status") != "claimed":
        return None
    site_id = image.get("site_id")
    return site_id if isinstance(site_id, str) and site_id else None


def parse_instant(value: Any) -> datetime:
    """An ISO timestamp as the service writes them (`...Z`), as an aware UTC datetime."""
    if not isinstance(value, str) or not value:
        raise MalformedTransition(f"transition.at must be an ISO timestamp, not {value!r}")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise MalformedTransition(f"transition.at must be an ISO timestamp, not {value!r}") from exc
    if parsed.tzinfo is None:
        raise MalformedTransition(f"transition.at must carry its zone (…Z), not {value!r}")
    return parsed.astimezone(UTC)


def hour_of(at: str) -> str:
    """`2024-05-01T10:59:59.123Z` -> `2024-05-01T10` (UTC)."""
    return parse_instant(at).strftime("%Y-%m-%dT%H")


def _version(image: Mapping[str, Any] | None) -> int | None:
    value = (image or {}).get("version")
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def _bounded_error(error: Any) -> dict[str, Any] | None:
    if not isinstance(error, Mapping):
        return None
    out: dict[str, Any] = {}
    if error.get("code") is not None:
        out["code"] = str(error["code"])
    message = error.get("message")
    if message is not None:
        text = str(message)
        out["message"] = (
            text if len(text) <= ERROR_MESSAGE_MAX_CHARS else text[: ERROR_MESSAGE_MAX_CHARS - 1] + "…"
        )
    return out or None


def _object_id(image: Mapping[str, Any]) -> str | None:
    if image.get("object_id"):
        return str(image["object_id"])
    config = image.get("config")
    if isinstance(config, Mapping) and config.get("object_id"):
        return str(config["object_id"])
    return None


def transition_from_images(new: Mapping[str, Any], old: Mapping[str, Any] | None) -> JobTransition | None:
    """The transition a write made (plain images, as from_item gives them), or None when the
    version did not rise. Raises MalformedTransition when it rose without a usable transition."""
    new_version = _version(new)
    old_version = _version(old) or 0
    if new_version is None or new_version <= old_version:
        return None
    job_id, workflow_id, status = new.get("id"), new.get("workflow_id"), new.get("status")
    if not (isinstance(job_id, str) and job_id and isinstance(workflow_id, str) and workflow_id):
        raise MalformedTransition(f"version {new_version} of a job item without id or workflow_id")
    if not isinstance(status, str) or not status:
        raise MalformedTransition(f"job {job_id} version {new_version} has no status")
    transition = new.get("transition")
    if not isinstance(transition, Mapping):
        raise MalformedTransition(f"job {job_id} version {new_version} has no transition")
    types = transition.get("events")
    if (
        not isinstance(types, list)
        or not types
        or not all(isinstance(t, str) and t.startswith("job.") for t in types)
    ):
        raise MalformedTransition(
            f"job {job_id} version {new_version}: transition.events must be a list of job.* types, "
            f"not {types!r}"
        )
    at = transition.get("at")
    at_instant = parse_instant(at)
    by = transition.get("by")
    if not isinstance(by, str) or not by:
        raise MalformedTransition(f"job {job_id} version {new_version}: transition.by is missing")

    previous_status = old.get("status") if old else None
    details = {k: v for k, v in transition.items() if k not in ("events", "at", "by")}
    common: dict[str, Any] = {
        "job_id": job_id,
        "version": new_version,
        "workflow_id": workflow_id,
        "object_id": _object_id(new),
        "status": status,
        "previous_status": previous_status,
        "attempt": int(new.get("attempts") or 0),
        "max_attempts": new.get("max_attempts"),
        "run": new.get("run"),
        "site_id": new.get("site_id"),
        "previous_site_id": old.get("site_id") if old else None,
        "operation_id": new.get("operation_id"),
        "cancel_requested": bool(new.get("cancel_requested")),
        "last_error": _bounded_error(new.get("last_error")),
        "occurred_at": str(at),
        "by": by,
        "details": details,
    }
    events = tuple(
        JobEvent(event_id=f"{job_id}:{new_version}:{n}", type=event_type, **common)
        for n, event_type in enumerate(types)
    )

    deltas: list[CountDelta] = []
    if old is None:
        deltas.append(CountDelta(workflow_scope(workflow_id), status, +1))
    elif previous_status != status:
        if isinstance(previous_status, str) and previous_status:
            old_workflow = old.get("workflow_id") or workflow_id
            deltas.append(CountDelta(workflow_scope(str(old_workflow)), previous_status, -1))
        deltas.append(CountDelta(workflow_scope(workflow_id), status, +1))
    claims = types.count("job.claimed")
    site_id = new.get("site_id")
    if claims and isinstance(site_id, str) and site_id:
        deltas.append(
            CountDelta(site_hour_scope(site_id, at_instant.strftime("%Y-%m-%dT%H")), "claims", claims)
        )
    # What each site holds: one job more for the site that now holds it, one less for the one that
    # held it before (a takeover moves it from one to the other; a cancel request moves nothing).
    held_before, held_after = _holder(old), _holder(new)
    if held_before != held_after:
        if held_before:
            deltas.append(CountDelta(holder_scope(held_before), "jobs", -1))
        if held_after:
            deltas.append(CountDelta(holder_scope(held_after), "jobs", +1))
    return JobTransition(
        job_id=job_id,
        version=new_version,
        workflow_id=workflow_id,
        status=status,
        previous_status=previous_status if isinstance(previous_status, str) else None,
        at=str(at),
        by=by,
        events=events,
        deltas=tuple(deltas),
    )


def transition_from_stream_record(record: Record) -> JobTransition | None:
    """One jobs-stream record (Lambda's shape: DynamoDB JSON images) as a transition, or None."""
    if record.get("eventName") not in ("INSERT", "MODIFY"):
        return None
    ddb = record.get("dynamodb", {})
    new_image = ddb.get("NewImage")
    if not new_image:
        raise ValueError("a jobs-stream record without NewImage: the stream must use NEW_AND_OLD_IMAGES")
    old_image = ddb.get("OldImage")
    return transition_from_images(from_item(new_image), from_item(old_image) if old_image else None)


# --------------------------------------------------------------------------- applying a record


class TransitionStore(Protocol):
    def record(self, transition: JobTransition) -> Recorded: ...

    def mark_published(self, transition: JobTransition) -> None: ...


class EventBus(Protocol):
    def publish(self, events: Sequence[JobEvent]) -> None: ...


@dataclass
class Outcome:
    """What one record came to (for logs and tests): `applied` (counted by this call), how many
    events were `published`, or why it was `skipped`."""

    job_id: str | None = None
    version: int | None = None
    published: int = 0
    applied: bool = False
    skipped: str | None = None


class JobEventsProcessor:
    """One jobs-stream record at a time: record and count, publish, mark published."""

    def __init__(self, store: TransitionStore, bus: EventBus) -> None:
        self.store = store
        self.bus = bus

    def handle_stream_record(self, record: Record) -> Outcome:
        """Raises when the record must be retried (the batch stops here: logic/stream_batch.py)."""
        try:
            transition = transition_from_stream_record(record)
        except MalformedTransition as exc:
            # Retrying cannot mend the item, and raising would hold up every job of the shard: it is
            # logged loudly, and the writer is what needs fixing.
            keys = record.get("dynamodb", {}).get("Keys")
            logger.error(
                "job write without a usable transition: no events, no counts",
                extra={"reason": str(exc), "keys": keys},
            )
            return Outcome(skipped="malformed")
        if transition is None:
            return Outcome(skipped="no new version")
        recorded = self.store.record(transition)
        outcome = Outcome(job_id=transition.job_id, version=transition.version, applied=recorded.applied)
        if recorded.published:
            logger.info(
                "job transition seen again, its events were published already",
                extra={"job_id": transition.job_id, "version": transition.version},
            )
            return outcome
        self.bus.publish(transition.events)
        outcome.published = len(transition.events)
        metrics.add_metric(name="JobEventsPublished", unit=MetricUnit.Count, value=len(transition.events))
        try:
            self.store.mark_published(transition)
        except Exception:
            # Only a redelivery (after a crash) would publish these events again; subscribers dedupe
            # on event_id, as EventBridge's own delivery is at-least-once.
            logger.warning(
                "could not mark a job transition published; its events were published",
                exc_info=True,
                extra={"job_id": transition.job_id, "version": transition.version},
            )
        return outcome


def record_batch_metrics(result: OrderedBatchResult) -> None:
    """`RecordsFailed` (one per failed batch: it stops there) with `consumer=job-events`, so that
    the alarm `job-events-records-failed` reads this consumer's failures and not TriggerResolver's."""
    if result.failed:
        with single_metric(name="RecordsFailed", unit=MetricUnit.Count, value=1) as metric:
            metric.add_dimension(name="consumer", value=METRICS_CONSUMER)
