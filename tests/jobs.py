"""Jobs for tests: made as the trigger engine makes them (Job.new, and JobRepository.create with a
`job.created` transition), never as hand-written items; the stored items as the tables hold them;
and PATCH bodies as the route hands them to the claim service."""

from __future__ import annotations

from typing import Any

from jobtriggers.dal.dynamo import get_item
from jobtriggers.dal.jobs import JobRepository
from jobtriggers.logic.claims import Report
from jobtriggers.models import (
    Claim,
    Job,
    JobEventType,
    JobStatus,
    OperationRecord,
    Transition,
    job_key_from_id,
)
from jobtriggers.settings import table_names


def created(at: str, trigger_id: str | None = None) -> Transition:
    """The transition that creates a job, as the trigger engine writes it."""
    details = {"trigger_id": trigger_id} if trigger_id else {}
    return Transition(events=[JobEventType.created], at=at, by="service", details=details)


def put_new_job(
    workflow_id: str,
    object_id: str,
    created_at: str,
    *,
    trigger_id: str | None = None,
    repo: JobRepository | None = None,
) -> Job:
    """A new pending job, written with the conditional put; the job (version 1)."""
    job = Job.new(workflow_id, object_id, created_at, trigger_id=trigger_id)
    assert (repo or JobRepository()).create(job, created(created_at, trigger_id)), f"{job.id} existed"
    return job.model_copy(update={"version": 1})


def claimed(
    job: Job,
    *,
    site_id: str,
    op_id: str,
    lease_expires_at: str,
    attempts: int = 1,
    max_attempts: int | None = None,
) -> Job:
    """`job` as a claim leaves it (for setups that need many claimed jobs, or leases that ended long
    ago): held by `site_id` through operation `op_id`, one more claim, one more version."""
    return job.model_copy(
        update={
            "status": JobStatus.claimed,
            "site_id": site_id,
            "operation_id": op_id,
            "lease_expires_at": lease_expires_at,
            "attempts": attempts,
            "max_attempts": max_attempts,
            "claims": [*job.claims, Claim(op_id=op_id, site_id=site_id)],
            "version": job.version + 1,
        }
    )


def operation_of(job: Job, lease_seconds: int = 60) -> OperationRecord:
    """The operation the claim of the claimed `job` made, as ClaimService makes it."""
    assert job.status == JobStatus.claimed and job.operation_id and job.site_id and job.lease_expires_at
    return OperationRecord(
        id=job.operation_id,
        job_id=job.id,
        site_id=job.site_id,
        attempt=job.attempts,
        claim_index=len(job.claims) - 1,
        lease_seconds=lease_seconds,
        max_attempts=job.max_attempts or 3,
        created_at=job.updated_at or job.created_at,
        updated_at=job.updated_at or job.created_at,
        expire_time=job.lease_expires_at,
        metadata={
            "job": job.model_dump(mode="json"),
            "site_id": job.site_id,
            "attempt": job.attempts,
            "lease_expires_at": job.lease_expires_at,
        },
    )


def stored_job(job_id: str) -> dict[str, Any]:
    """The job's item as the table holds it (index attributes, `version`, `transition`), read
    strongly consistent."""
    key = job_key_from_id(job_id)
    assert key is not None, f"{job_id} is not a job id"
    item = get_item(table_names().jobs_table, {"job_key": key}, "read a job in a test")
    assert item is not None, f"job {job_id} is not in the table"
    return item


def stored_operation(op_id: str) -> dict[str, Any]:
    """The operation's item as the table holds it (with `site_done`)."""
    item = get_item(table_names().operations_table, {"id": op_id}, "read an operation in a test")
    assert item is not None, f"operation {op_id} is not in the table"
    return item


_UNSENT: Any = object()


def report(done: bool | None = None, result: Any = _UNSENT, metadata: dict[str, Any] | None = None) -> Report:
    """A PATCH body as the route turns it into a Report: a `result` sent (even null) is `result_sent`."""
    sent = result is not _UNSENT
    return Report(done=done, result=result if sent else None, result_sent=sent, metadata=metadata)
