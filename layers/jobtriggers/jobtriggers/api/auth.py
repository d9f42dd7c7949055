"""Who is calling: the site id API Gateway's Lambda authorizer put in the request context.

The authorizer (functions/authorizer) checks the bearer token and returns the context
`{"site_id": ...}`; API Gateway REST passes it to the API as `requestContext.authorizer.site_id`
(the local runtime's gateway does the same). Routes that act for a site call `require_site_id()`;
the public registry routes do not (the template marks them `Authorizer: NONE`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.event_handler.api_gateway import BaseRouter

from jobtriggers import wiring
from jobtriggers.errors import UnauthorizedError

if TYPE_CHECKING:
    from jobtriggers.logic.tokens import TokenService

SITE_ID_CONTEXT_KEY = "site_id"


def site_id_from_event(event: Mapping[str, Any]) -> str | None:
    authorizer = (event.get("requestContext") or {}).get("authorizer") or {}
    site_id = authorizer.get(SITE_ID_CONTEXT_KEY) if isinstance(authorizer, Mapping) else None
    return site_id if isinstance(site_id, str) and site_id else None


def require_site_id() -> str:
    """The calling site's id; 401 when the request did not pass the authorizer."""
    site_id = site_id_from_event(BaseRouter.current_event.raw_event)
    if site_id is None:
        raise UnauthorizedError("not authenticated: send Authorization: Bearer <token> from POST /token")
    return site_id


def authorize(event: Mapping[str, Any], service: TokenService | None = None) -> dict[str, Any]:
    """The Lambda authorizer (TOKEN type): an Allow policy for the whole API with the context
    `{"site_id"}` for a valid token; for anything else `Exception("Unauthorized")`, which API
    Gateway answers with 401. Faults (the store or the key unreachable) propagate: a 500, not a 401."""
    from aws_lambda_powertools.utilities.data_classes.api_gateway_authorizer_event import (
        APIGatewayAuthorizerResponse,
        parse_api_gateway_arn,
    )

    from jobtriggers.logic.tokens import bearer_token
    from jobtriggers.observability import logger

    service = service or wiring.token_service()
    try:
        site_id = service.verify(bearer_token(event.get("authorizationToken")))
    except UnauthorizedError as exc:
        logger.info("token refused", extra={"reason": str(exc.detail)})
        raise Exception("Unauthorized") from None  # the string API Gateway expects
    arn = parse_api_gateway_arn(str(event["methodArn"]))
    policy = APIGatewayAuthorizerResponse(
        principal_id=site_id,
        region=arn.region,
        aws_account_id=arn.aws_account_id,
        api_id=arn.api_id,
        stage=arn.stage,
        context={SITE_ID_CONTEXT_KEY: site_id},
        partition=arn.partition,
    )
    policy.allow_all_routes()
    return policy.asdict()
