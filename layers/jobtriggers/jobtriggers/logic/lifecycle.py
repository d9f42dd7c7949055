"""Steering jobs: cancel, rerun, and release on an operator's word (the CLI, the job board).

- Cancel: a `pending` job becomes `cancelled` at once (nobody claims it again); a `claimed` job is
  marked `cancel_requested`, on the job and on its operation, so the holder reads it in the answer
  to its next heartbeat, stops, and reports (the job then ends `cancelled`; if its lease runs out
  first it ends `cancelled` too). A `failed` job can be cancelled to say "given up on": it leaves
  the list of failures that need looking at.
- Rerun: a `done`, `failed` or `cancelled` job is `pending` again with a fresh attempt budget and
  run number one more; its claims move to `previous_claims`, its operations stay as history.
- Release: a claimed job handed back as its holder would (the attempt given back).
Each is one transaction, conditional on the job being as it was read (its version).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from jobtriggers.dal.jobs import JobChange, OperationUpdate
from jobtriggers.errors import ConflictError, ForbiddenError
from jobtriggers.logic.claims import JobStore, fields_of, release_change
from jobtriggers.models import FINISHED, Job, JobEventType, JobStatus, Transition, iso, utcnow
from jobtriggers.observability import logger

RERUNNABLE = FINISHED
CANCELLABLE = frozenset({JobStatus.pending, JobStatus.claimed, JobStatus.failed})


class JobSteering:
    """What operators (and the site that created a job) do to jobs, whoever holds them."""

    def __init__(self, jobs: JobStore, clock: Callable[[], datetime] = utcnow) -> None:
        self.jobs = jobs
        self.clock = clock

    def cancel(self, job_id: str, by: str, *, creator: str | None = None) -> Job:
        """Cancel as `by` (an operator, or a site). `creator`: the caller is that site, which may
        cancel only the jobs it created (403 otherwise)."""
        job = self.jobs.get(job_id)
        if creator is not None and job.created_by != creator:
            raise ForbiddenError(
                f"job '{job_id}' was not created by site '{creator}'; a site may cancel only the jobs "
                "it created (POST /jobs), an operator any (jobtriggers jobs cancel)"
            )
        now = iso(self.clock())
        if job.status not in CANCELLABLE:
            raise ConflictError(
                f"job '{job_id}' is {job.status}; only pending, claimed or failed jobs can be cancelled"
            )
        if job.status == JobStatus.claimed:
            if job.cancel_requested:
                raise ConflictError(
                    f"job '{job_id}': a cancel was already asked of site '{job.site_id}'; it stops at its "
                    "next heartbeat, or its lease ends"
                )
            change = JobChange(
                job=job,
                expect={
                    "status": JobStatus.claimed,
                    "operation_id": job.operation_id,
                    "version": job.version,
                },
                set={"cancel_requested": True, "updated_at": now},
                transition=Transition(events=[JobEventType.cancel_requested], at=now, by=by),
                operation=OperationUpdate(
                    op_id=job.operation_id or "",
                    site_id=job.site_id or "",
                    set={("metadata", "cancel_requested"): True, "updated_at": now},
                    live_holder=True,
                ),
            )
            after: dict[str, Any] = {"cancel_requested": True}
        else:
            change = JobChange(
                job=job,
                expect={"status": job.status, "version": job.version},
                set={"status": JobStatus.cancelled, "updated_at": now, "finished_at": now},
                transition=Transition(events=[JobEventType.cancelled], at=now, by=by),
            )
            after = {"status": JobStatus.cancelled, "finished_at": now}
        self._apply(change, job)
        logger.info("job cancel", extra={"job_id": job_id, "by": by, "was": job.status.value})
        return job.model_copy(update={**after, "updated_at": now, "version": job.version + 1})

    def rerun(self, job_id: str, by: str) -> Job:
        job = self.jobs.get(job_id)
        now = iso(self.clock())
        if job.status not in RERUNNABLE:
            raise ConflictError(
                f"job '{job_id}' is {job.status}; only done, failed or cancelled jobs can be rerun"
            )
        updates: dict[str | tuple[str, ...], Any] = {
            "status": JobStatus.pending,
            "attempts": 0,
            "claims": [],
            "previous_claims": [*job.previous_claims, *job.claims],
            "cancel_requested": False,
            "updated_at": now,
        }
        change = JobChange(
            job=job,
            expect={"status": job.status, "version": job.version},
            set=updates,
            remove=("result", "last_error", "finished_at"),
            increment={"run": 1},
            transition=Transition(events=[JobEventType.rerun], at=now, by=by, details={"run": job.run + 1}),
        )
        self._apply(change, job)
        logger.info("job rerun", extra={"job_id": job_id, "by": by, "run": job.run + 1})
        return job.model_copy(
            update={
                **fields_of(updates),
                "run": job.run + 1,
                "result": None,
                "last_error": None,
                "finished_at": None,
                "version": job.version + 1,
            }
        )

    def release(self, job_id: str, by: str) -> Job:
        job = self.jobs.get(job_id)
        if job.status != JobStatus.claimed:
            raise ConflictError(f"job '{job_id}' is {job.status}, not claimed; there is nothing to release")
        self._apply(release_change(job, self.clock(), by=by), job)
        logger.info("job released", extra={"job_id": job_id, "by": by, "site_id": job.site_id})
        return self.jobs.get(job_id)

    def _apply(self, change: JobChange, job: Job) -> None:
        if not self.jobs.apply(change):
            raise ConflictError(
                f"job '{job.id}' changed meanwhile (it was {job.status}); look again and retry"
            )
