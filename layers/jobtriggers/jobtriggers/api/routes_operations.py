"""Operations: GET /operations (the calling site's own), GET /operations/{id}, PATCH /operations/{id}.

Shapes are the NMDC Runtime's, so its site client's `get_operation`, `update_operation` and
`list_operations`, and NMDC's workflow automation's `list_ops`, work unchanged. The rules of PATCH
live in logic/claims.py; what a filter costs, in logic/listing.py.
"""

from __future__ import annotations

from typing import Annotated

from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Path, Query

from jobtriggers import wiring
from jobtriggers.api.auth import require_site_id
from jobtriggers.api.listing import list_query
from jobtriggers.api.params import SITE_TOKEN, FilterQuery, PageSizeQuery, PageTokenQuery, ProjectionQuery
from jobtriggers.api.routes_claims import calling_site
from jobtriggers.api.schemas import OperationList, OperationPatch
from jobtriggers.logic.claims import Report
from jobtriggers.models import Operation

router = Router()

OperationIdPath = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_\-]+$")]


@router.get("/operations", tags=["operations"], security=SITE_TOKEN)
def list_operations(
    done: Annotated[bool | None, Query(description="only finished (true) or live (false) operations")] = None,
    filter: FilterQuery = None,
    projection: ProjectionQuery = None,
    max_page_size: PageSizeQuery = 20,
    page_token: PageTokenQuery = None,
) -> OperationList:
    """The calling site's operations, oldest first, one page at a time. The filter applies to each
    as GET /operations/{id} serves it (e.g. `{"done": false, "metadata.job.workflow.id": "..."}`)."""
    site_id = require_site_id()
    query = list_query(
        filter_json=filter,
        projection=projection,
        max_page_size=max_page_size,
        page_token=page_token,
        parameters={"done": ("done", done)},
    )
    page = wiring.operation_listing().page(site_id, query)
    return OperationList(resources=page.resources, next_page_token=page.next_page_token)


@router.get("/operations/<operation_id>", tags=["operations"], security=SITE_TOKEN)
def get_operation(operation_id: OperationIdPath) -> Operation:
    """One of the calling site's operations (403 for another site's)."""
    return wiring.claim_service().own_operation(operation_id, calling_site()).served()


@router.patch("/operations/<operation_id>", tags=["operations"], security=SITE_TOKEN)
def update_operation(operation_id: OperationIdPath, body: OperationPatch) -> Operation:
    """Report on a job the site holds (holder only). Any accepted PATCH renews the lease;
    `done: true` with a result finishes the job; with an error result `{code, message, details?}`
    the job is pending again while attempts remain, else failed. 409 once the operation is
    finished or fenced off (its lease ended and another claim took the job). `metadata` may be the
    whole metadata just read, with keys added: the service's own keys (job, site_id, attempt,
    lease_expires_at, cancel_requested, cancelled) are accepted unchanged and kept as they are;
    changing job, site_id or attempt is a 422.
    `done: true` with `result: {"outputs": [...]}` (each a DRS object with its `types`) registers the
    outputs in the same transaction (docs/architecture.md, "Outputs"); the same completion sent again
    is 200."""
    sent = body.model_fields_set
    headers = router.current_event.headers
    report = Report(
        done=body.done,
        result=body.result,
        result_sent="result" in sent,
        metadata=body.metadata,
        host=headers.get("Host") or headers.get("host"),
    )
    return wiring.claim_service().update_operation(operation_id, calling_site(), report).served()
