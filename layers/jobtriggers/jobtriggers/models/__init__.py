"""Pydantic models: the registry, objects and their types, jobs, operations, sites, API bodies.

Shapes follow the NMDC Runtime's (nmdc_runtime/api/models) so that its sites feel at home; the
fields this service adds (job status, leases, attempts) are additive.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

# Ids reach DynamoDB keys and URLs. The registry's own ids include `schema#/definitions/Database`,
# so `#` and `/` are allowed; control characters and whitespace at the ends are not.
ID_MAX_LENGTH = 256
ID_PATTERN = r"^[^\s\x00-\x1f\x7f](?:[^\x00-\x1f\x7f]{0,254}[^\s\x00-\x1f\x7f])?$"
# Objects are created over the API: their ids are DRS ids (as in the NMDC Runtime), a stricter set.
DRS_ID_PATTERN = r"^[A-Za-z0-9._~:\-]{1,200}$"

RegistryId = Annotated[str, Field(min_length=1, max_length=ID_MAX_LENGTH, pattern=ID_PATTERN)]
WORKFLOW_ID_PATTERN = ID_PATTERN.replace("[^", "[^#")
WorkflowId = Annotated[str, Field(min_length=1, max_length=ID_MAX_LENGTH, pattern=WORKFLOW_ID_PATTERN)]
DrsId = Annotated[str, Field(min_length=1, max_length=200, pattern=DRS_ID_PATTERN)]

# DynamoDB refuses a key attribute value over these sizes (bytes of UTF-8) with a ValidationException,
# which would be a 500. Every id that becomes (part of) a key is bounded so that the largest key
# built from it fits: tests/unit/test_key_bounds.py adds up the worst cases, 4 bytes a character
# wherever a pattern allows any character. (moto does not check these limits; AWS does.)
PARTITION_KEY_MAX_BYTES = 2048
SORT_KEY_MAX_BYTES = 1024

# Site ids end up in keys such as `site_done` = "{site}#{done}" and in URLs: no `#`, `/` or spaces.
SITE_ID_MAX_LENGTH = 100
SITE_ID_PATTERN = rf"^[A-Za-z0-9][A-Za-z0-9._\-]{{0,{SITE_ID_MAX_LENGTH - 1}}}$"
SiteId = Annotated[str, Field(min_length=1, max_length=SITE_ID_MAX_LENGTH, pattern=SITE_ID_PATTERN)]
# Client ids are ours (`client-` + 24 hex digits); one arriving at the unauthenticated POST /token
# may be anything, so its bound is generous but firm: printable ASCII, no spaces.
CLIENT_ID_MAX_LENGTH = 128
CLIENT_ID_PATTERN = rf"^[\x21-\x7e]{{1,{CLIENT_ID_MAX_LENGTH}}}$"
ClientId = Annotated[str, Field(min_length=1, max_length=CLIENT_ID_MAX_LENGTH, pattern=CLIENT_ID_PATTERN)]
# Job ids are base64url of `{workflow_id}#{object_id}`: 700 characters hold the longest such key.
JOB_ID_MAX_LENGTH = 700
JOB_ID_PATTERN = r"^[A-Za-z0-9_\-]+$"
# A checksum is half of the guard key `checksum#{type}#{value}`: printable ASCII (hex, base64, ...).
CHECKSUM_MAX_LENGTH = 512
CHECKSUM_PATTERN = r"^[\x21-\x7e]+$"


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(dt: datetime) -> str:
    """One timestamp format everywhere: sortable as a string, millisecond precision, UTC `Z`."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


class _Deferred(BaseModel):
    """Builds its validator on first use, not at import: a cold start builds only the models its
    request needs (pydantic's defer_build; subclasses inherit it)."""

    model_config = ConfigDict(defer_build=True)


class _Model(_Deferred):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# --------------------------------------------------------------------------- registry


class ObjectType(_Model):
    id: RegistryId
    name: str = Field(min_length=1)
    description: str | None = None
    created_at: datetime


# An output's name is what a site calls the file (`filtered_final`, `sr_contig`): safe in keys and URLs.
OUTPUT_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,127}$"
# Far more than any workflow declares (NMDC's annotation has 25); a bound keeps a registry item small.
MAX_WORKFLOW_OUTPUTS = 100


