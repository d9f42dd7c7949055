"""Claiming jobs: POST /jobs/{id}:claim, POST /jobs:claim (the next job), POST /jobs/{id}:release,
POST /jobs/release (several at once).

API Gateway routes whole path segments only: the template routes `POST /jobs/{job_id}` and
`POST /jobs:claim`, and the resolver tells `:claim` from `:release` here (Powertools' route
patterns accept `:`, and job ids never contain one). The rules live in logic/claims.py.

`POST /jobs:claim` honours an `Idempotency-Key` header (Powertools' Idempotency utility, records
in IdempotencyTable for an hour): a repeat of the key by the same site answers what the first
request answered (the same operation, or the same 204) without claiming again, so a site may
retry a claim whose answer it lost. Without the header (the NMDC site client sends none) each
request is a new claim, as before.
"""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Body, Header

from jobtriggers import wiring
from jobtriggers.api.auth import require_site_id
from jobtriggers.api.params import SITE_TOKEN, JobIdPath
from jobtriggers.api.schemas import ClaimNextRequest, JobIds, ReleaseOutcome, ReleaseResults
from jobtriggers.dal.dynamo import raise_store_error
from jobtriggers.errors import (
    ConflictError,
    JobTriggersError,
    UnauthorizedError,
    ValidationFailed,
)
from jobtriggers.logic.claims import SiteRef
from jobtriggers.models import Job, Operation

router = Router()

IDEMPOTENCY_HEADER = "Idempotency-Key"
# How long a key is remembered: far longer than any client retries one claim.
IDEMPOTENCY_SECONDS = 3600
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"  # printable ASCII, no spaces


def calling_site() -> SiteRef:
    """The calling site with its capabilities (read strongly consistent from the sites table)."""
    site_id = require_site_id()
    site = wiring.sites().get_site(site_id)
    if site is None:  # deleted after the authorizer let the token through
        raise UnauthorizedError(f"site '{site_id}' no longer exists")
    return SiteRef.of(site.id, site.capability_ids, can_create_jobs=site.can_create_jobs)


@router.post("/jobs/<job_id>:claim", tags=["jobs"], security=SITE_TOKEN)
def claim_job(job_id: JobIdPath) -> Operation:
    """Claim a job: 200 with its operation (the same one again when this site already holds the
    lease). 409 when another site holds a live lease or the job is done/failed; 403 when the site
    lacks a capability the workflow needs."""
    site = calling_site()
    return wiring.claim_service().claim(job_id, site).operation.served()


@router.post("/jobs/<job_id>:release", tags=["jobs"], security=SITE_TOKEN)
def release_job(job_id: JobIdPath) -> Operation:
    """Give a claimed job back (holder only): the job is pending again, its claim and operation
    done and cancelled. 404 for a job that does not exist (NMDC's automation reads it as "not found
    or already released"), 409 for one nobody holds, 403 for another site's."""
    site = calling_site()
    return wiring.claim_service().release(job_id, site).served()


