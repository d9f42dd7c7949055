"""Claims, heartbeats, completions and lease expiries: each one transaction over a job and its operation.

Every write here is conditional on the state the caller read, so two claimers, a retried request
or a fenced-off former holder can never both succeed:
- a claim updates the job only if it is still `pending` and its `attempts` are still what was
  read, and puts a new operation that must not exist;
- an expiry updates the job only while it is `claimed` by that operation with the lease end that
  was read (so a heartbeat in between wins), and closes that operation;
- a heartbeat or a finish updates the job only while it is `claimed` by that operation, and the
  operation only while it is not `done` and belongs to that site.
A lost race is `False`, never an exception: the caller re-reads and decides what to tell the site.
Nothing relies on TTL (which deletes up to two days late): lease ends are compared with the clock.

Every transaction carries a ClientRequestToken derived from its items, so a retry of the same
write (botocore's, after a lost answer) is answered with success by DynamoDB instead of failing
its own condition. A transaction cancelled only by a TransactionConflict (another transaction on
the same item at that moment, not a changed item) is sent again a few times here, then reported
as busy (503), never as a lost race (409).
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from botocore.exceptions import BotoCoreError, ClientError

from jobtriggers.dal.jobs import JobRepository
from jobtriggers.dal.operations import OperationRepository, site_done
from jobtriggers.dal.tables import (
    decode_page_token,
    dynamodb,
    encode_page_token,
    error_code,
    fingerprint,
    query_page,
    raise_store_error,
    to_attr,
    to_item,
)
from jobtriggers.errors import BadRequestError, JobTriggersError, RetryableStoreError, ValidationFailed
from jobtriggers.models import JobStatus

# What claim-next needs to pick candidates (it reads each job it tries in full, consistently).
CANDIDATE_FIELDS = ("job_key", "id", "workflow_id", "status", "queue_at")
# A transaction cancelled by TransactionConflict alone is sent again this many times (with a short
# jittered pause), then reported as busy.
CONFLICT_RETRIES = 3
CONFLICT_PAUSE_SECONDS = 0.05
# Cancellation reasons that mean the store was busy, not that an item changed.
_BUSY_REASONS = frozenset({"ThrottlingError", "ProvisionedThroughputExceeded", "RequestLimitExceeded"})

Queue = Literal["pending", "ended"]


@dataclass(frozen=True)
class ClaimWrite:
    """One claim of a pending job: the job as it was read (the guard), the lease and the operation."""

    job_key: str
    workflow_id: str
    site_id: str
    now: str
    lease_expires_at: str
    expect_attempts: int
    max_attempts: int  # kept on the job, so an expiry needs nothing but the job to apply the rule
    operation: dict[str, Any]  # the new operation's item (dal.operations.new_operation_item)


@dataclass(frozen=True)
class ExpiryWrite:
    """A lease that ended: the job leaves `claimed` (to `pending`, or `failed` when it used its last
    attempt) and its operation is closed with `error`, if the job still holds `op_id` with the
    lease end that was read."""

    job_key: str
    workflow_id: str
    op_id: str
    site_id: str  # the holder whose lease ended
    now: str
    lease_expires_at: str  # as read: a heartbeat since then moved it, and the expiry fails
    job_status: JobStatus  # pending or failed
    error: dict[str, Any]  # {code: lease_expired, message}


@dataclass(frozen=True)
class OperationWrite:
    """A PATCH or release applied to a live operation and its job.

    `job_status` None is a heartbeat (the lease moves to `lease_expires_at`); otherwise the
    operation becomes done and the job `done`, `pending` (retried, released) or `failed`.
    """

    job_key: str
    op_id: str
    site_id: str
    workflow_id: str
    now: str
    metadata: dict[str, Any] = field(default_factory=dict)  # shallow-merged into the operation's
    lease_expires_at: str | None = None
    job_status: JobStatus | None = None
    result: Any = None  # the operation's result (and the job's, when done or failed)
    error: dict[str, Any] | None = None  # an error result: becomes the job's last_error
    give_back_attempt: bool = False  # a release: the attempt it used is not counted


class _Expression:
    """Placeholders for every name and value, so reserved words (status, result) need no care."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.values: dict[str, Any] = {}

    def name(self, *path: str) -> str:
        parts = []
        for attr in path:
            placeholder = next((k for k, v in self.names.items() if v == attr), None)
            if placeholder is None:
                placeholder = f"#n{len(self.names)}"
                self.names[placeholder] = attr
            parts.append(placeholder)
        return ".".join(parts)

    def value(self, value: Any) -> str:
        placeholder = f":v{len(self.values)}"
        self.values[placeholder] = to_attr(value)
        return placeholder

    def assign(self, updates: dict[tuple[str, ...] | str, Any]) -> str:
        return ", ".join(
            f"{self.name(*((k,) if isinstance(k, str) else k))} = {self.value(v)}" for k, v in updates.items()
        )

    def request(self, **kwargs: Any) -> dict[str, Any]:
        out = dict(kwargs)
        if self.names:
            out["ExpressionAttributeNames"] = self.names
        if self.values:
            out["ExpressionAttributeValues"] = self.values
        return out


