"""The jobs table, keyed by `{workflow_id}#{object_id}`, and every change of a job's state.

A job is created with a conditional put (`attribute_not_exists(job_key)`): a redelivered stream
record, a second type that triggers the same workflow, a backfill and a reconcile all race for
the same key, and exactly one of them wins.

Every later change is a `JobChange`, which logic/ builds and `JobRepository.apply` runs as one
transaction (with the operation it concerns), conditional on what the caller read; a lost race is
`False`, never an exception. A change that is a transition (not a heartbeat) adds one to the job's
`version` and stores the `transition` (events, when, by whom): the jobs table's stream turns it
into events.

Index attributes kept on every item (see template.yaml), derived here and nowhere else:
- `listing` = "job" and `created_at`            -> by_created (all jobs, oldest/newest first)
- `workflow_id` and `created_at`                -> by_workflow
- `object_id` and `workflow_id`                 -> by_object
- `status` and `queue_at`                        -> by_status
- `workflow_status` = "{workflow}#{status}"      -> by_workflow_status
- `site_id` (holder, or last holder) and `queue_at` -> by_site
`queue_at` orders each status's queue: when it became pending (or finished), or its lease end
while claimed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from jobtriggers.dal.assignments import assignment_put
from jobtriggers.dal.dynamo import Expression, get_item, put_if_absent, to_item, transact
from jobtriggers.dal.objects import object_conflict, object_puts
from jobtriggers.dal.operations import operation_item, site_done
from jobtriggers.dal.pages import (
    PageStats,
    Partition,
    ReadBudget,
    Selected,
    decode_page_token,
    encode_page_token,
    filtered_page,
    fingerprint,
    query_page,
)
from jobtriggers.errors import BadRequestError, ConflictError, NotFoundError, ValidationFailed
from jobtriggers.models import (
    Claim,
    DrsObject,
    Job,
    JobStatus,
    ObjectTypeAssignment,
    OperationRecord,
    Transition,
    job_key_from_id,
)
from jobtriggers.settings import table_names

Queue = Literal["pending", "ended"]
R = TypeVar("R")
# What claim-next needs to pick candidates (it reads each job it tries in full, consistently).
CANDIDATE_FIELDS = ("job_key", "id", "workflow_id", "config", "status", "queue_at", "created_at")
# Attributes of an item that are not the job's (the table's key and index attributes).
_STORAGE_ONLY = (
    "job_key",
    "listing",
    "workflow_status",
    "queue_at",
    "workflow_id",
    "object_id",
    "root_object_id",
    "transition",
)
# DynamoDB's bound on the actions of one TransactWriteItems.
MAX_TRANSACTION_ITEMS = 100


# --------------------------------------------------------------------------- encoding


def _queue_at(status: str, lease_expires_at: str | None, at: str) -> str:
    return lease_expires_at if status == JobStatus.claimed and lease_expires_at else at


def job_item(job: Job, transition: Transition | None = None) -> dict[str, Any]:
    """A job as the item the table keeps: its fields, its key and its index attributes (a job
    created over the API without `config.object_id` is not in by_object)."""
    data = job.model_dump(mode="json", exclude={"workflow_missing"})
    workflow_id, object_id = job.workflow.id, job.config.object_id
    item = {
        **data,
        "job_key": job.key,
        "workflow_id": workflow_id,
        "object_id": object_id,
        "workflow_status": f"{workflow_id}#{job.status}",
        "listing": "job",
        "queue_at": _queue_at(job.status, job.lease_expires_at, job.updated_at or job.created_at),
        # by_root: every job of a chain in one Query (a job of a plain tag is its own root)
        "root_object_id": job.root_object_id,
    }
    item.pop("workflow", None)
    if transition is not None:
        item["transition"] = transition.model_dump(mode="json")
    return item


def job_from_item(item: Mapping[str, Any]) -> Job:
    data = {k: v for k, v in item.items() if k not in _STORAGE_ONLY and k in Job.model_fields}
    data["workflow"] = {"id": item["workflow_id"]}
    data["config"] = item["config"] if "config" in item else {"object_id": item["object_id"]}
    if item.get("status") != JobStatus.claimed:
        data.pop("lease_expires_at", None)
    return Job.model_validate(data)


# --------------------------------------------------------------------------- changes


@dataclass(frozen=True)
class OperationUpdate:
    """What a change does to the operation it concerns (`site_id` is its holder): set `set` (paths
    into metadata as tuples), if it exists, and with `live_holder` only while it is not done."""

    op_id: str
    site_id: str
    set: Mapping[str | tuple[str, ...], Any]
    live_holder: bool = False


@dataclass(frozen=True)
class NewOutput:
    """An object a completion registers, and the assignments of its types (which carry its
    lineage to the trigger engine): put in the job's transaction, each item only if absent."""

    obj: DrsObject
    assignments: tuple[ObjectTypeAssignment, ...]

    @property
    def item_count(self) -> int:
        """Its items in the transaction: the object, one guard per checksum, one per type."""
        return 1 + len(self.obj.checksums) + len(self.assignments)


