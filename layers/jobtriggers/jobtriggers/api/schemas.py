"""Request and response bodies of the sites' API, in one place (the domain's models are in
jobtriggers.models; these are the shapes that only HTTP has). Built on first use, not at import."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from jobtriggers.models import ID_MAX_LENGTH, Job, Operation


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


class JobList(BaseModel):
    model_config = ConfigDict(defer_build=True)

    resources: list[Job]
    next_page_token: str | None = None


class OperationList(BaseModel):
    model_config = ConfigDict(defer_build=True)

    resources: list[Operation]
    next_page_token: str | None = None
