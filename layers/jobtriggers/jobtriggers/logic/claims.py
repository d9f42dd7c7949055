"""Claiming jobs with leases, and the operations that report on them.

The rules, in one place (the data-access layer only runs the conditional writes these build):
- A job can be claimed when it is `pending`, or `claimed` with a lease that ended before now. An
  ended lease is first expired (below), then the job is claimed as any pending one. Each claim
  and each expiry is one transaction.
- The site that holds a live lease and claims again gets the same operation (a retried request is
  safe); another site gets 409 naming the holder and the lease end; finished jobs are 409.
- A site may run a workflow only when it has every capability the workflow needs (else 403).
  Claim-next looks only at the queues of workflows the site may run, so its work is bounded by
  those, never by jobs it cannot run; jobs of workflows no longer in the registry are claimed by
  nobody.
- Attempts: each claim uses one; a release gives it back (handing work back is not failing it);
  an error result or an expired lease keeps it used. When an attempt ends in an error or an
  expiry and the job has used `max_attempts`, it is `failed` with that error as its result;
  otherwise it is `pending` again. Either way the error is the job's `last_error`.
- Any accepted PATCH of a live operation renews the lease; `done: true` finishes it: with a
  result the job is `done`; with an error result see attempts. A release makes the job `pending`
  and the operation done with `cancelled`.
- A job cancelled while claimed is `cancel_requested`, and so is its operation (the holder sees
  it on its next heartbeat); the attempt's end then makes the job `cancelled` rather than pending
  or failed (a success still makes it `done`: the work happened).
- A claim that ends without finishing the job (release, error, expiry, cancel) is marked `done` and
  `cancelled` in the job's `claims`, one that finished it `done`: NMDC's clients read claims so.
- A lease that ended is expired by `expire_lease`, one rule for both paths that find it: a claim
  that comes across it, and the lease reaper that runs every minute (functions/lease_reaper).
Every change of state is a transition: one more `version` on the job, with its events.
Ports are protocols so unit tests run these rules against in-memory fakes, with a fake clock.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from aws_lambda_powertools.metrics import MetricUnit

from jobtriggers.dal.jobs import JobChange, NewOutput, OperationUpdate, Queue
from jobtriggers.errors import (
    ConflictError,
    ForbiddenError,
    NotFoundError,
    PayloadTooLargeError,
    ValidationFailed,
)
from jobtriggers.logic.outputs import check_transaction_size, outputs_in, parse_outputs, plan_outputs
from jobtriggers.models import (
    FINISHED,
    Claim,
    InputRef,
    Job,
    JobEventType,
    JobStatus,
    OperationRecord,
    Transition,
    Trigger,
    Workflow,
    iso,
    utcnow,
)
from jobtriggers.observability import logger, metrics
from jobtriggers.settings import job_settings

# Metadata keys the service owns: a PATCH may repeat them unchanged, never change them.
IMMUTABLE_METADATA = ("job", "site_id", "attempt")
# Metadata keys the service rewrites itself; a PATCH that sends them back is not an error.
SERVICE_METADATA = ("lease_expires_at", "cancelled", "cancel_requested")
MAX_PATCH_BYTES = 64 * 1024
MAX_METADATA_KEYS = 32
LEASE_EXPIRED = "lease_expired"
CANCELLED = "cancelled"

# claim-next, per queue of each workflow the site may run (pending jobs, then ended leases): how
# many of the oldest jobs to consider, how many to try per page, and how many pages to read when
# every try lost its race (bounded work, no hot spinning).
# k claimers picking at random among N candidates collide about (k - 1) / 2N times per claim:
# 16 sites over 25 candidates measured 0.37 conflicts per claim; over 100, about 0.08. The page
# is read "brief" (keys and a few fields), so 100 candidates cost about 2 read units, not 25.
CANDIDATE_PAGE = 100
TRIES_PER_PAGE = 6
CANDIDATE_PAGES = 4
# A single-job claim re-reads and retries this often when the job changes under it.
CLAIM_ROUNDS = 3
# The lease reaper: ended leases read per page, and at most this many per run (the next run,
# a minute later, goes on where this one stopped).
REAP_PAGE = 100
REAP_MAX_PER_RUN = 500


# --------------------------------------------------------------------------- ports


class JobStore(Protocol):
    def get(self, job_id: str) -> Job: ...

    def queue_page(
        self,
        workflow_id: str | None,
        queue: Queue,
        now: str,
        limit: int,
        page_token: str | None = None,
        brief: bool = False,
        created_by: str | None = None,
    ) -> tuple[list[Job], str | None]: ...

    def apply(self, change: JobChange) -> bool: ...


class OperationStore(Protocol):
    def get(self, op_id: str) -> OperationRecord | None: ...


class TriggerSource(Protocol):
    def all_triggers(self) -> list[Trigger]: ...


class WorkflowLookup(Protocol):
    def workflow(self, workflow_id: str) -> Workflow: ...

    def workflows(self) -> list[Workflow]: ...


@dataclass(frozen=True)
class SiteRef:
    """The calling site, as the authorizer and the sites table know it."""

    id: str
    capability_ids: frozenset[str] = frozenset()
    can_create_jobs: bool = False

    @classmethod
    def of(
        cls, site_id: str, capability_ids: Iterable[str] = (), *, can_create_jobs: bool = False
    ) -> SiteRef:
        return cls(site_id, frozenset(capability_ids), can_create_jobs)


@dataclass(frozen=True)
class Report:
    """What a site reports on its operation (PATCH /operations/{id}): `done` ends the attempt with
    `result` (an error result fails it); `result_sent` tells a `"result": null` from no result."""

    done: bool | None = None
    result: Any = None
    result_sent: bool = False
    metadata: dict[str, Any] | None = None
    # The API's host as the site called it: the `self_uri` (drs://host/id) of objects a completion registers.
    host: str | None = None


@dataclass
class ClaimOutcome:
    operation: OperationRecord
    created: bool  # False: the site already held this job, and gets its operation again


@dataclass
class Limits:
    lease_seconds: int
    max_attempts: int
    capability_ids: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, wf: Workflow) -> Limits:
        defaults = job_settings()
        return cls(
            lease_seconds=wf.lease_seconds or defaults.default_lease_seconds,
            max_attempts=wf.max_attempts or defaults.default_max_attempts,
            capability_ids=list(wf.capability_ids),
        )

    @classmethod
    def of_site_workflow(cls) -> Limits:
        """A workflow the registry does not know, run by the site that created its jobs: no
        capabilities, and the long lease of a site that reports only when its run ends (NMDC's
        watcher never heartbeats; the NMDC Runtime gives its operations 30 days)."""
        defaults = job_settings()
        return cls(
            lease_seconds=defaults.site_workflow_lease_seconds,
            max_attempts=defaults.default_max_attempts,
        )


@dataclass
class ReapReport:
    """What one run of the lease reaper did."""

    seen: int = 0
    pending: int = 0  # expired, and pending again for another attempt
    failed: int = 0  # expired on their last attempt (or cancelled, when a cancel was asked)
    skipped: int = 0  # no longer as the index showed them
    more: bool = False  # stopped at its bound with ended leases left: the next run goes on

    def as_dict(self) -> dict[str, Any]:
        return {
            "seen": self.seen,
            "pending": self.pending,
            "failed": self.failed,
            "skipped": self.skipped,
            "more": self.more,
        }


def is_error_result(result: Any) -> bool:
    """An error result is the NMDC Runtime's OperationError: {code, message, details?} and nothing else."""
    return (
        isinstance(result, dict)
        and isinstance(result.get("code"), str)
        and isinstance(result.get("message"), str)
        and set(result) <= {"code", "message", "details"}
    )