@router.post("/jobs/release", tags=["jobs"], security=SITE_TOKEN)
def release_jobs(body: JobIds) -> ReleaseResults:
    """Release several jobs this site holds (the NMDC Runtime's bulk release, as operators run it
    from a file of ids): each as `POST /jobs/{id}:release` would, ids sent twice once. `released`
    lists the jobs released, as they now are; `results` says per id what happened (404 not found,
    409 not claimed, 403 held by another site). A store fault stops the request (5xx): what was
    released stays released, and sending the same ids again finishes the rest."""
    site = calling_site()
    service = wiring.claim_service()
    jobs = wiring.jobs()
    released: list[Job] = []
    results: list[ReleaseOutcome] = []
    for job_id in dict.fromkeys(body.job_ids):
        try:
            op = service.release(job_id, site)
        except JobTriggersError as exc:
            if exc.status_code >= 500:
                raise
            results.append(
                ReleaseOutcome(
                    job_id=job_id, released=False, status_code=exc.status_code, detail=str(exc.detail)
                )
            )
            continue
        released.append(jobs.get(job_id))
        results.append(ReleaseOutcome(job_id=job_id, released=True, status_code=200, operation_id=op.id))
    return ReleaseResults(released=released, results=results)


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
    idempotency_key: Annotated[
        str | None,
        Header(
            pattern=IDEMPOTENCY_KEY_PATTERN,
            description="one per logical claim (e.g. a UUID), the same on each of its retries: a repeat "
            "by this site answers what the first request answered, for an hour",
        ),
    ] = None,
) -> Response[Operation | None]:
    """Claim a claimable job this site may run, or 204 when there is none. Send an
    `Idempotency-Key` header (one per logical claim, the same on its retries) to make retries safe:
    a repeat answers what the first request answered; 422 when the key was used with another body,
    409 while the first request with the key is still being answered."""
    site = calling_site()
    workflow_id = body.workflow_id if body else None
    if idempotency_key is None:
        claimed = wiring.claim_service().claim_next(site, workflow_id)
        operation = claimed.served() if claimed is not None else None
    else:
        operation = claim_next_once(site, workflow_id, idempotency_key)
    if operation is None:
        # Not JSON, so Powertools sends no body at all (a JSON None would be the text "null").
        return Response(status_code=204, content_type=content_types.TEXT_PLAIN, body=None)
    return Response(status_code=200, content_type=content_types.APPLICATION_JSON, body=operation)


def claim_next_once(site: SiteRef, workflow_id: str | None, key: str) -> Operation | None:
    """claim-next at most once per (site, Idempotency-Key); a repeat gets the first answer."""
    # Imported here: only claims with a key pay for the idempotency utility (and the boto3 it loads).
    from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function
    from aws_lambda_powertools.utilities.idempotency.exceptions import (
        IdempotencyAlreadyInProgressError,
        IdempotencyPersistenceLayerError,
        IdempotencyValidationError,
    )

    from jobtriggers.dal.idempotency import claim_records

    config = IdempotencyConfig(
        event_key_jmespath="[site_id, key]",
        payload_validation_jmespath="workflow_id",
        raise_on_no_idempotency_key=True,
        expires_after_seconds=IDEMPOTENCY_SECONDS,
    )
    context = router.lambda_context
    if context is not None and hasattr(context, "get_remaining_time_in_millis"):
        # An invocation that dies mid-claim leaves its key "in progress" only until it would have
        # timed out; a retry after that claims afresh.
        config.register_lambda_context(context)

    def claim(request: dict[str, Any]) -> dict[str, Any] | None:
        operation = wiring.claim_service().claim_next(site, request["workflow_id"])
        return operation.served().model_dump(mode="json") if operation is not None else None

    once = idempotent_function(
        claim,
        data_keyword_argument="request",
        persistence_store=claim_records(),
        config=config,
        key_prefix="claim-next",
    )
    try:
        answer = once(request={"site_id": site.id, "key": key, "workflow_id": workflow_id})
    except IdempotencyValidationError as exc:
        raise ValidationFailed(
            f"this {IDEMPOTENCY_HEADER} was used with another workflow_id; send a new key for a new claim",
            loc=["header", IDEMPOTENCY_HEADER],
        ) from exc
    except IdempotencyAlreadyInProgressError as exc:
        raise ConflictError(
            f"a claim with this {IDEMPOTENCY_HEADER} is still being answered; retry it in a second"
        ) from exc
    except IdempotencyPersistenceLayerError as exc:
        # The idempotency table failed (throttled, unreachable): as any other store failure.
        cause = exc.__cause__
        if isinstance(cause, JobTriggersError):
            raise cause from exc
        failure = cause if isinstance(cause, Exception) else exc
        raise_store_error(failure, f"keep the {IDEMPOTENCY_HEADER} of a claim")
    return Operation.model_validate(answer) if answer is not None else None