def each_type_once(value: list[str]) -> list[str]:
    """The object type ids as given; ValueError naming any listed twice (outputs' and objects' types)."""
    twice = sorted({t for t in value if value.count(t) > 1})
    if twice:
        raise ValueError(f"object type {', '.join(repr(t) for t in twice)} is listed twice")
    return value


class WorkflowOutput(_Model):
    """One object a workflow's job produces, and the object types that object is assigned.

    Declared in seed/workflows.json. A finished job registers its outputs as objects carrying these
    types, and each type may trigger the next workflow: that is how a chain runs by itself. A job
    need not register every declared output; it may not register an object of a type that no
    output of its workflow declares.
    """

    name: str = Field(pattern=OUTPUT_NAME_PATTERN, description="unique within the workflow")
    object_types: list[RegistryId] = Field(
        min_length=1, max_length=16, description="the object types an object of this output is assigned"
    )
    description: str | None = None

    @field_validator("object_types")
    @classmethod
    def _types_once(cls, value: list[str]) -> list[str]:
        return each_type_once(value)


class Workflow(_Model):
    # No `#` in a workflow id: it is the left half of the job key `{workflow_id}#{object_id}`,
    # which must split one way only.
    id: WorkflowId
    name: str = Field(min_length=1)
    description: str | None = None
    created_at: datetime
    capability_ids: list[RegistryId] = Field(default_factory=list)
    # How long one claim holds the job before another site may take it over.
    lease_seconds: int | None = Field(default=None, ge=10, le=7 * 24 * 3600)
    # How many claims may end in an error before the job is `failed` for good.
    max_attempts: int | None = Field(default=None, ge=1, le=100)
    outputs: list[WorkflowOutput] = Field(
        default_factory=list,
        max_length=MAX_WORKFLOW_OUTPUTS,
        description="what the workflow's jobs produce; empty: its jobs register no outputs",
    )

    @field_validator("outputs")
    @classmethod
    def _output_names_once(cls, value: list[WorkflowOutput]) -> list[WorkflowOutput]:
        names = [o.name for o in value]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"output name {', '.join(repr(n) for n in twice)} is declared twice")
        return value

    def output_names(self) -> list[str]:
        """The declared outputs' names, in seed order."""
        return [o.name for o in self.outputs]

    def output_object_types(self) -> frozenset[str]:
        """Every object type an output of this workflow may carry (the union over its outputs)."""
        return frozenset(t for o in self.outputs for t in o.object_types)

    def undeclared_output_types(self, object_type_ids: list[str]) -> list[str]:
        """Those of `object_type_ids` that no output of this workflow declares, sorted: a completion
        that registers an object with any of them is refused (and names them)."""
        declared = self.output_object_types()
        return sorted({t for t in object_type_ids if t not in declared})


class Capability(_Model):
    id: RegistryId
    name: str = Field(min_length=1)
    description: str | None = None
    created_at: datetime


class Trigger(_Model):
    id: RegistryId
    object_type_id: RegistryId
    workflow_id: WorkflowId
    created_at: datetime

    @model_validator(mode="after")
    def _id_names_its_ends(self) -> Trigger:
        expected = trigger_id(self.object_type_id, self.workflow_id)
        if self.id != expected:
            raise ValueError(
                f"trigger id must be '{expected}' (object_type_id--workflow_id), not '{self.id}'"
            )
        return self


def trigger_id(object_type_id: str, workflow_id: str) -> str:
    return f"{object_type_id}--{workflow_id}"


REGISTRY_MODELS: dict[str, type[_Model]] = {
    "object_type": ObjectType,
    "workflow": Workflow,
    "capability": Capability,
    "trigger": Trigger,
}


# --------------------------------------------------------------------------- objects (DRS)


class AccessURL(_Model):
    url: str = Field(min_length=1, max_length=2048)
    headers: list[str] | None = None


class AccessMethod(_Model):
    access_id: str | None = Field(default=None, max_length=256)
    access_url: AccessURL | None = None
    region: str | None = Field(default=None, max_length=64)
    type: Literal["s3", "gs", "ftp", "gsiftp", "globus", "htsget", "https", "file"] = "https"

    @model_validator(mode="after")
    def _access_id_or_url(self) -> AccessMethod:
        if self.access_id is None and self.access_url is None:
            raise ValueError("an access method needs access_url or access_id")
        return self