class JobClaims:
    """The conditional writes behind claims and operations, and the queries that find claimable jobs."""

    def __init__(
        self,
        jobs_table: str | None = None,
        operations_table: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.jobs = JobRepository(jobs_table)
        self.operations = OperationRepository(operations_table)
        self._sleep = sleep

    # ------------------------------------------------------------------ reads

    def get_job(self, job_id: str) -> dict[str, Any]:
        """The job's item (strongly consistent); NotFoundError for an unknown id."""
        return self.jobs.get_item_by_id(job_id)

    def get_operation(self, op_id: str) -> dict[str, Any] | None:
        return self.operations.get_item(op_id)

    def queue_page(
        self,
        workflow_id: str | None,
        queue: Queue,
        now: str,
        limit: int,
        page_token: str | None = None,
        brief: bool = False,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of one queue, oldest `queue_at` first: `pending` jobs, or `ended` leases
        (claimed jobs whose lease end is before `now`), of one workflow or of all.

        `brief` returns only CANDIDATE_FIELDS: claim-next reads the job it tries afresh anyway
        (indexes are eventually consistent), so the page itself only has to say which jobs.
        `now` is not part of the query's identity: a token taken with one clock reading continues
        with the next (a lease that ended meanwhile may then appear on a later page).
        """
        status = JobStatus.pending if queue == "pending" else JobStatus.claimed
        names: dict[str, str] | None
        if workflow_id is None:
            index, cond, names = "by_status", "#st = :st", {"#st": "status"}
            values: dict[str, Any] = {":st": status.value}
        else:
            index, cond, names = "by_workflow_status", "workflow_status = :st", None
            values = {":st": f"{workflow_id}#{status}"}
        if queue == "ended":
            cond += " AND queue_at < :before"
            values[":before"] = now
        return query_page(
            table=self.jobs.table,
            index=index,
            key_condition=cond,
            values=values,
            names=names,
            limit=limit,
            page_token=page_token,
            projection=CANDIDATE_FIELDS if brief else None,
            moving_values={":before"},
            action=f"list {queue} jobs",
        )

    def candidates(
        self,
        workflow_id: str | None,
        now: str,
        limit: int,
        page_token: str | None = None,
        brief: bool = False,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of claimable jobs (GET /jobs?claimable=true): pending ones first, then claimed
        ones whose lease ended. Leases end rarely compared with jobs pending, so the two queues are
        read one after the other rather than merged; the token says which queue comes next."""
        phase, inner = _split_claimable_token(page_token, workflow_id)
        items: list[dict[str, Any]] = []
        if phase == "pending":
            items, inner = self.queue_page(workflow_id, "pending", now, limit, inner, brief)
            if inner:
                return items, _join_claimable_token("pending", inner, workflow_id)
            phase, inner = "ended", None
            if len(items) >= limit:
                # Do not read the second queue within this page; say where to continue.
                return items, _join_claimable_token("ended", None, workflow_id)
        more, inner = self.queue_page(workflow_id, "ended", now, limit - len(items), inner, brief)
        items += more
        return items, _join_claimable_token("ended", inner, workflow_id) if inner else None

    def ended_leases(
        self, now: str, limit: int, page_token: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Claimed jobs of every workflow whose lease ended before `now`, oldest lease end first
        (whole items: the lease reaper decides on them, each write guarded by what it read)."""
        return self.queue_page(None, "ended", now, limit, page_token)

    # ------------------------------------------------------------------ writes

    def start_claim(self, claim: ClaimWrite) -> bool:
        """Claim the pending job and create its operation in one transaction; False when the job
        moved on."""
        job = _Expression()
        guard = [
            f"{job.name('status')} = {job.value(JobStatus.pending.value)}",
            f"{job.name('attempts')} = {job.value(claim.expect_attempts)}",
        ]
        status = JobStatus.claimed.value
        update = job.assign(
            {
                "status": status,
                "workflow_status": f"{claim.workflow_id}#{status}",
                "site_id": claim.site_id,
                "operation_id": claim.operation["id"],
                "lease_expires_at": claim.lease_expires_at,
                "queue_at": claim.lease_expires_at,
                "updated_at": claim.now,
                "attempts": claim.expect_attempts + 1,
                "max_attempts": claim.max_attempts,
            }
        )
        claims_attr = job.name("claims")
        update += (
            f", {claims_attr} = list_append(if_not_exists({claims_attr}, {job.value([])}),"
            f" {job.value([{'op_id': claim.operation['id'], 'site_id': claim.site_id}])})"
        )
        items: list[dict[str, Any]] = [
            {
                "Update": job.request(
                    TableName=self.jobs.table,
                    Key=to_item({"job_key": claim.job_key}),
                    UpdateExpression=f"SET {update}",
                    ConditionExpression=" AND ".join(guard),
                )
            },
            {
                "Put": {
                    "TableName": self.operations.table,
                    "Item": to_item(claim.operation),
                    "ConditionExpression": "attribute_not_exists(id)",
                }
            },
        ]
        return self._transact(items, f"claim job {claim.job_key}")

    def expire(self, expiry: ExpiryWrite) -> bool:
        """End an expired lease: the job pending again (or failed) and its operation closed with the
        error, in one transaction; False when the job no longer holds that operation and lease."""
        job = _Expression()
        guard = (
            f"{job.name('status')} = {job.value(JobStatus.claimed.value)}"
            f" AND {job.name('operation_id')} = {job.value(expiry.op_id)}"
            f" AND {job.name('lease_expires_at')} = {job.value(expiry.lease_expires_at)}"
        )
        status = expiry.job_status.value
        updates: dict[tuple[str, ...] | str, Any] = {
            "status": status,
            "workflow_status": f"{expiry.workflow_id}#{status}",
            "queue_at": expiry.now,
            "updated_at": expiry.now,
            "last_error": expiry.error,
        }
        if expiry.job_status == JobStatus.failed:
            updates["finished_at"] = expiry.now
            updates["result"] = expiry.error
        op = _Expression()
        items: list[dict[str, Any]] = [
            {
                "Update": job.request(
                    TableName=self.jobs.table,
                    Key=to_item({"job_key": expiry.job_key}),
                    UpdateExpression=f"SET {job.assign(updates)} REMOVE {job.name('lease_expires_at')}",
                    ConditionExpression=guard,
                )
            },
            {
                "Update": op.request(
                    TableName=self.operations.table,
                    Key=to_item({"id": expiry.op_id}),
                    UpdateExpression="SET "
                    + op.assign(
                        {
                            "done": True,
                            "result": expiry.error,
                            "site_done": site_done(expiry.site_id, True),
                            "updated_at": expiry.now,
                        }
                    ),
                    # Only an operation that exists; the job's guard already proves it is live.
                    ConditionExpression=f"attribute_exists({op.name('id')})",
                )
            },
        ]
        return self._transact(items, f"expire the lease of job {expiry.job_key}")

    def apply(self, write: OperationWrite) -> bool:
        """A heartbeat, completion, retry, failure or release; False when the operation is fenced off."""
        try:
            items = self._operation_write_items(write)
        except (TypeError, ArithmeticError) as exc:  # boto3 refuses NaN, and numbers beyond 38 digits
            raise ValidationFailed(
                f"the store cannot keep this result or metadata ({type(exc).__name__}): use numbers "
                "of at most 38 significant digits, or strings",
                loc=["body"],
            ) from exc
        return self._transact(items, f"update operation {write.op_id}", site_data=True)

    def _operation_write_items(self, write: OperationWrite) -> list[dict[str, Any]]:
        job = _Expression()
        guard = (
            f"{job.name('status')} = {job.value(JobStatus.claimed.value)}"
            f" AND {job.name('operation_id')} = {job.value(write.op_id)}"
        )
        op = _Expression()
        op_guard = (
            f"{op.name('done')} = {op.value(False)} AND {op.name('site_id')} = {op.value(write.site_id)}"
        )
        op_updates: dict[tuple[str, ...] | str, Any] = {
            ("metadata", key): value for key, value in write.metadata.items()
        }
        op_updates["updated_at"] = write.now
        remove_job = ""
        if write.job_status is None:
            if write.lease_expires_at is None:
                raise ValueError("a heartbeat needs the new lease end")
            job_updates: dict[tuple[str, ...] | str, Any] = {
                "lease_expires_at": write.lease_expires_at,
                "queue_at": write.lease_expires_at,
                "updated_at": write.now,
            }
            op_updates[("metadata", "lease_expires_at")] = write.lease_expires_at
            op_updates["expire_time"] = write.lease_expires_at
        else:
            status = write.job_status.value
            job_updates = {
                "status": status,
                "workflow_status": f"{write.workflow_id}#{status}",
                "queue_at": write.now,
                "updated_at": write.now,
            }
            if write.job_status in (JobStatus.done, JobStatus.failed):
                job_updates["finished_at"] = write.now
                job_updates["result"] = write.result
            if write.error is not None:
                job_updates["last_error"] = write.error
            remove_job = f" REMOVE {job.name('lease_expires_at')}"
            op_updates.update(
                {"done": True, "result": write.result, "site_done": site_done(write.site_id, True)}
            )
        update = "SET " + job.assign(job_updates)
        if write.give_back_attempt:
            attempts = job.name("attempts")
            update += f", {attempts} = {attempts} - {job.value(1)}"
        items = [
            {
                "Update": job.request(
                    TableName=self.jobs.table,
                    Key=to_item({"job_key": write.job_key}),
                    UpdateExpression=update + remove_job,
                    ConditionExpression=guard,
                )
            },
            {
                "Update": op.request(
                    TableName=self.operations.table,
                    Key=to_item({"id": write.op_id}),
                    UpdateExpression="SET " + op.assign(op_updates),
                    ConditionExpression=op_guard,
                )
            },
        ]
        return items

    def _transact(self, items: list[dict[str, Any]], action: str, site_data: bool = False) -> bool:
        """Run the transaction; False when a condition failed. `site_data`: the items carry what a
        site sent (result, metadata), so a value the store refuses is the site's to fix (422)."""
        for attempt in range(CONFLICT_RETRIES + 1):
            try:
                dynamodb().transact_write_items(
                    TransactItems=items,  # type: ignore[arg-type]
                    ClientRequestToken=request_token(items, attempt),
                )
            except ClientError as exc:
                if site_data and error_code(exc) == "ValidationException":
                    message = exc.response.get("Error", {}).get("Message", "")
                    raise ValidationFailed(
                        f"the store cannot keep this result or metadata: {message}", loc=["body"]
                    ) from exc
                if error_code(exc) != "TransactionCanceledException":
                    raise_store_error(exc, action)
                reasons = {str(r.get("Code")) for r in exc.response.get("CancellationReasons", [])}
                reasons.discard("None")
                if not reasons or "ConditionalCheckFailed" in reasons:
                    return False  # an item is no longer as the caller read it
                if reasons <= {"TransactionConflict"}:
                    if attempt < CONFLICT_RETRIES:
                        # Another transaction held one of the items at that moment; nothing was
                        # written, and the guards still hold the caller's view: send it again.
                        self._sleep(random.uniform(0, CONFLICT_PAUSE_SECONDS * 2**attempt))
                        continue
                    raise RetryableStoreError(
                        f"the store is busy (transaction conflicts) while trying to {action}; retry"
                    ) from exc
                if reasons & _BUSY_REASONS:
                    raise RetryableStoreError(
                        f"the store is busy ({', '.join(sorted(reasons))}) while trying to {action}; retry"
                    ) from exc
                raise JobTriggersError(
                    f"the store refused to {action} ({', '.join(sorted(reasons))})"
                ) from exc
            except BotoCoreError as exc:
                raise_store_error(exc, action)
            return True
        raise AssertionError("unreachable: the last conflict retry raises")  # pragma: no cover


def request_token(items: list[dict[str, Any]], attempt: int = 0) -> str:
    """The ClientRequestToken of one send of a transaction: the same items (one logical write,
    with its own new ids and timestamps) give the same token, so every retry botocore makes of
    that call repeats it, and DynamoDB answers a repeat of an applied write with success. A send
    after a TransactionConflict (which wrote nothing) is a new request: `attempt` is part of it."""
    canonical = json.dumps([items, attempt], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:36]


# The queue a claimable-jobs token continues, as the token spells it (short, and as issued before).
_PHASE_OF: dict[Queue, str] = {"pending": "p", "ended": "e"}
_QUEUE_OF: dict[str, Queue] = {v: k for k, v in _PHASE_OF.items()}


def _split_claimable_token(token: str | None, workflow_id: str | None) -> tuple[Queue, str | None]:
    """A claimable-jobs token wraps the queue (pending, or ended leases) and its own token."""
    if not token:
        return "pending", None
    state = decode_page_token(token, fingerprint("claimable", workflow_id))
    phase, inner = state.get("phase") if state else None, state.get("token") if state else None
    if phase not in _QUEUE_OF or not (inner is None or isinstance(inner, str)):
        raise BadRequestError("page_token is not one this API issued; start again without it")
    return _QUEUE_OF[phase], inner


def _join_claimable_token(queue: Queue, inner: str | None, workflow_id: str | None) -> str | None:
    return encode_page_token(
        {"phase": _PHASE_OF[queue], "token": inner}, fingerprint("claimable", workflow_id)
    )
