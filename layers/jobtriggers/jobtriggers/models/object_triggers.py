"""`GET /objects/{id}/triggers`: each of an object's types, its triggers and their jobs (a read
view: the stream path never builds it, so it is not in the models a cold start imports)."""

from __future__ import annotations

from pydantic import Field

from jobtriggers.models import JobStatus, _Deferred


class TriggerJobRef(_Deferred):
    """A job as `GET /objects/{id}/triggers` names it."""

    id: str
    workflow_id: str
    status: JobStatus
    workflow_missing: bool = False


class TypeTrigger(_Deferred):
    """One trigger of one of an object's types, and the job it made (or why there is none)."""

    trigger_id: str | None = Field(description="None: a job no trigger made (POST /jobs)")
    workflow_id: str
    workflow_missing: bool = Field(
        default=False, description="the trigger's workflow is not in the registry: it makes no job"
    )
    job: TriggerJobRef | None = None
    explanation: str


class ObjectTypeTriggers(_Deferred):
    """One type an object carries, and what it triggers."""

    object_type_id: str
    assigned_at: str | None = None
    assigned_by: str | None = None
    in_registry: bool = True
    triggers: list[TypeTrigger] = Field(default_factory=list)
    explanation: str | None = Field(default=None, description="set when the type triggers nothing")


class ObjectTriggers(_Deferred):
    """GET /objects/{id}/triggers: for each of the object's types, each trigger and its job; and
    the object's other jobs, which no current trigger explains (a workflow or trigger removed)."""

    object_id: str
    was_generated_by: str | None = Field(default=None, description="the job whose output the object is")
    types: list[ObjectTypeTriggers] = Field(default_factory=list)
    other_jobs: list[TypeTrigger] = Field(
        default_factory=list,
        description="jobs of the object that none of its types' current triggers makes, each explained",
    )
    summary: str
