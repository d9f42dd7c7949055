"""Claiming jobs with leases, and the operations that report on them.

The rules, in one place (the data-access layer only executes conditional writes):
- A job can be claimed when it is `pending`, or `claimed` with a lease that ended before now. An
  ended lease is first expired (below), then the job is claimed as any pending one. Each claim
  and each expiry is one transaction.
- The site that holds a live lease and claims again gets the same operation (a retried request is
  safe); another site gets 409 naming the holder and the lease end; `done`/`failed` jobs are 409.
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
- A lease that ended is expired by `expire_lease`, one rule for both paths that find it: a claim
  that comes across it, and the lease reaper that runs every minute (functions/lease_reaper).
Ports are protocols so unit tests run these rules against in-memory fakes, with a fake clock.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from aws_lambda_powertools.metrics import MetricUnit
from pydantic import BaseModel, ConfigDict, Field

from jobtriggers.dal.claims import ClaimWrite, ExpiryWrite, OperationWrite
from jobtriggers.dal.jobs import job_from_item
from jobtriggers.dal.operations import new_operation_item, operation_from_item
from jobtriggers.errors import (
    ConflictError,
    ForbiddenError,
    NotFoundError,
    PayloadTooLargeError,
    ValidationFailed,
)
from jobtriggers.models import JobStatus, Operation, Workflow, iso, utcnow
from jobtriggers.observability import logger, metrics
from jobtriggers.settings import job_settings

# Metadata keys the service owns: a PATCH may repeat them unchanged, never change them.
IMMUTABLE_METADATA = ("job", "site_id", "attempt")
# Metadata keys the service rewrites itself; a PATCH that sends them back is not an error.
SERVICE_METADATA = ("lease_expires_at", "cancelled")
MAX_PATCH_BYTES = 64 * 1024
MAX_METADATA_KEYS = 32
LEASE_EXPIRED = "lease_expired"

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

Queue = Literal["pending", "ended"]


# --------------------------------------------------------------------------- ports


class ClaimStore(Protocol):
    def get_job(self, job_id: str) -> dict[str, Any]: ...

    def get_operation(self, op_id: str) -> dict[str, Any] | None: ...

    def queue_page(
        self,
        workflow_id: str | None,
        queue: Queue,
        now: str,
        limit: int,
        page_token: str | None = None,
        brief: bool = False,
    ) -> tuple[list[dict[str, Any]], str | None]: ...

    def ended_leases(
        self, now: str, limit: int, page_token: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]: ...

    def start_claim(self, claim: ClaimWrite) -> bool: ...

    def expire(self, expiry: ExpiryWrite) -> bool: ...

    def apply(self, write: OperationWrite) -> bool: ...


class WorkflowLookup(Protocol):
    def get(self, kind: str, entry_id: str) -> Any: ...

    def list_all(self, kind: str) -> list[Any]: ...


@dataclass(frozen=True)
class SiteRef:
    """The calling site, as the authorizer and the sites table know it."""

    id: str
    capability_ids: frozenset[str] = frozenset()

    @classmethod
    def of(cls, site_id: str, capability_ids: Iterable[str] = ()) -> SiteRef:
        return cls(site_id, frozenset(capability_ids))


class OperationPatch(BaseModel):
    """The body of PATCH /operations/{id} (the NMDC Runtime's UpdateOperationRequest)."""

    model_config = ConfigDict(extra="forbid")

    done: bool | None = None
    result: Any = None
    metadata: dict[str, Any] | None = Field(default=None)


@dataclass
class ClaimOutcome:
    operation: Operation
    created: bool  # False: the site already held this job, and gets its operation again


@dataclass
class _Limits:
    lease_seconds: int
    max_attempts: int
    capability_ids: list[str] = field(default_factory=list)


@dataclass
class ReapReport:
    """What one run of the lease reaper did."""

    seen: int = 0
    pending: int = 0  # expired, and pending again for another attempt
    failed: int = 0  # expired on their last attempt
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


def _limits_of(wf: Workflow) -> _Limits:
    defaults = job_settings()
    return _Limits(
        lease_seconds=wf.lease_seconds or defaults.default_lease_seconds,
        max_attempts=wf.max_attempts or defaults.default_max_attempts,
        capability_ids=list(wf.capability_ids),
    )


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


class ClaimService:
    def __init__(
        self,
        store: ClaimStore,
        workflows: WorkflowLookup,
        clock: Callable[[], datetime] = utcnow,
        rng: random.Random | None = None,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self.store = store
        self.workflows = workflows
        self.clock = clock
        self.rng = rng or random.Random()
        self.new_id = new_id
        self._limits: dict[str, _Limits | None] = {}

    # ------------------------------------------------------------------ registry

    def _workflow_limits(self, workflow_id: str) -> _Limits | None:
        """Lease, attempts and capabilities of a workflow (None when the registry no longer has it)."""
        if workflow_id not in self._limits:
            try:
                wf: Workflow = self.workflows.get("workflow", workflow_id)
            except NotFoundError:
                self._limits[workflow_id] = None
            else:
                self._limits[workflow_id] = _limits_of(wf)
        return self._limits[workflow_id]

    def runnable_workflows(self, site: SiteRef) -> list[str]:
        """The ids of the registry's workflows this site has every capability for (one Query of
        the registry's small workflow partition), sorted."""
        runnable = []
        for wf in self.workflows.list_all("workflow"):
            limits = self._limits[wf.id] = _limits_of(wf)
            if set(limits.capability_ids) <= site.capability_ids:
                runnable.append(wf.id)
        return sorted(runnable)

    def _require_runnable(self, workflow_id: str, site: SiteRef) -> _Limits:
        limits = self._workflow_limits(workflow_id)
        if limits is None:
            raise ConflictError(
                f"workflow '{workflow_id}' is no longer in the registry; its jobs cannot be claimed"
            )
        missing = sorted(set(limits.capability_ids) - site.capability_ids)
        if missing:
            raise ForbiddenError(
                f"site '{site.id}' lacks the capabilities workflow '{workflow_id}' needs: "
                + ", ".join(missing)
            )
        return limits

    # ------------------------------------------------------------------ claims

    def claim(self, job_id: str, site: SiteRef) -> ClaimOutcome:
        """Claim one job by id (POST /jobs/{id}:claim)."""
        for _ in range(CLAIM_ROUNDS):
            job = self.store.get_job(job_id)
            limits = self._require_runnable(job["workflow_id"], site)
            now = self.clock()
            if job["status"] == JobStatus.claimed:
                if job["lease_expires_at"] >= iso(now):
                    if job.get("site_id") == site.id:
                        op = self.store.get_operation(job["operation_id"])
                        if op is not None:
                            return ClaimOutcome(operation_from_item(op), created=False)
                    _count("ClaimConflicts")
                    raise ConflictError(
                        f"job '{job_id}' is claimed by site '{job.get('site_id')}' until "
                        f"{job['lease_expires_at']} (its lease); try again after that or claim another job"
                    )
                expired = self.expire_lease(job, now)
                if expired is None:  # someone else expired or renewed it first: read again
                    _count("ClaimConflicts")
                    continue
                job = expired
            if job["status"] != JobStatus.pending:
                raise ConflictError(_not_claimable_message(job))
            operation = self._try_claim(job, site, limits, now)
            if operation is not None:
                return ClaimOutcome(operation, created=True)
            _count("ClaimConflicts")  # the job changed between our read and our write: read again
        raise ConflictError(f"job '{job_id}' kept changing hands while claiming it; retry")

    def claim_next(self, site: SiteRef, workflow_id: str | None = None) -> Operation | None:
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
            if self._workflow_limits(workflow_id) is None:
                raise ValidationFailed(
                    f"workflow '{workflow_id}' does not exist", loc=["body", "workflow_id"]
                )
            self._require_runnable(workflow_id, site)
            workflows = [workflow_id]
        else:
            workflows = self.runnable_workflows(site)
        if not workflows:
            return None
        start = self.rng.randrange(len(workflows))
        for wf in workflows[start:] + workflows[:start]:
            limits = self._workflow_limits(wf)
            if limits is None:
                continue
            for queue in ("pending", "ended"):
                operation = self._claim_from_queue(site, wf, queue, limits)
                if operation is not None:
                    return operation
        return None

    def _claim_from_queue(
        self, site: SiteRef, workflow_id: str, queue: Queue, limits: _Limits
    ) -> Operation | None:
        token: str | None = None
        for _ in range(CANDIDATE_PAGES):
            page, token = self.store.queue_page(
                workflow_id, queue, iso(self.clock()), CANDIDATE_PAGE, token, brief=True
            )
            self.rng.shuffle(page)
            for candidate in page[:TRIES_PER_PAGE]:
                # The index lags the table: decide on a consistent read, and skip jobs taken meanwhile.
                job = self.store.get_job(candidate["id"])
                now = self.clock()
                if job["status"] == JobStatus.claimed and job.get("lease_expires_at", "") < iso(now):
                    expired = self.expire_lease(job, now)
                    if expired is None:
                        _count("ClaimConflicts")
                        continue
                    job = expired
                if job["status"] != JobStatus.pending:
                    continue
                operation = self._try_claim(job, site, limits, now)
                if operation is not None:
                    return operation
                _count("ClaimConflicts")
            if not token:
                break
        return None

    def _try_claim(
        self, job: dict[str, Any], site: SiteRef, limits: _Limits, now: datetime
    ) -> Operation | None:
        """One conditional claim of the pending `job` as read; None when it is no longer as read."""
        attempts = int(job.get("attempts", 0))
        lease_end = iso(now + timedelta(seconds=limits.lease_seconds))
        op_id = self.new_id()
        claimed = {
            **job,
            "status": JobStatus.claimed.value,
            "site_id": site.id,
            "operation_id": op_id,
            "lease_expires_at": lease_end,
            "attempts": attempts + 1,
            "max_attempts": limits.max_attempts,
            "claims": [*job.get("claims", []), {"op_id": op_id, "site_id": site.id}],
            "updated_at": iso(now),
        }
        op_item = new_operation_item(
            op_id=op_id,
            job_key=job["job_key"],
            site_id=site.id,
            created_at=iso(now),
            lease_expires_at=lease_end,
            lease_seconds=limits.lease_seconds,
            max_attempts=limits.max_attempts,
            metadata={
                "job": job_from_item(claimed).model_dump(mode="json"),
                "site_id": site.id,
                "attempt": attempts + 1,
                "lease_expires_at": lease_end,
            },
        )
        write = ClaimWrite(
            job_key=job["job_key"],
            workflow_id=job["workflow_id"],
            site_id=site.id,
            now=iso(now),
            lease_expires_at=lease_end,
            expect_attempts=attempts,
            max_attempts=limits.max_attempts,
            operation=op_item,
        )
        if not self.store.start_claim(write) and not self._went_through(job["id"], op_id):
            return None
        _count("Claims")
        logger.info(
            "job claimed",
            extra={
                "job_id": job["id"],
                "operation_id": op_id,
                "site_id": site.id,
                "attempt": attempts + 1,
                "lease_expires_at": lease_end,
            },
        )
        return operation_from_item(op_item)

    def _went_through(self, job_id: str, op_id: str) -> bool:
        """After a failed claim: was it ours after all? (A first try went through and its answer
        was lost, and the retry was not recognised as the same request.) Otherwise the job stays
        claimed by an operation nobody knows until its lease ends."""
        return self.store.get_job(job_id).get("operation_id") == op_id

    # ------------------------------------------------------------------ leases

    def expire_lease(self, job: dict[str, Any], now: datetime) -> dict[str, Any] | None:
        """Expire the ended lease of `job` (as read: claimed, lease end before `now`).

        The attempt it used counts as failed, with reason `lease_expired`: the job is `pending`
        again, or `failed` once it has used `max_attempts`; the holder's operation is closed with
        that error, so nothing the holder sends changes the job any more. One transaction,
        conditional on the job still holding that operation with that lease end (a heartbeat in
        between wins). Returns the job as it now is, or None when it was no longer as read.
        The claim paths and the lease reaper both call this, so one rule governs expiries.
        """
        if job["status"] != JobStatus.claimed or not job.get("lease_expires_at", "") < iso(now):
            return None
        op_id, holder, lease_end = job["operation_id"], job.get("site_id", ""), job["lease_expires_at"]
        attempts = int(job.get("attempts", 0))
        max_attempts = self._max_attempts_of(job)
        status = JobStatus.failed if attempts >= max_attempts else JobStatus.pending
        error = {
            "code": LEASE_EXPIRED,
            "message": f"the lease ended at {lease_end} without a heartbeat from site '{holder}'; "
            f"attempt {attempts} of {max_attempts} counts as failed"
            + ("; no attempts remain, the job failed" if status == JobStatus.failed else ""),
        }
        expiry = ExpiryWrite(
            job_key=job["job_key"],
            workflow_id=job["workflow_id"],
            op_id=op_id,
            site_id=holder,
            now=iso(now),
            lease_expires_at=lease_end,
            job_status=status,
            error=error,
        )
        if not self.store.expire(expiry):
            return None
        _count("LeasesExpired")
        if status == JobStatus.failed:
            _count("JobsFailed")
        logger.info(
            "lease expired",
            extra={
                "job_id": job["id"],
                "operation_id": op_id,
                "site_id": holder,
                "attempt": attempts,
                "max_attempts": max_attempts,
                "job_status": status.value,
            },
        )
        after = {
            **job,
            "status": status.value,
            "workflow_status": f"{job['workflow_id']}#{status.value}",
            "queue_at": iso(now),
            "updated_at": iso(now),
            "last_error": error,
        }
        after.pop("lease_expires_at", None)
        if status == JobStatus.failed:
            after.update(result=error, finished_at=iso(now))
        return after

    def _max_attempts_of(self, job: dict[str, Any]) -> int:
        """The limit as of the job's last claim (kept on the job; on its operation for jobs claimed
        before the job kept it), else the workflow's, else the default."""
        if job.get("max_attempts"):
            return int(job["max_attempts"])
        op = self.store.get_operation(job["operation_id"]) if job.get("operation_id") else None
        if op is not None and op.get("max_attempts"):
            return int(op["max_attempts"])
        limits = self._workflow_limits(job["workflow_id"])
        return limits.max_attempts if limits else job_settings().default_max_attempts

    def expire_ended_leases(self, max_jobs: int = REAP_MAX_PER_RUN) -> ReapReport:
        """The lease reaper: expire claimed jobs whose lease ended, oldest first, at most `max_jobs`
        per run (by_status=claimed, queue_at < now: work bounded by the leases that ended)."""
        report = ReapReport()
        token: str | None = None
        while report.seen < max_jobs:
            now = self.clock()
            page, token = self.store.ended_leases(iso(now), min(REAP_PAGE, max_jobs - report.seen), token)
            for job in page:
                report.seen += 1
                after = self.expire_lease(job, now)
                if after is None:
                    report.skipped += 1  # renewed, finished or expired by a claim since the index saw it
                elif after["status"] == JobStatus.failed:
                    report.failed += 1
                else:
                    report.pending += 1
            if not token or not page:
                break
        report.more = bool(token) and report.seen >= max_jobs
        return report

    # ------------------------------------------------------------------ operations

    def get_operation(self, op_id: str, site: SiteRef) -> Operation:
        return operation_from_item(self._own_operation(op_id, site))

    def _own_operation(self, op_id: str, site: SiteRef) -> dict[str, Any]:
        op = self.store.get_operation(op_id)
        if op is None:
            raise NotFoundError(f"operation '{op_id}' does not exist")
        if op["site_id"] != site.id:
            raise ForbiddenError(f"operation '{op_id}' belongs to another site")
        return op

    def update_operation(self, op_id: str, site: SiteRef, patch: OperationPatch) -> Operation:
        """PATCH /operations/{id}: a heartbeat, and with `done: true` the end of the job's attempt."""
        op = self._own_operation(op_id, site)
        metadata = self._metadata_changes(op, patch)
        if patch.done is not True and "result" in patch.model_fields_set and patch.result is not None:
            raise ValidationFailed(
                'a result ends the operation: send it with "done": true', loc=["body", "result"]
            )
        if op.get("done"):
            raise ConflictError(_finished_message(op))
        now = self.clock()
        job_id = op["metadata"]["job"]["id"]
        workflow_id = op["metadata"]["job"]["workflow"]["id"]
        base = {"job_key": op["job_key"], "op_id": op_id, "site_id": site.id, "workflow_id": workflow_id}
        if patch.done:
            attempt = int(op["metadata"].get("attempt", 1))
            max_attempts = int(op.get("max_attempts") or job_settings().default_max_attempts)
            error = patch.result if is_error_result(patch.result) else None
            if error is not None:
                status = JobStatus.pending if attempt < max_attempts else JobStatus.failed
            else:
                status = JobStatus.done
            write = OperationWrite(
                **base, now=iso(now), metadata=metadata, job_status=status, result=patch.result, error=error
            )
        else:
            lease_end = iso(now + timedelta(seconds=int(op.get("lease_seconds") or 0) or _default_lease()))
            write = OperationWrite(**base, now=iso(now), metadata=metadata, lease_expires_at=lease_end)
        if not self.store.apply(write):
            raise ConflictError(self._fenced_message(op_id))
        log = {"job_id": job_id, "operation_id": op_id, "site_id": site.id}
        if write.job_status is None:
            logger.debug("operation heartbeat", extra={**log, "lease_expires_at": write.lease_expires_at})
        elif write.job_status == JobStatus.done:
            _count("JobsDone")
            logger.info("job done", extra=log)
        elif write.job_status == JobStatus.pending:
            _count("JobsRetried")
            logger.info("job failed this attempt and is pending again", extra={**log, "error": patch.result})
        else:
            _count("JobsFailed")
            logger.info("job failed for good", extra={**log, "error": patch.result})
        return self.get_operation(op_id, site)

    def release(self, job_id: str, site: SiteRef) -> Operation:
        """POST /jobs/{id}:release: the holder gives the job back; its operation ends cancelled."""
        job = self.store.get_job(job_id)
        if job["status"] != JobStatus.claimed:
            raise ConflictError(
                f"job '{job_id}' is {job['status']}, not claimed; there is nothing to release"
            )
        if job.get("site_id") != site.id:
            raise ForbiddenError(f"job '{job_id}' is claimed by another site; only the holder may release it")
        op_id = job["operation_id"]
        write = OperationWrite(
            job_key=job["job_key"],
            op_id=op_id,
            site_id=site.id,
            workflow_id=job["workflow_id"],
            now=iso(self.clock()),
            metadata={"cancelled": True},
            job_status=JobStatus.pending,
            result=None,
            give_back_attempt=True,  # handing work back is not failing it
        )
        if not self.store.apply(write):
            raise ConflictError(self._fenced_message(op_id))
        logger.info("job released", extra={"job_id": job_id, "operation_id": op_id, "site_id": site.id})
        return self.get_operation(op_id, site)

    def _metadata_changes(self, op: dict[str, Any], patch: OperationPatch) -> dict[str, Any]:
        """What a PATCH adds to the operation's metadata (shallow merge), after the rules."""
        try:
            size = len(json.dumps(patch.model_dump(), default=str, allow_nan=False))
        except ValueError as exc:
            raise ValidationFailed("NaN and Infinity are not JSON; send numbers, strings or null") from exc
        if size > MAX_PATCH_BYTES:
            raise PayloadTooLargeError(
                f"the PATCH body is {size} bytes; keep result and metadata under {MAX_PATCH_BYTES} bytes "
                "and store large outputs as objects (POST /objects), referring to them by id"
            )
        changes = dict(patch.metadata or {})
        current = op.get("metadata") or {}
        changed = sorted(k for k in IMMUTABLE_METADATA if k in changes and changes[k] != current.get(k))
        if changed:
            raise ValidationFailed(
                f"metadata keys {', '.join(changed)} are set by the service and cannot change",
                loc=["body", "metadata"],
            )
        for key in (*IMMUTABLE_METADATA, *SERVICE_METADATA):
            changes.pop(key, None)
        bad = sorted(k for k in changes if not k or len(k) > 255)
        if bad:
            raise ValidationFailed("metadata keys must be 1 to 255 characters long", loc=["body", "metadata"])
        if len(changes) > MAX_METADATA_KEYS:
            raise ValidationFailed(
                f"a PATCH may set at most {MAX_METADATA_KEYS} metadata keys", loc=["body", "metadata"]
            )
        return changes

    def _fenced_message(self, op_id: str) -> str:
        op = self.store.get_operation(op_id)
        if op is not None and op.get("done"):
            return _finished_message(op)
        return f"operation '{op_id}' no longer holds its job (its lease ended and the job moved on)"


def _not_claimable_message(job: dict[str, Any]) -> str:
    message = f"job '{job['id']}' is {job['status']}; it cannot be claimed"
    error = job.get("last_error")
    if job["status"] == JobStatus.failed and isinstance(error, dict) and error.get("code"):
        message += f" (its last attempt ended with {error['code']}: {error.get('message')})"
    return message


def _default_lease() -> int:
    return job_settings().default_lease_seconds


def _finished_message(op: dict[str, Any]) -> str:
    result = op.get("result")
    if isinstance(result, dict) and result.get("code") == LEASE_EXPIRED:
        return (
            f"operation '{op['id']}' is finished: {result.get('message')}; nothing it sends changes the job"
        )
    if (op.get("metadata") or {}).get("cancelled"):
        return f"operation '{op['id']}' is finished: the job was released"
    return f"operation '{op['id']}' is finished (done); it cannot be changed"