class Checksum(_Model):
    checksum: str = Field(min_length=1, max_length=CHECKSUM_MAX_LENGTH, pattern=CHECKSUM_PATTERN)
    type: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._\-]+$")


class ContentsObject(_Deferred):
    model_config = ConfigDict(extra="allow")
    name: str
    id: str | None = None
    drs_uri: list[str] | None = None
    contents: list[ContentsObject] | None = None


class DrsObjectIn(_Model):
    """The body of POST /objects (the NMDC Runtime's DrsObjectIn, plus an optional id)."""

    id: DrsId | None = None
    name: str | None = Field(default=None, max_length=512, pattern=r"^[A-Za-z0-9._\-]+$")
    description: str | None = Field(default=None, max_length=10_000)
    size: int = Field(ge=0, strict=True)
    checksums: list[Checksum] = Field(min_length=1, max_length=16)
    created_time: datetime
    updated_time: datetime | None = None
    access_methods: list[AccessMethod] | None = Field(default=None, max_length=32)
    mime_type: str | None = Field(default="application/json", pattern=r"^\w+/[-+.\w]+$")
    aliases: list[str] | None = Field(default=None, max_length=64)
    version: str | None = Field(default=None, max_length=128)
    contents: list[ContentsObject] | None = None

    @model_validator(mode="after")
    def _blob_needs_access(self) -> DrsObjectIn:
        if self.contents is None and not self.access_methods:
            raise ValueError("an object without contents is a single blob and needs access_methods")
        return self

    @field_validator("checksums")
    @classmethod
    def _unique_checksum_types(cls, value: list[Checksum]) -> list[Checksum]:
        seen: set[tuple[str, str]] = set()
        for c in value:
            key = (c.type, c.checksum)
            if key in seen:
                raise ValueError(f"checksum {c.type}:{c.checksum} is listed twice")
            seen.add(key)
        return value


class DrsObject(DrsObjectIn):
    id: DrsId
    self_uri: str
    created_by: str | None = Field(default=None, description="the site that registered the object")
    types: list[str] = Field(default_factory=list, description="ids of the object types assigned")
    was_generated_by: str | None = Field(
        default=None, description="the job whose completion registered the object (None: POST /objects)"
    )


class OutputObjectIn(DrsObjectIn):
    """One output of a completion (`PATCH /operations/{id}` with `{"done": true, "result":
    {"outputs": [...]}}`): a DRS object as POST /objects takes it, the object types it gets, and
    optionally which declared output of the workflow it is (`output_name`; the DRS `name` is the
    file's name). Every file output of NMDC's chain shares the type `data_object_set`: the output
    name is what tells `sr_contig` from `sr_bam` in the next jobs' inputs."""

    types: list[RegistryId] = Field(
        min_length=1, max_length=16, description="object type ids, each declared by the job's workflow"
    )
    output_name: str | None = Field(
        default=None,
        pattern=OUTPUT_NAME_PATTERN,
        description="the declared output this object is (its types must be that output's)",
    )

    @field_validator("types")
    @classmethod
    def _types_once(cls, value: list[str]) -> list[str]:
        return each_type_once(value)


class InputRef(_Deferred):
    """One object a chained job may read: the object that triggered it, or an output of one of its
    ancestors (with the types it got and the declared output it was), so a MAGs job finds the
    contigs and the annotation without asking."""

    object_id: str
    types: list[str] = Field(default_factory=list, description="the object types it was assigned")
    output_name: str | None = Field(
        default=None, description="the declared output it was registered as (None: tagged from outside)"
    )
    workflow_id: str | None = Field(default=None, description="the workflow of the job that made it")
    job_id: str | None = Field(default=None, description="the job that made it (None: tagged from outside)")


class Lineage(_Deferred):
    """Where an object comes from, as its type assignments carry it to the trigger engine: the job
    that made it (None for an object tagged from outside), the object its chain started from, and
    every object of the chain so far (the chain's root and every output of the ancestors)."""

    generated_by: str | None = None
    # None: made by a job created over the API without an object, which starts no chain; each of
    # its outputs then starts one of its own.
    root_object_id: str | None
    inputs: list[InputRef] = Field(default_factory=list)