def _count(name: str) -> None:
    metrics.add_metric(name=name, unit=MetricUnit.Count, value=1)


def ended_claim(job: Job, op_id: str | None, *, finished: bool) -> dict[str | tuple[str, ...], Any]:
    """The updates that mark operation `op_id`'s claim as ended in the job's `claims`: `done`, and
    `cancelled` unless it finished the job."""
    index = job.claim_index(op_id) if op_id else None
    return claim_ended_at(index, finished=finished)


def claim_ended_at(index: int | None, *, finished: bool) -> dict[str | tuple[str, ...], Any]:
    if index is None or index < 0:
        return {}
    updates: dict[str | tuple[str, ...], Any] = {(f"claims[{index}]", "done"): True}
    if not finished:
        updates[(f"claims[{index}]", "cancelled")] = True
    return updates


class ClaimService:
    def __init__(
        self,
        jobs: JobStore,
        operations: OperationStore,
        workflows: WorkflowLookup,
        clock: Callable[[], datetime] = utcnow,
        rng: random.Random | None = None,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
        triggers: TriggerSource | None = None,
    ) -> None:
        self.jobs = jobs
        self.operations = operations
        self.workflows = workflows
        # Which output types start a next job now (their assignments carry the chain's inputs);
        # None: every assignment carries them.
        self.triggers = triggers
        self.clock = clock
        self.rng = rng or random.Random()
        self.new_id = new_id
        self._limits: dict[str, Limits | None] = {}

    # ------------------------------------------------------------------ registry

    def workflow_limits(self, workflow_id: str) -> Limits | None:
        """Lease, attempts and capabilities of a workflow (None when the registry no longer has it)."""
        if workflow_id not in self._limits:
            try:
                wf = self.workflows.workflow(workflow_id)
            except NotFoundError:
                self._limits[workflow_id] = None
            else:
                self._limits[workflow_id] = Limits.of(wf)
        return self._limits[workflow_id]

    def runnable_workflows(self, site: SiteRef) -> list[str]:
        """The ids of the registry's workflows this site has every capability for (one Query of
        the registry's small workflow partition), sorted."""
        runnable = []
        for wf in self.workflows.workflows():
            limits = self._limits[wf.id] = Limits.of(wf)
            if set(limits.capability_ids) <= site.capability_ids:
                runnable.append(wf.id)
        return sorted(runnable)

    def _require_runnable(self, job: Job, site: SiteRef) -> Limits:
        """What `site` claims `job` under: the registry's rule for a registry workflow (the site
        needs every capability it names); for a workflow the registry does not know, the job's
        creator only; a triggered job whose workflow left the registry, nobody."""
        workflow_id = job.workflow_id
        limits = self.workflow_limits(workflow_id)
        if limits is None:
            if job.created_by == site.id:
                return Limits.of_site_workflow()
            if job.created_by is not None:
                raise ForbiddenError(
                    f"job '{job.id}' is of workflow '{workflow_id}', which the registry does not know; "
                    f"only the site that created it ('{job.created_by}') may claim it"
                )
            raise ConflictError(
                f"workflow '{workflow_id}' is no longer in the registry; its jobs cannot be claimed"
            )
        return self._require_capabilities(workflow_id, limits, site)

    # ------------------------------------------------------------------ claims

    def claim(self, job_id: str, site: SiteRef) -> ClaimOutcome:
        """Claim one job by id (POST /jobs/{id}:claim)."""
        for _ in range(CLAIM_ROUNDS):
            job = self.jobs.get(job_id)
            limits = self._require_runnable(job, site)
            now = self.clock()
            if job.status == JobStatus.claimed:
                if (job.lease_expires_at or "") >= iso(now):
                    if job.site_id == site.id and job.operation_id:
                        op = self.operations.get(job.operation_id)
                        if op is not None:
                            return ClaimOutcome(op, created=False)
                    _count("ClaimConflicts")
                    raise ConflictError(
                        f"job '{job_id}' is claimed by site '{job.site_id}' until "
                        f"{job.lease_expires_at} (its lease); try again after that or claim another job"
                    )
                expired = self.expire_lease(job, now)
                if expired is None:  # someone else expired or renewed it first: read again
                    _count("ClaimConflicts")
                    continue
                job = expired
            if job.status != JobStatus.pending:
                raise ConflictError(_not_claimable_message(job))
            operation = self._try_claim(job, site, limits, now)
            if operation is not None:
                return ClaimOutcome(operation, created=True)
            _count("ClaimConflicts")  # the job changed between our read and our write: read again
        raise ConflictError(f"job '{job_id}' kept changing hands while claiming it; retry")

    def claim_next(self, site: SiteRef, workflow_id: str | None = None) -> OperationRecord | None:
        """Claim a claimable job this site may run (POST /jobs:claim), or None when there is none.

        Only the queues of the workflows the site may run are read (one workflow when named), each
        oldest first: its pending jobs, then its ended leases. The workflows are visited from a
        random starting point, so no workflow starves another; jobs the site cannot run (of other
        workflows, or of workflows no longer in the registry) cost it nothing.

        Many sites call this at once. Each reads a page of the oldest candidates and tries a few
        of them in its own random order, so concurrent claimers spread over the page instead of
        all colliding on the head of the queue; work per call is bounded (workflows x queues x
        pages x tries).
        """
        if workflow_id is not None:
            named = self.workflow_limits(workflow_id)
            if named is None:
                if site.can_create_jobs:
                    # A workflow the registry does not know: this site's own jobs of it, if any.
                    return self._claim_next_of(site, workflow_id, Limits.of_site_workflow(), site.id)
                raise ValidationFailed(
                    f"workflow '{workflow_id}' does not exist", loc=["body", "workflow_id"]
                )
            limits = self._require_capabilities(workflow_id, named, site)
            return self._claim_next_of(site, workflow_id, limits)
        workflows = self.runnable_workflows(site)
        if not workflows:
            return None
        start = self.rng.randrange(len(workflows))
        for wf in workflows[start:] + workflows[:start]:
            wf_limits = self.workflow_limits(wf)
            if wf_limits is None:
                continue
            operation = self._claim_next_of(site, wf, wf_limits)
            if operation is not None:
                return operation
        return None

    def _require_capabilities(self, workflow_id: str, limits: Limits, site: SiteRef) -> Limits:
        missing = sorted(set(limits.capability_ids) - site.capability_ids)
        if missing:
            raise ForbiddenError(
                f"site '{site.id}' lacks the capabilities workflow '{workflow_id}' needs: "
                + ", ".join(missing)
            )
        return limits

    def _claim_next_of(
        self, site: SiteRef, workflow_id: str, limits: Limits, created_by: str | None = None
    ) -> OperationRecord | None:
        for queue in ("pending", "ended"):
            operation = self._claim_from_queue(site, workflow_id, queue, limits, created_by)
            if operation is not None:
                return operation
        return None

    def _claim_from_queue(
        self,
        site: SiteRef,
        workflow_id: str,
        queue: Queue,
        limits: Limits,
        created_by: str | None = None,
    ) -> OperationRecord | None:
        token: str | None = None
        for _ in range(CANDIDATE_PAGES):
            page, token = self.jobs.queue_page(
                workflow_id,
                queue,
                iso(self.clock()),
                CANDIDATE_PAGE,
                token,
                brief=True,
                created_by=created_by,
            )
            self.rng.shuffle(page)
            for candidate in page[:TRIES_PER_PAGE]:
                # The index lags the table: decide on a consistent read, and skip jobs taken meanwhile.
                job = self.jobs.get(candidate.id)
                if created_by is not None and job.created_by != created_by:
                    continue
                now = self.clock()
                if job.status == JobStatus.claimed and (job.lease_expires_at or "") < iso(now):
                    expired = self.expire_lease(job, now)
                    if expired is None:
                        _count("ClaimConflicts")
                        continue
                    job = expired
                if job.status != JobStatus.pending:
                    continue
                operation = self._try_claim(job, site, limits, now)
                if operation is not None:
                    return operation
                _count("ClaimConflicts")
            if not token:
                break
        return None

    def _try_claim(self, job: Job, site: SiteRef, limits: Limits, now: datetime) -> OperationRecord | None:
        """One conditional claim of the pending `job` as read; None when it is no longer as read."""
        attempt = job.attempts + 1
        lease_end = iso(now + timedelta(seconds=limits.lease_seconds))
        op_id = self.new_id()
        claim = Claim(op_id=op_id, site_id=site.id)
        changes: dict[str | tuple[str, ...], Any] = {
            "status": JobStatus.claimed,
            "site_id": site.id,
            "operation_id": op_id,
            "lease_expires_at": lease_end,
            "attempts": attempt,
            "max_attempts": limits.max_attempts,
            "updated_at": iso(now),
        }
        claimed = job.model_copy(
            update={**fields_of(changes), "claims": [*job.claims, claim], "version": job.version + 1}
        )
        operation = OperationRecord(
            id=op_id,
            job_id=job.id,
            site_id=site.id,
            attempt=attempt,
            claim_index=len(job.claims),
            lease_seconds=limits.lease_seconds,
            max_attempts=limits.max_attempts,
            created_at=iso(now),
            updated_at=iso(now),
            expire_time=lease_end,
            metadata={
                "job": claimed.model_dump(mode="json"),
                "site_id": site.id,
                "attempt": attempt,
                "lease_expires_at": lease_end,
            },
        )
        change = JobChange(
            job=job,
            expect={"status": JobStatus.pending, "version": job.version},
            set=changes,
            append_claims=(claim,),
            transition=Transition(
                events=[JobEventType.claimed],
                at=iso(now),
                by=site.id,
                details={"operation_id": op_id, "attempt": attempt},
            ),
            new_operation=operation,
        )
        if not self.jobs.apply(change) and not self._went_through(job.id, op_id):
            return None
        _count("Claims")
        logger.info(
            "job claimed",
            extra={
                "job_id": job.id,
                "operation_id": op_id,
                "site_id": site.id,
                "attempt": attempt,
                "lease_expires_at": lease_end,
            },
        )
        return operation

    def _went_through(self, job_id: str, op_id: str) -> bool:
        """After a failed claim: was it ours after all? (A first try went through and its answer
        was lost, and the retry was not recognised as the same request.) Otherwise the job stays
        claimed by an operation nobody knows until its lease ends."""
        return self.jobs.get(job_id).operation_id == op_id

    # ------------------------------------------------------------------ leases

    def expire_lease(self, job: Job, now: datetime) -> Job | None:
        """Expire the ended lease of `job` (as read: claimed, lease end before `now`).

        The attempt it used counts as failed, with reason `lease_expired`: the job is `pending`
        again, or `failed` once it has used `max_attempts` (`cancelled`, when a cancel was asked);
        the holder's operation is closed with that error, so nothing the holder sends changes the
        job any more. One transaction, conditional on the job still holding that operation with that
        lease end and version (a heartbeat or a cancel in between wins). Returns the job as it now
        is, or None when it was no longer as read. The claim paths and the lease reaper both call
        this, so one rule governs expiries.
        """
        lease_end = job.lease_expires_at
        if job.status != JobStatus.claimed or not lease_end or not lease_end < iso(now):
            return None
        op_id, holder = job.operation_id, job.site_id or ""
        max_attempts = self._max_attempts_of(job)
        if job.cancel_requested:
            status, events = JobStatus.cancelled, [JobEventType.lease_expired, JobEventType.cancelled]
        elif job.attempts >= max_attempts:
            status, events = JobStatus.failed, [JobEventType.lease_expired, JobEventType.failed]
        else:
            status, events = JobStatus.pending, [JobEventType.lease_expired]
        error = {
            "code": LEASE_EXPIRED,
            "message": f"the lease ended at {lease_end} without a heartbeat from site '{holder}'; "
            f"attempt {job.attempts} of {max_attempts} counts as failed"
            + ("; no attempts remain, the job failed" if status == JobStatus.failed else ""),
        }
        updates: dict[str | tuple[str, ...], Any] = {
            "status": status,
            "updated_at": iso(now),
            "last_error": error,
            **ended_claim(job, op_id, finished=False),
        }
        if status in FINISHED:
            updates["finished_at"] = iso(now)
        if status == JobStatus.failed:
            updates["result"] = error
        change = JobChange(
            job=job,
            expect={
                "status": JobStatus.claimed,
                "operation_id": op_id,
                "lease_expires_at": lease_end,
                "version": job.version,
            },
            set=updates,
            remove=("lease_expires_at",),
            transition=Transition(
                events=events,
                at=iso(now),
                by="service",
                details={"operation_id": op_id, "site_id": holder, "attempt": job.attempts},
            ),
            operation=OperationUpdate(
                op_id=op_id or "",
                site_id=holder,
                set={"done": True, "result": error, "updated_at": iso(now)},
            ),
        )
        if not op_id or not self.jobs.apply(change):
            return None
        _count("LeasesExpired")
        if status == JobStatus.failed:
            _count("JobsFailed")
        logger.info(
            "lease expired",
            extra={
                "job_id": job.id,
                "operation_id": op_id,
                "site_id": holder,
                "attempt": job.attempts,
                "max_attempts": max_attempts,
                "job_status": status.value,
            },
        )
        return job.model_copy(
            update={
                **fields_of(updates),
                "lease_expires_at": None,
                "claims": _ended_claims(job, op_id, finished=False),
                "version": job.version + 1,
            }
        )

    def _max_attempts_of(self, job: Job) -> int:
        """The limit as of the job's last claim (kept on the job; on its operation for jobs claimed
        before the job kept it), else the workflow's, else the default."""
        if job.max_attempts:
            return job.max_attempts
        op = self.operations.get(job.operation_id) if job.operation_id else None
        if op is not None and op.max_attempts:
            return op.max_attempts
        limits = self.workflow_limits(job.workflow_id)
        return limits.max_attempts if limits else job_settings().default_max_attempts

    def expire_ended_leases(self, max_jobs: int = REAP_MAX_PER_RUN) -> ReapReport:
        """The lease reaper: expire claimed jobs whose lease ended, oldest first, at most `max_jobs`
        per run (by_status=claimed, queue_at < now: work bounded by the leases that ended)."""
        report = ReapReport()
        token: str | None = None
        while report.seen < max_jobs:
            now = self.clock()
            page, token = self.jobs.queue_page(
                None, "ended", iso(now), min(REAP_PAGE, max_jobs - report.seen), token
            )
            for job in page:
                report.seen += 1
                after = self.expire_lease(job, now)
                if after is None:
                    report.skipped += 1  # renewed, finished or expired by a claim since the index saw it
                elif after.status == JobStatus.pending:
                    report.pending += 1
                else:
                    report.failed += 1
            if not token or not page:
                break
        report.more = bool(token) and report.seen >= max_jobs
        return report

    # ------------------------------------------------------------------ operations

    def own_operation(self, op_id: str, site: SiteRef) -> OperationRecord:
        op = self.operations.get(op_id)
        if op is None:
            raise NotFoundError(f"operation '{op_id}' does not exist")
        if op.site_id != site.id:
            raise ForbiddenError(f"operation '{op_id}' belongs to another site")
        return op

    def update_operation(self, op_id: str, site: SiteRef, report: Report) -> OperationRecord:
        """PATCH /operations/{id}: a heartbeat, and with `done: true` the end of the job's attempt."""
        op = self.own_operation(op_id, site)
        metadata = self._metadata_changes(op, report)
        if report.done is not True and report.result_sent and report.result is not None:
            raise ValidationFailed(
                'a result ends the operation: send it with "done": true', loc=["body", "result"]
            )
        if op.done:
            if _repeats_report(op, report):
                # Sent again after it went through (its answer was lost): the same answer, nothing redone.
                logger.info("report repeated; it was applied already", extra={"operation_id": op_id})
                return op
            raise ConflictError(_finished_message(op))
        now = self.clock()
        job = _job_of(op)
        op_updates: dict[str | tuple[str, ...], Any] = {("metadata", k): v for k, v in metadata.items()}
        op_updates["updated_at"] = iso(now)
        if not report.done:
            lease_end = iso(now + timedelta(seconds=op.lease_seconds or job_settings().default_lease_seconds))
            op_updates.update({("metadata", "lease_expires_at"): lease_end, "expire_time": lease_end})
            change = JobChange(
                job=job,
                expect={"status": JobStatus.claimed, "operation_id": op_id},
                set={"lease_expires_at": lease_end, "updated_at": iso(now)},
                operation=OperationUpdate(op_id=op_id, site_id=site.id, set=op_updates, live_holder=True),
                site_data=True,
            )
            if not self.jobs.apply(change):
                raise ConflictError(self._fenced_message(op_id))
            logger.debug(
                "operation heartbeat",
                extra={
                    "job_id": job.id,
                    "operation_id": op_id,
                    "site_id": site.id,
                    "lease_expires_at": lease_end,
                },
            )
            return self.own_operation(op_id, site)
        error = report.result if is_error_result(report.result) else None
        cancel_requested = bool(op.metadata.get("cancel_requested"))
        if error is None:
            status, event = JobStatus.done, JobEventType.done
        elif cancel_requested:
            status, event = JobStatus.cancelled, JobEventType.cancelled
        elif op.attempt < op.max_attempts:
            status, event = JobStatus.pending, JobEventType.attempt_failed
        else:
            status, event = JobStatus.failed, JobEventType.failed
        updates: dict[str | tuple[str, ...], Any] = {
            "status": status,
            "updated_at": iso(now),
            **claim_ended_at(op.claim_index, finished=status == JobStatus.done),
        }
        if status in FINISHED:
            updates["finished_at"] = iso(now)
        if status in (JobStatus.done, JobStatus.failed):
            updates["result"] = report.result
        if error is not None:
            updates["last_error"] = error
        outputs: tuple[NewOutput, ...] = ()
        raw_outputs = outputs_in(report.result) if status == JobStatus.done else None
        if raw_outputs is not None:
            outputs, made = self._plan_outputs(job, op, site, raw_outputs, iso(now), report.host)
            updates["outputs"] = [m.model_dump(mode="json") for m in made]
        op_updates.update({"done": True, "result": report.result})
        change = JobChange(
            job=job,
            # As decided: a cancel asked since the operation was read changes what an error means.
            expect={"status": JobStatus.claimed, "operation_id": op_id, "cancel_requested": cancel_requested},
            set=updates,
            remove=("lease_expires_at",),
            transition=Transition(
                events=[event],
                at=iso(now),
                by=site.id,
                details={"operation_id": op_id, "attempt": op.attempt},
            ),
            operation=OperationUpdate(op_id=op_id, site_id=site.id, set=op_updates, live_holder=True),
            outputs=outputs,
            site_data=True,
        )
        check_transaction_size(change.item_count, outputs)
        if not self.jobs.apply(change):
            if self._cancel_asked_since(op_id, cancel_requested):
                return self.update_operation(op_id, site, report)  # decide again, on the cancel
            now_op = self.operations.get(op_id)
            if now_op is not None and now_op.done and _repeats_report(now_op, report):
                return now_op  # the same report, sent twice at once: the other one went through
            raise ConflictError(self._fenced_message(op_id))
        log = {"job_id": job.id, "operation_id": op_id, "site_id": site.id}
        if status == JobStatus.done:
            _count("JobsDone")
            if outputs:
                metrics.add_metric(name="OutputsRegistered", unit=MetricUnit.Count, value=len(outputs))
            logger.info("job done", extra={**log, "outputs": len(outputs)})
        elif status == JobStatus.pending:
            _count("JobsRetried")
            logger.info("job failed this attempt and is pending again", extra={**log, "error": error})
        elif status == JobStatus.cancelled:
            _count("JobsCancelled")
            logger.info("job cancelled: its holder stopped", extra={**log, "error": error})
        else:
            _count("JobsFailed")
            logger.info("job failed for good", extra={**log, "error": error})
        return self.own_operation(op_id, site)

    def _plan_outputs(
        self,
        job: Job,
        op: OperationRecord,
        site: SiteRef,
        raw: list[dict[str, Any]],
        now: str,
        host: str | None,
    ) -> tuple[tuple[NewOutput, ...], list[InputRef]]:
        """The outputs a successful report registers, checked against the workflow's declaration."""
        try:
            workflow = self.workflows.workflow(job.workflow_id)
        except NotFoundError:
            raise ValidationFailed(
                f"workflow '{job.workflow_id}' is no longer in the registry, so its outputs cannot be "
                "checked against its declaration: report done without outputs, or register them with "
                "POST /objects",
                loc=["body", "result", "outputs"],
            ) from None
        return plan_outputs(
            job,
            workflow,
            parse_outputs(raw),
            site_id=site.id,
            operation_id=op.id,
            now=now,
            host=host or "localhost",
            triggered_types=None
            if self.triggers is None
            else {t.object_type_id for t in self.triggers.all_triggers()},
        )

    def release(self, job_id: str, site: SiteRef) -> OperationRecord:
        """POST /jobs/{id}:release: the holder gives the job back; its operation ends cancelled."""
        job = self.jobs.get(job_id)
        if job.status != JobStatus.claimed:
            raise ConflictError(f"job '{job_id}' is {job.status}, not claimed; there is nothing to release")
        if job.site_id != site.id:
            raise ForbiddenError(f"job '{job_id}' is claimed by another site; only the holder may release it")
        op_id = job.operation_id or ""
        for _ in range(CLAIM_ROUNDS):
            if self.jobs.apply(release_change(job, self.clock(), by=site.id)):
                break
            job = self.jobs.get(job_id)
            if job.status != JobStatus.claimed or job.operation_id != op_id:
                raise ConflictError(self._fenced_message(op_id))
            # Still held by this operation: a cancel was asked meanwhile; release the job as it now is.
        else:
            raise ConflictError(f"job '{job_id}' kept changing while releasing it; retry")
        logger.info("job released", extra={"job_id": job_id, "operation_id": op_id, "site_id": site.id})
        return self.own_operation(op_id, site)

    def _metadata_changes(self, op: OperationRecord, report: Report) -> dict[str, Any]:
        """What a PATCH adds to the operation's metadata (shallow merge), after the rules. The
        metadata the site just read may come back whole (NMDC's watcher sends it with `extra`
        added): service-owned keys unchanged are accepted and left out, and so not counted
        against the size of what the PATCH adds."""
        changes = dict(report.metadata or {})
        changed = sorted(k for k in IMMUTABLE_METADATA if k in changes and changes[k] != op.metadata.get(k))
        if changed:
            raise ValidationFailed(
                f"metadata keys {', '.join(changed)} are set by the service and cannot change",
                loc=["body", "metadata"],
            )
        for key in (*IMMUTABLE_METADATA, *SERVICE_METADATA):
            changes.pop(key, None)
        body = {"done": report.done, "result": report.result, "metadata": changes}
        try:
            size = len(json.dumps(body, default=str, allow_nan=False))
        except ValueError as exc:
            raise ValidationFailed("NaN and Infinity are not JSON; send numbers, strings or null") from exc
        if size > MAX_PATCH_BYTES:
            raise PayloadTooLargeError(
                f"the PATCH adds {size} bytes; keep result and metadata under {MAX_PATCH_BYTES} bytes "
                "and store large outputs as objects (POST /objects), referring to them by id"
            )
        bad = sorted(k for k in changes if not k or len(k) > 255)
        if bad:
            raise ValidationFailed("metadata keys must be 1 to 255 characters long", loc=["body", "metadata"])
        if len(changes) > MAX_METADATA_KEYS:
            raise ValidationFailed(
                f"a PATCH may set at most {MAX_METADATA_KEYS} metadata keys", loc=["body", "metadata"]
            )
        return changes

    def _cancel_asked_since(self, op_id: str, cancel_requested: bool) -> bool:
        """After a lost report: is the operation still live, with a cancel asked since it was read?"""
        op = self.operations.get(op_id)
        return (
            op is not None and not op.done and bool(op.metadata.get("cancel_requested")) != cancel_requested
        )

    def _fenced_message(self, op_id: str) -> str:
        op = self.operations.get(op_id)
        if op is not None and op.done:
            return _finished_message(op)
        return f"operation '{op_id}' no longer holds its job (its lease ended and the job moved on)"


