"""Operations: GET /operations (the calling site's own), GET /operations/{id}, PATCH /operations/{id}.

Shapes are the NMDC Runtime's, so its site client's `get_operation`, `update_operation` and
`list_operations` work unchanged. The rules of PATCH live in logic/claims.py.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Path, Query

from jobtriggers import wiring
from jobtriggers.api.auth import require_site_id
from jobtriggers.api.params import SITE_TOKEN
from jobtriggers.api.routes_claims import calling_site
from jobtriggers.api.schemas import OperationList, OperationPatch
from jobtriggers.errors import ValidationFailed
from jobtriggers.logic.claims import Report
from jobtriggers.models import Operation

router = Router()

OperationIdPath = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_\-]+$")]
_FILTER_EXAMPLE = '{"done": false}'


def _filter_error(msg: str) -> ValidationFailed:
    return ValidationFailed(msg, loc=["query", "filter"])


def parse_operation_filter(raw: str | None, site_id: str) -> bool | None:
    """The NMDC Runtime's `filter` (JSON equalities) for operations: `done` and `metadata.site_id`
    (which can only be the caller: a site sees its own operations). Returns the `done` wanted."""
    if raw is None or not raw.strip():
        return None
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise _filter_error(f"filter is not valid JSON ({exc.msg}); send e.g. {_FILTER_EXAMPLE}") from exc
    if not isinstance(value, dict):
        raise _filter_error(f"filter must be a JSON object such as {_FILTER_EXAMPLE}")
    done: bool | None = None
    for key, wanted in value.items():
        if key == "done":
            if not isinstance(wanted, bool):
                raise _filter_error(f"filter value of 'done' must be true or false, not {json.dumps(wanted)}")
            done = wanted
        elif key == "metadata.site_id":
            if wanted != site_id:
                raise _filter_error(
                    f"a site sees only its own operations; metadata.site_id must be '{site_id}'"
                )
        else:
            raise _filter_error(f"filter key '{key}' is not supported; use done, metadata.site_id")
    return done


@router.get("/operations", tags=["operations"], security=SITE_TOKEN)
def list_operations(
    done: Annotated[bool | None, Query(description="only finished (true) or live (false) operations")] = None,
    filter: Annotated[
        str | None,
        Query(max_length=2000, description=f"JSON equalities on done, metadata.site_id: {_FILTER_EXAMPLE}"),
    ] = None,
    max_page_size: Annotated[int, Query(ge=1, le=1000)] = 20,
    page_token: Annotated[
        str | None, Query(max_length=4096, description="next_page_token of the previous page")
    ] = None,
) -> OperationList:
    """The calling site's operations, oldest first, one page at a time."""
    site_id = require_site_id()
    from_filter = parse_operation_filter(filter, site_id)
    if done is not None and from_filter is not None and done != from_filter:
        raise _filter_error("done and the filter's done disagree; send one")
    operations, token = wiring.operations().list_page(
        site_id=site_id,
        done=done if done is not None else from_filter,
        limit=max_page_size,
        page_token=page_token,
    )
    return OperationList(resources=[op.served() for op in operations], next_page_token=token)


@router.get("/operations/<operation_id>", tags=["operations"], security=SITE_TOKEN)
def get_operation(operation_id: OperationIdPath) -> Operation:
    """One of the calling site's operations (403 for another site's)."""
    return wiring.claim_service().own_operation(operation_id, calling_site()).served()


@router.patch("/operations/<operation_id>", tags=["operations"], security=SITE_TOKEN)
def update_operation(operation_id: OperationIdPath, body: OperationPatch) -> Operation:
    """Report on a job the site holds (holder only). Any accepted PATCH renews the lease;
    `done: true` with a result finishes the job; with an error result `{code, message, details?}`
    the job is pending again while attempts remain, else failed. 409 once the operation is
    finished or fenced off (its lease ended and another claim took the job). `done: true` with
    `result: {"outputs": [...]}` (each a DRS object with its `types`) registers the outputs in the
    same transaction (docs/architecture.md, "Outputs"); the same completion sent again is 200."""
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