@dataclass(frozen=True)
class JobChange:
    """One change of one job: applied in one transaction, or not at all when the stored job no
    longer has every value in `expect` (None there: the attribute must be absent).

    `set` takes Job field names (paths such as ("claims[2]", "done") reach into lists); `increment`
    adds to numbers; `append_claims` adds claims; a `transition` (every change but a heartbeat)
    adds one to `version`. `new_operation` is put with it (it must not exist), `operation` updated.
    `outputs` (a completion's) are created with it: all of it happens, or none.
    """

    job: Job  # as the caller read it: its key and workflow
    expect: Mapping[str, Any]
    set: Mapping[str | tuple[str, ...], Any] = field(default_factory=dict)
    remove: tuple[str, ...] = ()
    increment: Mapping[str, int] = field(default_factory=dict)
    append_claims: tuple[Claim, ...] = ()
    transition: Transition | None = None
    new_operation: OperationRecord | None = None
    operation: OperationUpdate | None = None
    outputs: tuple[NewOutput, ...] = ()
    # The change carries what a site sent (a result, metadata): a value the store cannot keep is
    # the site's to fix (422), not a fault.
    site_data: bool = False

    @property
    def item_count(self) -> int:
        """The actions of its transaction: the job, its operation(s), and each output's items.
        DynamoDB takes at most MAX_TRANSACTION_ITEMS."""
        own = 1 + (self.new_operation is not None) + (self.operation is not None)
        return own + sum(o.item_count for o in self.outputs)


def _plain(value: Any) -> Any:
    if isinstance(value, Claim | Transition | OperationRecord | Job):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, JobStatus):
        return value.value
    return value


# Fields that jobs stored by earlier versions of the service lack: such a job has their defaults
# (a guard on one accepts the attribute's absence, an increment starts from the default).
_LATER_FIELDS: dict[str, Any] = {"version": 0, "run": 1, "cancel_requested": False}


def _job_update(change: JobChange, table: str) -> dict[str, Any]:
    expr = Expression()
    sets: dict[str | tuple[str, ...], Any] = {k: _plain(v) for k, v in change.set.items()}
    status = sets.get("status")
    at = change.transition.at if change.transition else sets.get("updated_at")
    if status is not None:
        sets["workflow_status"] = f"{change.job.workflow.id}#{status}"
        sets["queue_at"] = _queue_at(str(status), sets.get("lease_expires_at"), str(at))
    elif "lease_expires_at" in sets:  # a heartbeat moves the claimed job's place in the queue
        sets["queue_at"] = sets["lease_expires_at"]
    if change.transition is not None:
        sets["transition"] = change.transition.model_dump(mode="json")
    clauses = [expr.assign(sets)] if sets else []
    for name, amount in change.increment.items():
        start = expr.value(_LATER_FIELDS.get(name, 0))
        clauses.append(
            f"{expr.name(name)} = if_not_exists({expr.name(name)}, {start}) + {expr.value(amount)}"
        )
    if change.append_claims:
        claims = expr.name("claims")
        appended = expr.value([c.model_dump(mode="json") for c in change.append_claims])
        clauses.append(f"{claims} = list_append(if_not_exists({claims}, {expr.value([])}), {appended})")
    if change.transition is not None:
        version = expr.name("version")
        clauses.append(f"{version} = if_not_exists({version}, {expr.value(0)}) + {expr.value(1)}")
    update = "SET " + ", ".join(clauses)
    if change.remove:
        update += " REMOVE " + ", ".join(expr.name(r) for r in change.remove)
    guard = []
    for name, wanted in change.expect.items():
        if wanted is None:
            guard.append(f"attribute_not_exists({expr.name(name)})")
        elif name in _LATER_FIELDS and _plain(wanted) == _LATER_FIELDS[name]:
            value = expr.value(_plain(wanted))
            guard.append(f"(attribute_not_exists({expr.name(name)}) OR {expr.name(name)} = {value})")
        else:
            guard.append(f"{expr.name(name)} = {expr.value(_plain(wanted))}")
    return {
        "Update": expr.request(
            TableName=table,
            Key=to_item({"job_key": change.job.key}),
            UpdateExpression=update,
            ConditionExpression=" AND ".join(guard) or f"attribute_exists({expr.name('job_key')})",
        )
    }


