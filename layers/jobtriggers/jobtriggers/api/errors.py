"""Exceptions -> HTTP, in one place, for every resolver: `{"detail": ...}` bodies.

- jobtriggers.errors.JobTriggersError subclasses answer with their own status code.
- 422 has one shape whatever raised it, FastAPI's (and so the NMDC Runtime's and the OpenAPI
  document's): `{"detail": [{"loc": [...], "msg": "...", "type": "..."}]}`, naming each field and
  what is wrong with it.
- Anything else is a fault: logged with its traceback, answered with a 500 that says nothing inside.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError as RouteNotFound
from aws_lambda_powertools.event_handler.exceptions import ServiceError
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)

from jobtriggers.errors import JobTriggersError, RetryableStoreError, ValidationFailed
from jobtriggers.observability import logger


def error_response(status_code: int, detail: Any, headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        status_code=status_code,
        content_type=content_types.APPLICATION_JSON,
        body={"detail": detail},
        headers=dict(headers or {}),
    )


def proxy_error(status_code: int, detail: Any) -> dict[str, Any]:
    """The same `{"detail": ...}` answer, as a finished API Gateway proxy response: for refusals
    made before a request is routed (and so before the exception handlers can see it)."""
    return {
        "statusCode": status_code,
        "headers": {"Content-Type": content_types.APPLICATION_JSON},
        "body": json.dumps({"detail": detail}),
        "isBase64Encoded": False,
    }


def _loc_text(loc: Sequence[Any]) -> str:
    return ".".join(str(p) for p in loc) or "request"


def validation_items(errors: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Pydantic/Powertools errors as `{"loc", "msg", "type"}`, without echoing the input back."""
    items = []
    for e in errors:
        loc = list(e.get("loc", ()))
        msg = str(e.get("msg", "invalid value"))
        ctx = e.get("ctx") or {}
        if e.get("type") == "json_invalid" and ctx.get("error"):
            msg = f"the body is not valid JSON: {ctx['error']}"
        elif e.get("type") == "missing":
            msg = f"{_loc_text(loc[1:] if len(loc) > 1 else loc)} is required"
        items.append({"loc": loc, "msg": msg, "type": str(e.get("type", "value_error"))})
    return items


def register_error_handlers(app: APIGatewayRestResolver) -> None:
    @app.exception_handler(RequestValidationError)
    def _invalid_request(exc: RequestValidationError) -> Response:
        return error_response(422, validation_items(exc.errors()))

    @app.exception_handler(RequestUnsupportedContentType)
    def _unsupported_media(exc: RequestUnsupportedContentType) -> Response:
        content_type = app.current_event.headers.get("content-type", "")
        return error_response(415, f"send the body as application/json, not {content_type!r}")

    # A body that is not UTF-8 fails while Powertools decodes it, before validation sees it.
    @app.exception_handler(UnicodeDecodeError)
    def _not_utf8(exc: UnicodeDecodeError) -> Response:
        msg = f"the body is not valid JSON: not UTF-8 ({exc.reason} at byte {exc.start})"
        return error_response(422, [{"loc": ["body"], "msg": msg, "type": "json_invalid"}])

    @app.exception_handler(ValidationFailed)
    def _rule_broken(exc: ValidationFailed) -> Response:
        if isinstance(exc.detail, list):
            return error_response(422, exc.detail)
        loc = exc.context.get("loc", ["body"])
        return error_response(422, [{"loc": list(loc), "msg": str(exc.detail), "type": "value_error"}])

    @app.exception_handler(RetryableStoreError)
    def _busy(exc: RetryableStoreError) -> Response:
        logger.warning("store busy", extra={"detail": str(exc.detail)})
        return error_response(503, exc.detail, headers={"Retry-After": "1"})

    @app.exception_handler(JobTriggersError)
    def _domain_error(exc: JobTriggersError) -> Response:
        if exc.status_code >= 500:
            logger.exception("request failed")
            return error_response(exc.status_code, "internal error; it has been logged")
        return error_response(exc.status_code, exc.detail)

    @app.exception_handler(ServiceError)
    def _service_error(exc: ServiceError) -> Response:
        return error_response(exc.status_code, exc.msg)

    @app.not_found
    def _no_route(exc: RouteNotFound) -> Response:
        event = app.current_event
        return error_response(404, f"no route for {event.http_method} {event.path}")

    @app.exception_handler(Exception)
    def _fault(exc: Exception) -> Response:
        logger.exception("unhandled error")
        return error_response(500, "internal error; it has been logged")
