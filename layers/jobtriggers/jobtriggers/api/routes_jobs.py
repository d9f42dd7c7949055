"""Jobs: GET /jobs (a MongoDB-subset `filter`, pages, projection), GET /jobs/{id}, POST /jobs (a
site that may create jobs), POST /jobs/{id}:cancel (the site that created the job).

Claiming (`POST /jobs/{id}:claim`, `POST /jobs:claim`, releases) lives in routes_claims. What a
filter costs and which index it reads: logic/listing.py.
"""

from __future__ import annotations

from typing import Annotated

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Query

from jobtriggers import wiring
from jobtriggers.api.auth import require_site_id
from jobtriggers.api.listing import list_query
from jobtriggers.api.params import (
    SITE_TOKEN,
    FilterQuery,
    JobIdPath,
    PageSizeQuery,
    PageTokenQuery,
    ProjectionQuery,
)
from jobtriggers.api.routes_claims import calling_site
from jobtriggers.api.schemas import JobList, NewJob
from jobtriggers.errors import ValidationFailed
from jobtriggers.logic.listing import ListQuery, with_registry_state
from jobtriggers.models import Job, JobStatus, iso, utcnow

router = Router()


@router.get("/jobs", tags=["jobs"], security=SITE_TOKEN)
def list_jobs(
    # min_length 1: an empty id would reach DynamoDB as an empty key value (a 500, found by the fuzzer).
    workflow_id: Annotated[str | None, Query(min_length=1, max_length=256)] = None,
    object_id: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    status: Annotated[JobStatus | None, Query()] = None,
    site_id: Annotated[
        str | None, Query(min_length=1, max_length=100, description="the site holding the job")
    ] = None,
    filter: FilterQuery = None,
    projection: ProjectionQuery = None,
    max_page_size: PageSizeQuery = 20,
    page_token: PageTokenQuery = None,
    claimable: Annotated[
        bool, Query(description="only jobs that can be claimed now: pending, or claimed with an ended lease")
    ] = False,
    workflow_missing: Annotated[
        bool | None,
        Query(
            description="only jobs whose workflow is (true) or is not (false) missing from the registry "
            "(a triggered job whose workflow left it: nobody can claim it)"
        ),
    ] = None,
) -> JobList:
    """Jobs, oldest first within each index partition read. Without a filter, every job (unlike the
    NMDC Runtime, which then shows a site the jobs it has not claimed: send
    `{"claims.site_id": {"$ne": "<site>"}}` for that). The query parameters are equalities that
    must hold besides the filter."""
    require_site_id()
    query = list_query(
        filter_json=filter,
        projection=projection,
        max_page_size=max_page_size,
        page_token=page_token,
        parameters={
            "workflow.id": ("workflow_id", workflow_id),
            "config.object_id": ("object_id", object_id),
            "status": ("status", status.value if status else None),
            "site_id": ("site_id", site_id),
            "workflow_missing": ("workflow_missing", workflow_missing),
        },
    )
    if claimable:
        if workflow_missing:
            raise ValidationFailed(
                "jobs whose workflow is missing are never claimable; send one of the two",
                loc=["query", "workflow_missing"],
            )
        others = [k for k, v in (("object_id", object_id), ("status", status), ("site_id", site_id)) if v]
        if others:
            raise ValidationFailed(
                f"claimable=true combines with workflow_id and filter only, not {', '.join(others)}",
                loc=["query", "claimable"],
            )
        return list_claimable_jobs(query, workflow_id)
    page = wiring.job_listing().page(query)
    return JobList(resources=page.resources, next_page_token=page.next_page_token)


def list_claimable_jobs(query: ListQuery, workflow_id: str | None) -> JobList:
    """claimable=true: the pending queue, then ended leases (by_status / by_workflow_status) of one
    workflow (the parameter, or the one the filter pins) or of all, without the jobs of workflows
    no longer in the registry (nobody can claim those); the filter applies to what is read."""
    if workflow_id is None:
        pinned = query.filter.required_values("workflow.id")
        if pinned is not None and len(pinned) == 1:
            (workflow_id,) = pinned
    found, token = wiring.jobs().claimable_page(workflow_id, iso(utcnow()), query.limit, query.page_token)
    listing = wiring.job_listing()
    resources = [j for j in listing.served(found, query) if not j.get("workflow_missing")]
    return JobList(resources=resources, next_page_token=token)


@router.get("/jobs/<job_id>", tags=["jobs"], security=SITE_TOKEN)
def get_job(job_id: JobIdPath) -> Job:
    require_site_id()
    [job] = with_registry_state([wiring.jobs().get(job_id)], wiring.registry())
    return job


@router.post(
    "/jobs",
    tags=["jobs"],
    security=SITE_TOKEN,
    responses={
        201: {"description": "the job, created now"},
        200: {"description": "the job of this workflow and config, which existed already"},
    },
)
def create_job(body: NewJob) -> Response[Job]:
    """Create a job, as NMDC's workflow automation does (sites with the can_create_jobs
    permission; 403 otherwise). Its identity is `workflow.id` + `config`: posting the same again
    answers 200 with the job that exists, so retries never make a second one. A workflow the
    registry does not know (a name with a version) is claimed only by the site that created the job."""
    site = calling_site()
    job, created = wiring.job_creator().create(
        site, body.workflow.id, body.config, name=body.name, description=body.description
    )
    [served] = with_registry_state([job], wiring.registry())
    return Response(
        status_code=201 if created else 200, content_type=content_types.APPLICATION_JSON, body=served
    )


@router.post("/jobs/<job_id>:cancel", tags=["jobs"], security=SITE_TOKEN)
def cancel_job(job_id: JobIdPath) -> Job:
    """Cancel a job this site created: a pending (or failed) one is cancelled now; a claimed one is
    asked to stop (its holder reads it in the answer to its next heartbeat). 403 for a job this
    site did not create (an operator cancels any: jobtriggers jobs cancel)."""
    site = calling_site()
    job = wiring.job_steering().cancel(job_id, by=site.id, creator=site.id)
    [served] = with_registry_state([job], wiring.registry())
    return served
