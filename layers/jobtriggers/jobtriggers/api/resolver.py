"""The REST resolver every API function uses, with URL-encoded path parameters made to work.

API Gateway REST hands a Lambda `pathParameters` already percent-decoded, and Powertools matches
routes against `path` with a pattern that excludes `/` and `#`, so the registry id
`schema#/definitions/Database` (sent as `schema%23%2Fdefinitions%2FDatabase`) would match no route
or the wrong one. We therefore rebuild the path the resolver matches from the template's `resource`
(`/object_types/{type_id}`) and the parameters, percent-encoded again, and decode the matched
values before routes see them. It does not matter whether the gateway (AWS, or the local one)
passed `path` encoded or decoded: only `resource` and `pathParameters` are read.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from re import Match
from typing import Any
from urllib.parse import quote, unquote

from aws_lambda_powertools.event_handler import APIGatewayRestResolver
from aws_lambda_powertools.event_handler.api_gateway import BaseRouter
from aws_lambda_powertools.utilities.typing import LambdaContext

from jobtriggers.api.errors import proxy_error

# Characters Powertools' route patterns accept besides letters and digits (its _SAFE_URI): keeping
# `:` lets `/jobs/{job_id}` carry the `:claim` / `:release` suffix the resolver routes on.
_KEEP_IN_PATH = "-._~()'!*:@,;=+&$"
# Nothing a site sends needs more (an object's record, a PATCH of an operation); DynamoDB's item
# limit is 400 KB. Refused before parsing, so a huge body costs no validation work.
MAX_REQUEST_BYTES = 256 * 1024
_RESOURCE_PARAM = re.compile(r"\{(\w+)\+?\}")
# Powertools keeps the request being resolved on the BaseRouter *class* (`BaseRouter.current_event`),
# shared by every resolver and router in the process. Lambda sends one request at a time to a
# process; the local runtime serves many threads in one process, so requests take turns (never
# contended on Lambda). The lock hangs on that class, not on this module, so that copies of
# jobtriggers.api (the local runtime gives each "container" its own) still share one.
_LOCK_ATTRIBUTE = "_jobtriggers_resolve_lock"


def _shared_resolve_lock() -> threading.Lock:
    lock = vars(BaseRouter).get(_LOCK_ATTRIBUTE)
    if lock is None:
        lock = threading.Lock()
        setattr(BaseRouter, _LOCK_ATTRIBUTE, lock)
    return lock


_RESOLVE_LOCK = _shared_resolve_lock()


def encode_path_parameter(value: str) -> str:
    return quote(value, safe=_KEEP_IN_PATH)


def routable_path(event: Mapping[str, Any]) -> str | None:
    """The request path rebuilt from `resource` and percent-encoded `pathParameters`, or None
    when the event has no templated resource (then `path` is used as it is)."""
    resource = event.get("resource")
    params = event.get("pathParameters") or {}
    if not isinstance(resource, str) or "{" not in resource or not params:
        return None

    def substitute(m: re.Match[str]) -> str:
        value = params.get(m.group(1))
        return m.group(0) if value is None else encode_path_parameter(str(value))

    return _RESOURCE_PARAM.sub(substitute, resource)


class SitesApiResolver(APIGatewayRestResolver):
    """APIGatewayRestResolver that routes on re-encoded path parameters, decodes them for routes,
    and resolves one request at a time per process."""

    def resolve(self, event: Mapping[str, Any], context: LambdaContext) -> dict[str, Any]:
        size = len(event.get("body") or "")
        if size > MAX_REQUEST_BYTES:
            return proxy_error(
                413, f"the request body is {size} bytes; this API accepts at most {MAX_REQUEST_BYTES} bytes"
            )
        path = routable_path(event)
        if path is not None:
            event = {**event, "path": path}
        with _RESOLVE_LOCK:
            return super().resolve(event, context)

    def _convert_matches_into_route_keys(self, match: Match) -> dict[str, str]:
        return {name: unquote(value) for name, value in match.groupdict().items()}