def release_change(job: Job, now: datetime, by: str) -> JobChange:
    """The claimed `job` handed back by its holder (or an operator): `pending` again with the
    attempt given back (`cancelled`, when a cancel was asked), the operation done and cancelled."""
    op_id = job.operation_id or ""
    status = JobStatus.cancelled if job.cancel_requested else JobStatus.pending
    events = [JobEventType.released] + ([JobEventType.cancelled] if status == JobStatus.cancelled else [])
    updates: dict[str | tuple[str, ...], Any] = {
        "status": status,
        "updated_at": iso(now),
        **ended_claim(job, op_id, finished=False),
    }
    if status == JobStatus.cancelled:
        updates["finished_at"] = iso(now)
    return JobChange(
        job=job,
        # The version as read: a cancel asked since then makes the release a cancel.
        expect={"status": JobStatus.claimed, "operation_id": op_id, "version": job.version},
        set=updates,
        remove=("lease_expires_at",),
        increment={"attempts": -1},  # handing work back is not failing it
        transition=Transition(events=events, at=iso(now), by=by, details={"operation_id": op_id}),
        operation=OperationUpdate(
            op_id=op_id,
            site_id=job.site_id or "",
            set={"done": True, "result": None, ("metadata", "cancelled"): True, "updated_at": iso(now)},
        ),
    )