def _operation_update(update: OperationUpdate, table: str) -> dict[str, Any]:
    expr = Expression()
    sets = {k: _plain(v) for k, v in update.set.items()}
    if sets.get("done") is True:
        sets["site_done"] = site_done(update.site_id, True)
    if update.live_holder:
        holder = f"{expr.name('site_id')} = {expr.value(update.site_id)}"
        guard = f"{expr.name('done')} = {expr.value(False)} AND {holder}"
    else:
        guard = f"attribute_exists({expr.name('id')})"
    return {
        "Update": expr.request(
            TableName=table,
            Key=to_item({"id": update.op_id}),
            UpdateExpression="SET " + expr.assign(sets),
            ConditionExpression=guard,
        )
    }


# --------------------------------------------------------------------------- the repository


class JobRepository:
    def __init__(
        self,
        table_name: str | None = None,
        operations_table: str | None = None,
        objects_table: str | None = None,
        object_types_table: str | None = None,
    ) -> None:
        self.table = table_name or table_names().jobs_table
        self.operations_table = operations_table or table_names().operations_table
        # Only a completion with outputs writes these: looked up when one does.
        self._objects_table = objects_table
        self._object_types_table = object_types_table

    @property
    def objects_table(self) -> str:
        return self._objects_table or table_names().objects_table

    @property
    def object_types_table(self) -> str:
        return self._object_types_table or table_names().object_types_table

    # ------------------------------------------------------------------ reads

    def find(self, job_id: str, consistent: bool = True) -> Job | None:
        key = job_key_from_id(job_id)
        if key is None:
            return None
        item = get_item(self.table, {"job_key": key}, f"read job {job_id}", consistent)
        return job_from_item(item) if item else None

    def get(self, job_id: str) -> Job:
        """The job (strongly consistent); NotFoundError for an unknown id."""
        job = self.find(job_id)
        if job is None:
            raise NotFoundError(f"job '{job_id}' does not exist")
        return job

    def list_page(
        self,
        *,
        workflow_id: str | None = None,
        object_id: str | None = None,
        status: str | None = None,
        site_id: str | None = None,
        limit: int = 20,
        page_token: str | None = None,
    ) -> tuple[list[Job], str | None]:
        """Jobs matching these equalities, one page: the first index of _INDEXES whose keys they
        give answers; the other equalities filter its pages."""
        wanted = {
            k: v
            for k, v in (
                ("workflow_id", workflow_id),
                ("object_id", object_id),
                ("status", status),
                ("site_id", site_id),
            )
            if v is not None
        }
        index = next(i for i in _INDEXES if set(i.keys) <= set(wanted))
        synthetic = {"listing": "job"}
        if "workflow_id" in wanted and "status" in wanted:
            synthetic["workflow_status"] = f"{wanted['workflow_id']}#{wanted['status']}"
        filtered = [attr for attr in wanted if attr not in index.keys]
        used = (*index.attributes, *filtered)
        items, token = query_page(
            table=self.table,
            index=index.name,
            key_condition=" AND ".join(f"#{a} = :{a}" for a in index.attributes),
            values={f":{a}": {**wanted, **synthetic}[a] for a in used},
            names={f"#{a}": a for a in used},
            filter_expression=" AND ".join(f"#{a} = :{a}" for a in filtered) or None,
            limit=limit,
            page_token=page_token,
            action="list jobs",
        )
        return [job_from_item(i) for i in items], token

    def filtered_page(
        self,
        pinned: Mapping[str, frozenset[str] | None],
        select: Callable[[list[Job]], list[Selected[R] | None]],
        *,
        limit: int,
        page_token: str | None,
        query_identity: Any,
        budget: ReadBudget = ReadBudget(),
    ) -> tuple[list[R], str | None, PageStats]:
        """One page of the jobs a filter selects (GET /jobs): the partitions of the index that the
        values it pins (`pinned`: workflow_id, object_id, status, site_id -> the values each must
        have, or None) name, read in order; `select` decides on each job. Bounded by `budget`."""
        plan = listing_plan(pinned)
        return filtered_page(
            table=self.table,
            index=plan.index,
            key_attributes=plan.key_attributes,
            partitions=plan.partitions,
            select=lambda items: select([job_from_item(i) for i in items]),
            limit=limit,
            page_token=page_token,
            query_identity=query_identity,
            budget=budget,
            action="list jobs",
        )

    def queue_page(
        self,
        workflow_id: str | None,
        queue: Queue,
        now: str,
        limit: int,
        page_token: str | None = None,
        brief: bool = False,
        created_by: str | None = None,
    ) -> tuple[list[Job], str | None]:
        """One page of one queue, oldest `queue_at` first: `pending` jobs, or `ended` leases
        (claimed jobs whose lease end is before `now`), of one workflow or of all.

        `brief` reads only CANDIDATE_FIELDS (the jobs come back without their claims and leases):
        claim-next reads the job it tries afresh anyway (indexes are eventually consistent), so the
        page itself only has to say which jobs. `now` is not part of the query's identity: a token
        taken with one clock reading continues with the next. `created_by`: only the jobs that site
        created (a filter on the page: a page read is still `limit` items at most).
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
        created_filter = None
        if created_by is not None:
            names = {**(names or {}), "#cb": "created_by"}
            values[":cb"] = created_by
            created_filter = "#cb = :cb"
        items, token = query_page(
            table=self.table,
            index=index,
            key_condition=cond,
            values=values,
            names=names,
            limit=limit,
            page_token=page_token,
            filter_expression=created_filter,
            projection=CANDIDATE_FIELDS if brief else None,
            moving_values={":before"},
            action=f"list {queue} jobs",
        )
        return [job_from_item(i) for i in items], token

    def claimable_page(
        self, workflow_id: str | None, now: str, limit: int, page_token: str | None = None
    ) -> tuple[list[Job], str | None]:
        """One page of claimable jobs (GET /jobs?claimable=true): pending ones first, then claimed
        ones whose lease ended. Leases end rarely compared with jobs pending, so the two queues are
        read one after the other rather than merged; the token says which queue comes next."""
        queue, inner = _split_claimable_token(page_token, workflow_id)
        jobs: list[Job] = []
        if queue == "pending":
            jobs, inner = self.queue_page(workflow_id, "pending", now, limit, inner)
            if inner:
                return jobs, _join_claimable_token("pending", inner, workflow_id)
            queue, inner = "ended", None
            if len(jobs) >= limit:
                # Do not read the second queue within this page; say where to continue.
                return jobs, _join_claimable_token("ended", None, workflow_id)
        more, inner = self.queue_page(workflow_id, "ended", now, limit - len(jobs), inner)
        jobs += more
        return jobs, _join_claimable_token("ended", inner, workflow_id) if inner else None

    # ------------------------------------------------------------------ writes

    def create(self, job: Job, transition: Transition, site_data: bool = False) -> bool:
        """Put a new job unless its key exists (version 1). True when this call created it.
        `site_data`: a site sent the job (POST /jobs), so a config the store cannot keep is a 422."""
        item = job_item(job.model_copy(update={"version": 1}), transition)
        return put_if_absent(self.table, item, "job_key", f"create job {job.id}", site_data=site_data)

    def apply(self, change: JobChange) -> bool:
        """Run `change` as one transaction; False when the job (or its operation) is no longer as
        the caller read it. Its outputs are created with it: when the job was as read but an output
        clashes (its id exists, or another object has one of its checksums) nothing is written and
        ConflictError names it."""
        try:
            items = [_job_update(change, self.table)]
            if change.new_operation is not None:
                items.append(
                    {
                        "Put": {
                            "TableName": self.operations_table,
                            "Item": to_item(operation_item(change.new_operation)),
                            "ConditionExpression": "attribute_not_exists(id)",
                        }
                    }
                )
            if change.operation is not None:
                items.append(_operation_update(change.operation, self.operations_table))
            own_items = len(items)
            starts: list[int] = []
            for output in change.outputs:
                starts.append(len(items))
                items += object_puts(output.obj, self.objects_table)
                items += [assignment_put(a, self.object_types_table) for a in output.assignments]
        except (TypeError, ArithmeticError) as exc:  # NaN, and numbers beyond 38 digits
            if not change.site_data:
                raise
            raise ValidationFailed(
                f"the store cannot keep this result or metadata ({type(exc).__name__}): use numbers "
                "of at most 38 significant digits, or strings",
                loc=["body"],
            ) from exc
        done = transact(items, action=f"change job {change.job.id}", site_data=change.site_data)
        if done or not change.outputs or any(done.failed_at(i) for i in range(own_items)):
            return bool(done)
        # The job was as read: an output clashed with what the store has.
        for output, start in zip(change.outputs, starts, strict=True):
            conflict = object_conflict(output.obj, done, start, self.objects_table, what="output object")
            if conflict is not None:
                raise conflict
        raise ConflictError(
            f"an output of job {change.job.id} changed concurrently (its object or a type assignment); retry"
        )


@dataclass(frozen=True)
class _Index:
    """A jobs index: the equalities (`keys`) it answers, and the key attributes it compares."""

    name: str
    keys: tuple[str, ...]

    @property
    def attributes(self) -> tuple[str, ...]:
        if self.name == "by_created":
            return ("listing",)
        if self.name == "by_workflow_status":
            return ("workflow_status",)
        return self.keys


# The most selective first: an object has few jobs, a holder few leases, a workflow many.
_INDEXES = (
    _Index("by_object", ("object_id", "workflow_id")),
    _Index("by_object", ("object_id",)),
    _Index("by_site", ("site_id",)),
    _Index("by_workflow_status", ("workflow_id", "status")),
    _Index("by_workflow", ("workflow_id",)),
    _Index("by_status", ("status",)),
    _Index("by_created", ()),
)


@dataclass(frozen=True)
class ListingPlan:
    """Which index a filtered listing reads, which of its partitions, and the attributes of its
    items' keys (the table's and the index's: what continues a Query after an item)."""

    index: str
    partitions: tuple[Partition, ...]
    key_attributes: tuple[str, ...]


