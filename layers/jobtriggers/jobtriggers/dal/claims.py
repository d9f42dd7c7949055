"""Claims, heartbeats and completions: each one transaction over a job and its operation.

Every write here is conditional on the state the caller read, so two claimers, a retried request
or a fenced-off former holder can never both succeed:
- a claim updates the job only if it is still `pending` (or still `claimed` by the same expired
  operation, with its lease end before now) and its `attempts` are still what was read, and puts a
  new operation that must not exist; a takeover also closes the expired operation;
- a heartbeat or a finish updates the job only while it is `claimed` by that operation, and the
  operation only while it is not `done` and belongs to that site.
A lost race is `False`, never an exception: the caller re-reads and decides what to tell the site.
Nothing relies on TTL (which deletes up to two days late): lease ends are compared with the clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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
from jobtriggers.errors import BadRequestError, JobTriggersError, ValidationFailed
from jobtriggers.models import JobStatus

# Reasons a transaction is cancelled that mean "someone else changed the item first".
_LOST_RACE_REASONS = frozenset({"ConditionalCheckFailed", "TransactionConflict"})
# What claim-next needs to pick candidates (it reads each job it tries in full, consistently).
CANDIDATE_FIELDS = ("job_key", "id", "workflow_id", "status", "queue_at")


@dataclass(frozen=True)
class ClaimWrite:
    """One claim: the job as it was read (the guard), the new lease and the new operation."""

    job_key: str
    workflow_id: str
    site_id: str
    now: str
    lease_expires_at: str
    expect_status: JobStatus  # pending, or claimed for a takeover of an expired lease
    expect_attempts: int
    operation: dict[str, Any]  # the new operation's item (dal.operations.new_operation_item)
    # A takeover closes the expired holder's operation with this result, in the same transaction.
    expired_operation_id: str | None = None
    expired_site_id: str | None = None
    expired_result: dict[str, Any] | None = None


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

    def __init__(self, jobs_table: str | None = None, operations_table: str | None = None) -> None:
        self.jobs = JobRepository(jobs_table)
        self.operations = OperationRepository(operations_table)

    # ------------------------------------------------------------------ reads

    def get_job(self, job_id: str) -> dict[str, Any]:
        """The job's item (strongly consistent); NotFoundError for an unknown id."""
        return self.jobs.get_item_by_id(job_id)

    def get_operation(self, op_id: str) -> dict[str, Any] | None:
        return self.operations.get_item(op_id)

    def _queue_page(
        self,
        status: JobStatus,
        workflow_id: str | None,
        before: str | None,
        limit: int,
        page_token: str | None,
        projection: tuple[str, ...] | None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Jobs of one status, oldest `queue_at` first; `before` keeps only queue_at < before."""
        names = {"#st": "status"}
        if workflow_id is None:
            index, cond, values = "by_status", "#st = :st", {":st": status.value}
        else:
            index, cond, values = (
                "by_workflow_status",
                "workflow_status = :st",
                {":st": f"{workflow_id}#{status}"},
            )
            names = {}
        if before is not None:
            cond += " AND queue_at < :before"
            values[":before"] = before
        return query_page(
            table=self.jobs.table,
            index=index,
            key_condition=cond,
            values=values,
            names=names or None,
            limit=limit,
            page_token=page_token,
            projection=projection,
            action=f"list {status} jobs",
        )

    def candidates(
        self,
        workflow_id: str | None,
        now: str,
        limit: int,
        page_token: str | None = None,
        brief: bool = False,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of claimable jobs: pending ones first, then claimed ones whose lease ended.

        `brief` returns only CANDIDATE_FIELDS: claim-next reads the job it tries afresh anyway
        (indexes are eventually consistent), so the page itself only has to say which jobs.

        Leases end rarely compared with jobs pending, so the two queues are read one after the
        other rather than merged; the page token says which queue (and where in it) comes next.
        (The clock moves between pages, so a lease that ends meanwhile may be seen on a later page.)
        """
        phase, inner = _split_claimable_token(page_token, workflow_id)
        projection = CANDIDATE_FIELDS if brief else None
        items: list[dict[str, Any]] = []
        if phase == "p":
            items, inner = self._queue_page(JobStatus.pending, workflow_id, None, limit, inner, projection)
            if inner:
                return items, _join_claimable_token("p", inner, workflow_id)
            phase, inner = "e", None
            if len(items) >= limit:
                # Do not read the second queue within this page; say where to continue.
                return items, _join_claimable_token("e", None, workflow_id)
        more, inner = self._queue_page(
            JobStatus.claimed, workflow_id, now, limit - len(items), inner, projection
        )
        items += more
        return items, _join_claimable_token("e", inner, workflow_id) if inner else None

    # ------------------------------------------------------------------ writes

    def start_claim(self, claim: ClaimWrite) -> bool:
        """Claim the job and create its operation in one transaction; False when the job moved on."""
        job = _Expression()
        guard = [
            f"{job.name('status')} = {job.value(claim.expect_status.value)}",
            f"{job.name('attempts')} = {job.value(claim.expect_attempts)}",
        ]
        if claim.expect_status == JobStatus.claimed:
            guard += [
                f"{job.name('operation_id')} = {job.value(claim.expired_operation_id)}",
                f"{job.name('lease_expires_at')} < {job.value(claim.now)}",
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
        if claim.expired_operation_id and claim.expired_site_id:
            old = _Expression()
            items.append(
                {
                    "Update": old.request(
                        TableName=self.operations.table,
                        Key=to_item({"id": claim.expired_operation_id}),
                        UpdateExpression="SET "
                        + old.assign(
                            {
                                "done": True,
                                "result": claim.expired_result,
                                "site_done": site_done(claim.expired_site_id, True),
                                "updated_at": claim.now,
                            }
                        ),
                        # Only an operation that exists; the job's guard already proves it is live.
                        ConditionExpression=f"attribute_exists({old.name('id')})",
                    )
                }
            )
        return self._transact(items, f"claim job {claim.job_key}")

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
            else:
                job_updates["last_result"] = write.result
            remove_job = f" REMOVE {job.name('lease_expires_at')}"
            op_updates.update(
                {"done": True, "result": write.result, "site_done": site_done(write.site_id, True)}
            )
        items = [
            {
                "Update": job.request(
                    TableName=self.jobs.table,
                    Key=to_item({"job_key": write.job_key}),
                    UpdateExpression="SET " + job.assign(job_updates) + remove_job,
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
        try:
            dynamodb().transact_write_items(TransactItems=items)  # type: ignore[arg-type]
        except ClientError as exc:
            if site_data and error_code(exc) == "ValidationException":
                message = exc.response.get("Error", {}).get("Message", "")
                raise ValidationFailed(
                    f"the store cannot keep this result or metadata: {message}", loc=["body"]
                ) from exc
            if error_code(exc) == "TransactionCanceledException":
                reasons = {r.get("Code") for r in exc.response.get("CancellationReasons", [])}
                if not reasons or reasons & _LOST_RACE_REASONS:
                    return False
                raise JobTriggersError(
                    f"the store refused to {action} ({', '.join(sorted(map(str, reasons)))})"
                ) from exc
            raise_store_error(exc, action)
        except BotoCoreError as exc:
            raise_store_error(exc, action)
        return True


def _split_claimable_token(token: str | None, workflow_id: str | None) -> tuple[str, str | None]:
    """A claimable-jobs token wraps the queue ("p" pending, "e" ended leases) and its own token."""
    if not token:
        return "p", None
    state = decode_page_token(token, fingerprint("claimable", workflow_id))
    phase, inner = state.get("phase") if state else None, state.get("token") if state else None
    if phase not in ("p", "e") or not (inner is None or isinstance(inner, str)):
        raise BadRequestError("page_token is not one this API issued; start again without it")
    return phase, inner


def _join_claimable_token(phase: str, inner: str | None, workflow_id: str | None) -> str | None:
    return encode_page_token({"phase": phase, "token": inner}, fingerprint("claimable", workflow_id))
