"""Request and response bodies of the sites' API, in one place (the domain's models are in
jobtriggers.models; these are the shapes that only HTTP has). Built on first use, not at import."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from jobtriggers.models import ID_MAX_LENGTH, JOB_ID_MAX_LENGTH, Job, WorkflowId


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)


class ClaimNextRequest(_Body):
    """The body of POST /jobs:claim (optional)."""

    workflow_id: str | None = Field(
        default=None, min_length=1, max_length=ID_MAX_LENGTH, description="only jobs of this workflow"
    )


class OperationPatch(_Body):
    """The body of PATCH /operations/{id} (the NMDC Runtime's UpdateOperationRequest)."""

    done: bool | None = None
    result: Any = None
    metadata: dict[str, Any] | None = Field(default=None)


class NewJobWorkflow(_Body):
    id: WorkflowId = Field(
        description="the workflow: a registry workflow id, or any name with a version "
        '("Metagenome Annotation: v1.1.0"), which only this site may then claim'
    )


class NewJob(_Body):
    """The body of POST /jobs: the NMDC Runtime's JobIn (a job record without id and created_at)."""

    workflow: NewJobWorkflow
    config: dict[str, Any] = Field(description="what the job runs with; with workflow.id, the job's identity")
    name: str | None = Field(default=None, max_length=1024)
    description: str | None = Field(default=None, max_length=10_000)
    # What NMDC's scheduler sends besides, as its job records carry them: accepted, never stored
    # (the service assigns the id and creation time; a new job has no claims).
    claims: list[Any] = Field(default_factory=list, description="[] (a new job has no claims)")
    id: Any = Field(default=None, description="ignored: the service assigns the job's id")
    created_at: Any = Field(default=None, description="ignored: the service stamps the creation time")

    @field_validator("claims")
    @classmethod
    def _no_claims(cls, value: list[Any]) -> list[Any]:
        if value:
            raise ValueError("a new job has no claims; send [] or leave claims out")
        return value


class JobIds(_Body):
    """The body of POST /jobs/release (the NMDC Runtime's)."""

    job_ids: list[Annotated[str, Field(min_length=1, max_length=JOB_ID_MAX_LENGTH)]] = Field(
        min_length=1, max_length=100, description="the jobs to release (at most 100)"
    )


class ReleaseOutcome(BaseModel):
    model_config = ConfigDict(defer_build=True)

    job_id: str
    released: bool = Field(description="this site's claim of the job is released (now, or before)")
    status_code: int = Field(description="what POST /jobs/{id}:release answers for this job")
    detail: str | None = Field(default=None, description="why it was not released")
    operation_id: str | None = None


class ReleaseResults(BaseModel):
    model_config = ConfigDict(defer_build=True)

    released: list[Job] = Field(description="the jobs released, as they now are (the NMDC Runtime's answer)")
    results: list[ReleaseOutcome] = Field(description="per job id, in the order sent, what happened")


class JobList(BaseModel):
    """A page of jobs: each as GET /jobs/{id} serves it, or only the fields of `projection`."""

    model_config = ConfigDict(defer_build=True)

    resources: list[dict[str, Any]]
    next_page_token: str | None = None


class OperationList(BaseModel):
    """A page of operations: each as GET /operations/{id} serves it, or only the projection's fields."""

    model_config = ConfigDict(defer_build=True)

    resources: list[dict[str, Any]]
    next_page_token: str | None = None