# Per index: the attributes of a key a Query on it returns (the table's key, then the index's).
_KEY_ATTRIBUTES = {
    "by_object": ("job_key", "object_id", "workflow_id"),
    "by_site": ("job_key", "site_id", "queue_at"),
    "by_workflow_status": ("job_key", "workflow_status", "queue_at"),
    "by_workflow": ("job_key", "workflow_id", "created_at"),
    "by_status": ("job_key", "status", "queue_at"),
    "by_created": ("job_key", "listing", "created_at"),
}


def _keyable(value: str) -> bool:
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return bool(value)


def listing_plan(pinned: Mapping[str, frozenset[str] | None]) -> ListingPlan:
    """The index and partitions that hold every job with the pinned values, choosing as list_page
    does (the most selective first: an object has few jobs, a holder few leases, a workflow many):
    one partition per pinned value (or pair of values, for workflow and status). A value pinned to
    nothing (values that contradict each other) reads nothing."""
    # No key holds an empty string or text that is not UTF-8: such a value matches no job.
    wanted = {k: frozenset(x for x in v if _keyable(x)) for k, v in pinned.items() if v is not None}
    if any(not v for v in wanted.values()):
        return ListingPlan("by_created", (), _KEY_ATTRIBUTES["by_created"])

    def each(attr: str) -> list[str]:
        return sorted(wanted[attr])

    def eq(*attrs: str) -> str:
        return " AND ".join(f"#{a} = :{a}" for a in attrs)

    def part(**values: str) -> Partition:
        return Partition(eq(*values), {f":{a}": v for a, v in values.items()}, {f"#{a}": a for a in values})

    workflows = wanted.get("workflow_id")
    if "object_id" in wanted:
        if workflows is not None and len(workflows) == 1:
            (workflow,) = workflows
            parts = [part(object_id=o, workflow_id=workflow) for o in each("object_id")]
        else:
            parts = [part(object_id=o) for o in each("object_id")]
        index = "by_object"
    elif "site_id" in wanted:
        index, parts = "by_site", [part(site_id=s) for s in each("site_id")]
    elif workflows is not None and "status" in wanted:
        index = "by_workflow_status"
        parts = [part(workflow_status=f"{w}#{st}") for w in each("workflow_id") for st in each("status")]
    elif workflows is not None:
        index, parts = "by_workflow", [part(workflow_id=w) for w in each("workflow_id")]
    elif "status" in wanted:
        index, parts = "by_status", [part(status=st) for st in each("status")]
    else:
        index, parts = "by_created", [part(listing="job")]
    return ListingPlan(index, tuple(parts), _KEY_ATTRIBUTES[index])


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