class ObjectTypeAssignment(_Model):
    """One object carrying one object type: one item of the object-type table, one stream record.

    An assignment written by a completion carries the output's lineage (`generated_by`,
    `root_object_id`, and `inputs` when its type triggers a workflow): the stream record hands it to
    the trigger engine, so the next job gets its lineage without another read. A tag from outside
    carries none: its object is a root.
    """

    object_id: str
    object_type_id: str
    assigned_at: str = Field(description="ISO timestamp written by the service")
    assigned_by: str | None = None
    generated_by: str | None = Field(default=None, description="the job whose output this object is")
    root_object_id: str | None = Field(default=None, description="the object its chain started from")
    inputs: list[InputRef] | None = Field(
        default=None, description="the chain's objects so far, this one included (see InputRef)"
    )

    @property
    def lacks_inputs(self) -> bool:
        """A completion's assignment written without the chain's inputs (its type triggered nothing
        then): a job made from it rebuilds them from its parent job (`generated_by`)."""
        return self.generated_by is not None and self.inputs is None

    def lineage(self) -> Lineage:
        """The lineage a job triggered by this assignment gets: the object's own when a completion
        registered it; else the object is a chain's root, and its only input."""
        own = InputRef(object_id=self.object_id, types=[self.object_type_id])
        if self.generated_by is not None:
            return Lineage(
                generated_by=self.generated_by,
                root_object_id=self.root_object_id or self.object_id,
                inputs=self.inputs if self.inputs is not None else [own],
            )
        return Lineage(generated_by=None, root_object_id=self.object_id, inputs=[own])


# --------------------------------------------------------------------------- jobs


class JobStatus(StrEnum):
    pending = "pending"
    claimed = "claimed"
    done = "done"
    failed = "failed"
    cancelled = "cancelled"


# A job in one of these is finished: nobody claims it; an operator may rerun it.
FINISHED = frozenset({JobStatus.done, JobStatus.failed, JobStatus.cancelled})


class JobEventType(StrEnum):
    """What a job's transition was: the event types the jobs stream turns into EventBridge events
    (their `detail-type`), in the order a life usually meets them."""

    created = "job.created"
    claimed = "job.claimed"
    lease_expired = "job.lease_expired"
    released = "job.released"
    attempt_failed = "job.attempt_failed"
    done = "job.done"
    failed = "job.failed"
    cancel_requested = "job.cancel_requested"
    cancelled = "job.cancelled"
    rerun = "job.rerun"


def job_key(workflow_id: str, object_id: str) -> str:
    """The jobs table's partition key: one job per (workflow, object), by construction."""
    return f"{workflow_id}#{object_id}"


def job_id_for(workflow_id: str, object_id: str) -> str:
    """A deterministic, URL-safe, reversible id: base64url of the key, without padding."""
    return base64.urlsafe_b64encode(job_key(workflow_id, object_id).encode()).decode().rstrip("=")