def fields_of(updates: dict[str | tuple[str, ...], Any]) -> dict[str, Any]:
    """The top-level fields of a change's updates (paths into lists left out)."""
    return {k: v for k, v in updates.items() if isinstance(k, str)}


def _job_of(op: OperationRecord) -> Job:
    """The job an operation is about, enough to address it (its snapshot taken at the claim)."""
    return Job.model_validate(op.metadata["job"])


def _ended_claims(job: Job, op_id: str | None, *, finished: bool) -> list[Claim]:
    return [
        c.model_copy(update={"done": True, "cancelled": c.cancelled or not finished})
        if c.op_id == op_id
        else c
        for c in job.claims
    ]


def _not_claimable_message(job: Job) -> str:
    message = f"job '{job.id}' is {job.status}; it cannot be claimed"
    error = job.last_error
    if job.status == JobStatus.failed and isinstance(error, dict) and error.get("code"):
        message += f" (its last attempt ended with {error['code']}: {error.get('message')})"
    if job.status in FINISHED:
        message += "; an operator may rerun it (jobtriggers jobs rerun)"
    return message


def _repeats_report(op: OperationRecord, report: Report) -> bool:
    """Is `report` the one that finished `op`, sent again? A finishing report whose result is the
    one the operation keeps, on an operation its holder finished (not released, not expired)."""
    expired = isinstance(op.result, dict) and op.result.get("code") == LEASE_EXPIRED
    return (
        report.done is True
        and op.done
        and not expired
        and not op.metadata.get("cancelled")
        and op.result == report.result
    )


def _finished_message(op: OperationRecord) -> str:
    result = op.result
    if isinstance(result, dict) and result.get("code") == LEASE_EXPIRED:
        return f"operation '{op.id}' is finished: {result.get('message')}; nothing it sends changes the job"
    if op.metadata.get("cancelled"):
        return f"operation '{op.id}' is finished: the job was released"
    return f"operation '{op.id}' is finished (done); it cannot be changed"
