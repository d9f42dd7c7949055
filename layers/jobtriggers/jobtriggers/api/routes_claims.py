"""Claiming jobs: POST /jobs/{id}:claim, POST /jobs:claim (the next job), POST /jobs/{id}:release.

API Gateway routes whole path segments only: the template routes `POST /jobs/{job_id}` and
`POST /jobs:claim`, and the resolver tells `:claim` from `:release` here (Powertools' route
patterns accept `:`, and job ids never contain one). The rules live in logic/claims.py.
"""

from __future__ import annotations

from typing import Annotated

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Body
from pydantic import BaseModel, ConfigDict, Field

from jobtriggers.api.auth import require_site_id
from jobtriggers.api.params import SITE_TOKEN, JobIdPath
from jobtriggers.dal.claims import JobClaims
from jobtriggers.dal.registry import RegistryRepository
from jobtriggers.dal.sites import SiteRepository
from jobtriggers.errors import UnauthorizedError
from jobtriggers.logic.claims import ClaimService, SiteRef
from jobtriggers.models import ID_MAX_LENGTH, Operation

router = Router()


class ClaimNextRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    workflow_id: str | None = Field(
        default=None, min_length=1, max_length=ID_MAX_LENGTH, description="only jobs of this workflow"
    )


def calling_site() -> SiteRef:
    """The calling site with its capabilities (read strongly consistent from the sites table)."""
    site_id = require_site_id()
    site = SiteRepository().get_site(site_id)
    if site is None:  # deleted after the authorizer let the token through
        raise UnauthorizedError(f"site '{site_id}' no longer exists")
    return SiteRef.of(site.id, site.capability_ids)


def claim_service() -> ClaimService:
    return ClaimService(JobClaims(), RegistryRepository())


@router.post("/jobs/<job_id>:claim", tags=["jobs"], security=SITE_TOKEN)
def claim_job(job_id: JobIdPath) -> Operation:
    """Claim a job: 200 with its operation (the same one again when this site already holds the
    lease). 409 when another site holds a live lease or the job is done/failed; 403 when the site
    lacks a capability the workflow needs."""
    site = calling_site()
    return claim_service().claim(job_id, site).operation


@router.post("/jobs/<job_id>:release", tags=["jobs"], security=SITE_TOKEN)
def release_job(job_id: JobIdPath) -> Operation:
    """Give a claimed job back (holder only): the job is pending again, the operation done and
    `metadata.cancelled`."""
    site = calling_site()
    return claim_service().release(job_id, site)


@router.post(
    "/jobs:claim",
    tags=["jobs"],
    security=SITE_TOKEN,
    responses={
        200: {"description": "the operation of the job this site now holds"},
        204: {"description": "no job this site may run is claimable now", "content": {}},
    },
)
def claim_next_job(
    body: Annotated[ClaimNextRequest | None, Body(description="optional: {workflow_id}")] = None,
) -> Response[Operation | None]:
    """Claim the oldest claimable job this site may run, or 204 when there is none."""
    site = calling_site()
    operation = claim_service().claim_next(site, body.workflow_id if body else None)
    if operation is None:
        # Not JSON, so Powertools sends no body at all (a JSON None would be the text "null").
        return Response(status_code=204, content_type=content_types.TEXT_PLAIN, body=None)
    return Response(status_code=200, content_type=content_types.APPLICATION_JSON, body=operation)
