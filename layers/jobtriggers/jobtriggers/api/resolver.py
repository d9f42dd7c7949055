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
from collections.abc import Mapping
from re import Match
from typing import Any
from urllib.parse import quote, unquote

from aws_lambda_powertools.event_handler import APIGatewayRestResolver
from aws_lambda_powertools.utilities.typing import LambdaContext

from jobtriggers.api.errors import proxy_error

# Characters Powertools' route patterns accept besides letters and digits (its _SAFE_URI): keeping
# `:` lets `/jobs/{job_id}` carry the `:claim` / `:release` suffix the resolver routes on.
_KEEP_IN_PATH = "-._~()'!*:@,;=+&$"
# Nothing a site sends needs more (an object's record, a PATCH of an operation); DynamoDB's item
# limit is 400 KB. Refused before parsing, so a huge body costs no validation work.
MAX_REQUEST_BYTES = 256 * 1024
_RESOURCE_PARAM = re.compile(r"\{(\w+)\+?\}")


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
    """APIGatewayRestResolver that routes on re-encoded path parameters and decodes them for routes."""

    def resolve(self, event: Mapping[str, Any], context: LambdaContext) -> dict[str, Any]:
        size = len(event.get("body") or "")
        if size > MAX_REQUEST_BYTES:
            return proxy_error(
                413, f"the request body is {size} bytes; this API accepts at most {MAX_REQUEST_BYTES} bytes"
            )
        path = routable_path(event)
        if path is not None:
            event = {**event, "path": path}
        return super().resolve(event, context)

    def _convert_matches_into_route_keys(self, match: Match) -> dict[str, str]:
        return {name: unquote(value) for name, value in match.groupdict().items()}
