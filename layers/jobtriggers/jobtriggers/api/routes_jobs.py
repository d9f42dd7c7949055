"""Jobs, read side: GET /jobs (filters, pages) and GET /jobs/{id}.

Claiming (`POST /jobs/{id}:claim`, `POST /jobs:claim`, `:release`) lives in its own router.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any

from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Query

from jobtriggers import wiring
from jobtriggers.api.auth import require_site_id
from jobtriggers.api.params import SITE_TOKEN, JobIdPath
from jobtriggers.api.schemas import JobList
from jobtriggers.errors import ValidationFailed
from jobtriggers.models import Job, JobStatus, iso, utcnow

router = Router()

# The NMDC Runtime's site client filters jobs with a JSON object of equalities on these fields.
FILTER_FIELDS = {"workflow.id": "workflow_id", "config.object_id": "object_id", "status": "status"}
_FILTER_EXAMPLE = '{"workflow.id": "metag-1.0.0"}'


@dataclass(frozen=True)
class JobCriteria:
    """What GET /jobs selects on, after the query parameters and `filter` are merged."""

    workflow_id: str | None = None
    object_id: str | None = None
    status: str | None = None
    site_id: str | None = None

    def repository_filters(self) -> dict[str, Any]:
        return {
            "workflow_id": self.workflow_id,
            "object_id": self.object_id,
            "status": self.status,
            "site_id": self.site_id,
        }


def _filter_error(msg: str) -> ValidationFailed:
    return ValidationFailed(msg, loc=["query", "filter"])


def parse_job_filter(raw: str | None) -> dict[str, str]:
    """`filter` (a JSON object of equalities) as criteria; anything else is a 422 that names it."""
    if raw is None or not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise _filter_error(f"filter is not valid JSON ({exc.msg}); send e.g. {_FILTER_EXAMPLE}") from exc
    if not isinstance(value, dict):
        raise _filter_error(f"filter must be a JSON object such as {_FILTER_EXAMPLE}")
    criteria: dict[str, str] = {}
    for key, wanted in value.items():
        if key not in FILTER_FIELDS:
            raise _filter_error(
                f"filter key '{key}' is not supported; use {', '.join(sorted(FILTER_FIELDS))}"
            )
        if isinstance(wanted, dict):
            ops = ", ".join(str(op) for op in wanted) or "{}"
            raise _filter_error(
                f"filter operator {ops} on '{key}' is not supported: only equality, e.g. "
                f'{{"{key}": "value"}}'
            )
        if not isinstance(wanted, str) or not wanted:
            raise _filter_error(
                f"filter value of '{key}' must be a string (not empty), not {json.dumps(wanted)}"
            )
        criteria[FILTER_FIELDS[key]] = wanted
    if "status" in criteria and criteria["status"] not in JobStatus.__members__.values():
        raise _filter_error(
            f"filter status '{criteria['status']}' is not one of {', '.join(s.value for s in JobStatus)}"
        )
    return criteria


def job_criteria(
    *,
    workflow_id: str | None,
    object_id: str | None,
    status: JobStatus | None,
    site_id: str | None,
    filter_json: str | None,
) -> JobCriteria:
    params = {
        "workflow_id": workflow_id,
        "object_id": object_id,
        "status": status.value if status else None,
        "site_id": site_id,
    }
    for field, wanted in parse_job_filter(filter_json).items():
        if params[field] is not None and params[field] != wanted:
            raise _filter_error(f"{field}={params[field]} and the filter's '{wanted}' disagree; send one")
        params[field] = wanted
    return JobCriteria(**params)


@router.get("/jobs", tags=["jobs"], security=SITE_TOKEN)
def list_jobs(
    # min_length 1: an empty id would reach DynamoDB as an empty key value (a 500, found by the fuzzer).
    workflow_id: Annotated[str | None, Query(min_length=1, max_length=256)] = None,
    object_id: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    status: Annotated[JobStatus | None, Query()] = None,
    site_id: Annotated[
        str | None, Query(min_length=1, max_length=100, description="the site holding the job")
    ] = None,
    filter: Annotated[
        str | None,
        Query(
            max_length=2000,
            description=f"JSON equalities on workflow.id, config.object_id, status: {_FILTER_EXAMPLE}",
        ),
    ] = None,
    max_page_size: Annotated[int, Query(ge=1, le=1000)] = 20,
    page_token: Annotated[
        str | None, Query(max_length=4096, description="next_page_token of the previous page")
    ] = None,
    claimable: Annotated[
        bool, Query(description="only jobs that can be claimed now: pending, or claimed with an ended lease")
    ] = False,
    workflow_missing: Annotated[
        bool | None,
        Query(
            description="only jobs whose workflow is (true) or is not (false) missing from the registry; "
            "a page may then hold fewer jobs than asked for and still have a next_page_token"
        ),
    ] = None,
) -> JobList:
    require_site_id()
    criteria = job_criteria(
        workflow_id=workflow_id, object_id=object_id, status=status, site_id=site_id, filter_json=filter
    )
    if claimable:
        if workflow_missing:
            raise ValidationFailed(
                "jobs whose workflow is missing are never claimable; send one of the two",
                loc=["query", "workflow_missing"],
            )
        return list_claimable_jobs(criteria, max_page_size, page_token)
    found, token = wiring.jobs().list_page(
        **criteria.repository_filters(), limit=max_page_size, page_token=page_token
    )
    jobs = with_registry_state(found)
    if workflow_missing is not None:
        jobs = [j for j in jobs if j.workflow_missing == workflow_missing]
    return JobList(resources=jobs, next_page_token=token)


def list_claimable_jobs(criteria: JobCriteria, limit: int, page_token: str | None) -> JobList:
    """claimable=true: the pending queue, then ended leases (by_status / by_workflow_status),
    without the jobs of workflows no longer in the registry (nobody can claim those)."""
    others = [k for k in ("object_id", "status", "site_id") if getattr(criteria, k) is not None]
    if others:
        raise ValidationFailed(
            f"claimable=true combines with workflow_id only, not {', '.join(others)}",
            loc=["query", "claimable"],
        )
    found, token = wiring.jobs().claimable_page(criteria.workflow_id, iso(utcnow()), limit, page_token)
    jobs = [j for j in with_registry_state(found) if not j.workflow_missing]
    return JobList(resources=jobs, next_page_token=token)


def with_registry_state(jobs: list[Job]) -> list[Job]:
    """The jobs, each saying whether its workflow is missing from the registry (one BatchGetItem
    for the page's workflows)."""
    workflow_ids = sorted({j.workflow_id for j in jobs})
    existing = wiring.registry().existing_ids("workflow", workflow_ids) if workflow_ids else set()
    return [j.model_copy(update={"workflow_missing": j.workflow_id not in existing}) for j in jobs]


@router.get("/jobs/<job_id>", tags=["jobs"], security=SITE_TOKEN)
def get_job(job_id: JobIdPath) -> Job:
    require_site_id()
    [job] = with_registry_state([wiring.jobs().get(job_id)])
    return job