def job_key_from_id(job_id: str) -> str | None:
    """The key a job id stands for, or None when the id cannot be one of ours."""
    if not job_id or len(job_id) > JOB_ID_MAX_LENGTH or not re.fullmatch(JOB_ID_PATTERN, job_id):
        return None
    try:
        key = base64.urlsafe_b64decode(job_id + "=" * (-len(job_id) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    if "#" not in key or job_id_for(*key.split("#", 1)) != job_id:
        return None
    return key


class WorkflowRef(_Deferred):
    id: str


class JobConfig(_Deferred):
    """What the job runs on. A triggered job's is `{object_id}`; a job created over the API (POST
    /jobs) keeps the config its creator sent, which need not name an object."""

    model_config = ConfigDict(extra="allow")
    object_id: str | None = None

    @model_serializer(mode="wrap")
    def _as_sent(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # A config without an object is served as it was sent, not with `"object_id": null` added.
        data: dict[str, Any] = handler(self)
        if data.get("object_id") is None:
            data.pop("object_id", None)
        return data


# POST /jobs: a job's identity is its workflow and the canonical JSON of its config.
CONFIG_KEY_PREFIX = "config:"
# Far above any config NMDC's scheduler writes (its largest are about 10 KB), and low enough that
# the job item and the operation that carries it stay well inside DynamoDB's 400 KB (a stored map
# costs at most about twice its JSON).
MAX_CONFIG_BYTES = 128 * 1024
# DynamoDB keeps nested attributes 32 levels deep; the operation's metadata holds the job's config
# three levels down (metadata.job.config).
MAX_CONFIG_DEPTH = 24


def canonical_json(value: Any) -> str:
    """One text per JSON value: keys sorted, no spaces, whole-valued floats as integers (the store
    gives 1.0 back as 1)."""

    def normal(v: Any) -> Any:
        if isinstance(v, float) and v.is_integer():
            return int(v)
        if isinstance(v, dict):
            return {k: normal(x) for k, x in v.items()}
        if isinstance(v, list):
            return [normal(x) for x in v]
        return v

    return json.dumps(
        normal(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def config_key(config: dict[str, Any]) -> str:
    """The object half of an API-created job's key: `config:` + 32 hex digits of the SHA-256 of
    the config's canonical JSON. The same config always gives the same key."""
    digest = hashlib.sha256(canonical_json(config).encode("utf-8", "surrogatepass")).hexdigest()
    return CONFIG_KEY_PREFIX + digest[:32]


class Claim(_Deferred):
    """One claim of a job, as the NMDC Runtime's clients read it. A claim that ended without
    finishing the job (released, its attempt failed, its lease expired, the job cancelled) is
    `done` and `cancelled`, so "every claim cancelled" means "nobody holds it"; a claim that finished
    the job is `done` only."""

    op_id: str
    site_id: str
    done: bool = False
    cancelled: bool = False


class Job(_Deferred):
    """A job as the API serves it: the NMDC Runtime's shape plus status, leases and attempts."""

    id: str
    workflow: WorkflowRef
    config: JobConfig
    created_at: str
    name: str | None = None
    description: str | None = None
    created_by: str | None = Field(
        default=None,
        description="the site that created the job with POST /jobs (none: a trigger made it)",
    )
    status: JobStatus = JobStatus.pending
    trigger_id: str | None = None
    claims: list[Claim] = Field(default_factory=list, description="the claims of the current run")
    attempts: int = Field(
        default=0,
        description="attempts used: each claim takes one, a release gives it back; an error result or "
        "an expired lease keeps it used, and the job fails once max_attempts are used",
    )
    max_attempts: int | None = Field(default=None, description="the workflow's limit, as of the last claim")
    site_id: str | None = Field(default=None, description="the site holding (or last holding) the job")
    operation_id: str | None = Field(default=None, description="the live or last operation")
    lease_expires_at: str | None = None
    cancel_requested: bool = Field(
        default=False, description="cancelled while claimed: the holder is told on its next heartbeat"
    )
    result: Any = None
    last_error: Any = Field(
        default=None,
        description="the error that ended the last failed attempt: the operation's error result, or "
        "{code: lease_expired, message} when its holder stopped renewing the lease",
    )
    tagged_at: str | None = Field(default=None, description="when its object got the triggering type")
    outputs: list[InputRef] = Field(
        default_factory=list,
        description="the objects its completion registered, with their types and declared output names "
        "(as the jobs made from them see them in their inputs)",
    )
    run: int = Field(default=1, description="1, and one more for each rerun")
    previous_claims: list[Claim] = Field(default_factory=list, description="the claims of earlier runs")
    updated_at: str | None = None
    finished_at: str | None = None
    version: int = Field(default=0, description="one more with every change of state (not heartbeats)")
    workflow_missing: bool = Field(
        default=False,
        description="the job's workflow is no longer in the registry: nobody can claim the job "
        "until the workflow is back (GET /jobs?workflow_missing=true lists such jobs)",
    )

    @classmethod
    def new(
        cls,
        workflow_id: str,
        object_id: str,
        created_at: str,
        trigger_id: str | None = None,
        tagged_at: str | None = None,
        lineage: Lineage | None = None,
    ) -> Job:
        """A new job of `workflow_id` on `object_id`: pending, keyed (workflow, object). With
        `lineage` (a trigger's job) its config says where it comes from: `parent_job_id` (the job
        whose output the object is, or null), `root_object_id` and `inputs`."""
        config: dict[str, Any] = {"object_id": object_id}
        if lineage is not None:
            config["parent_job_id"] = lineage.generated_by
            config["root_object_id"] = lineage.root_object_id
            config["inputs"] = [i.model_dump(mode="json") for i in lineage.inputs]
        return cls.model_validate(
            {
                "id": job_id_for(workflow_id, object_id),
                "workflow": {"id": workflow_id},
                "config": config,
                "created_at": created_at,
                "updated_at": created_at,
                "trigger_id": trigger_id,
                "tagged_at": tagged_at,
            }
        )

    @classmethod
    def submitted(
        cls,
        workflow_id: str,
        config: dict[str, Any],
        created_at: str,
        created_by: str,
        name: str | None = None,
        description: str | None = None,
    ) -> Job:
        """A job a site creates (POST /jobs): pending, keyed (workflow, config_key(config)), so the
        same workflow and config are the same job however often they are posted."""
        return cls.model_validate(
            {
                "id": job_id_for(workflow_id, config_key(config)),
                "workflow": {"id": workflow_id},
                "config": config,
                "created_at": created_at,
                "updated_at": created_at,
                "name": name,
                "description": description,
                "created_by": created_by,
            }
        )

    @property
    def workflow_id(self) -> str:
        return self.workflow.id

    @property
    def object_id(self) -> str | None:
        return self.config.object_id

    @property
    def key(self) -> str:
        """The jobs table's key, `{workflow_id}#{object_id}` or `{workflow_id}#config:<digest>`: the
        id is its base64url."""
        key = job_key_from_id(self.id)
        if key is None:
            raise ValueError(f"'{self.id}' is not a job id")
        return key

    @property
    def parent_job_id(self) -> str | None:
        """The job whose output this job's object is (None: its object was tagged from outside)."""
        parent = (self.config.model_extra or {}).get("parent_job_id")
        return parent if isinstance(parent, str) else None

    @property
    def root_object_id(self) -> str | None:
        """The object this job's chain started from; a job of a plain tag is its own root. None for
        a job created over the API without `config.object_id`: it is in no chain."""
        root = (self.config.model_extra or {}).get("root_object_id")
        return root if isinstance(root, str) and root else self.config.object_id

    @property
    def inputs(self) -> list[InputRef]:
        """What the chain gave this job: its object and every output of its ancestors."""
        raw = (self.config.model_extra or {}).get("inputs")
        if not isinstance(raw, list):
            return [InputRef(object_id=self.config.object_id)] if self.config.object_id else []
        return [InputRef.model_validate(i) for i in raw if isinstance(i, dict)]

    def claim_index(self, op_id: str) -> int | None:
        """Where the claim of operation `op_id` is in `claims` (None: not in this run)."""
        return next((i for i, c in enumerate(self.claims) if c.op_id == op_id), None)


class Transition(_Deferred):
    """One change of a job's state, stored with it (`version` goes up by one): what happened, when,
    and who did it. The jobs table's stream turns it into events (see JobEventType)."""

    events: list[JobEventType]
    at: str
    by: str = Field(description="a site id, `operator:<name>`, or `service`")
    details: dict[str, Any] = Field(default_factory=dict)


# --------------------------------------------------------------------------- operations


class Operation(_Deferred):
    """The NMDC Runtime's Operation: `metadata.job` is the job, as it was when claimed."""

    id: str
    done: bool = False
    expire_time: str
    result: Any = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class OperationRecord(_Deferred):
    """An operation as the service keeps it: what sites see (`served`), and what the rules need."""

    id: str
    job_id: str
    site_id: str
    attempt: int
    claim_index: int = Field(description="where its claim is in the job's claims")
    lease_seconds: int
    max_attempts: int
    created_at: str
    updated_at: str
    done: bool = False
    expire_time: str
    result: Any = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    def served(self) -> Operation:
        return Operation(
            id=self.id,
            done=self.done,
            expire_time=self.expire_time,
            result=self.result,
            metadata=self.metadata,
        )
