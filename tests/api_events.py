"""API Gateway REST proxy events (payload 1.0), shaped as AWS sends them, for handler-level tests.

As on AWS: `path` keeps the client's percent-encoding, `pathParameters` are decoded, `resource` is
the template's path, and a request that passed the Lambda authorizer carries its context under
`requestContext.authorizer` (here `site_id`).
"""

from __future__ import annotations

import base64
import importlib.util
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

API_ID = "abc123defg"
STAGE = "v1"
ACCOUNT = "123456789012"
REGION = "us-east-1"
HOST = f"{API_ID}.execute-api.{REGION}.amazonaws.com"


class LambdaContextStub:
    function_name = "jobtriggers-test"
    memory_limit_in_mb = 512
    invoked_function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:jobtriggers-test"
    aws_request_id = "req-test"

    def get_remaining_time_in_millis(self) -> int:
        return 10_000


def rest_event(
    method: str,
    resource: str,
    path_params: dict[str, str] | None = None,
    *,
    query: dict[str, str | list[str]] | None = None,
    body: Any = None,
    raw_body: str | None = None,
    headers: dict[str, str] | None = None,
    site_id: str | None = "site-a",
) -> dict[str, Any]:
    """One request. `resource` is the template path (`/objects/{object_id}`); `path_params` are the
    decoded values; `body` is sent as JSON unless `raw_body` is given."""
    params = path_params or {}
    path = re.sub(r"\{(\w+)\}", lambda m: quote(params[m.group(1)], safe=""), resource)
    all_headers = {"Host": HOST, "Accept": "application/json"}
    if body is not None or raw_body is not None:
        all_headers["Content-Type"] = "application/json"
    all_headers.update(headers or {})
    multi_query = {k: v if isinstance(v, list) else [v] for k, v in (query or {}).items()}
    request_context: dict[str, Any] = {
        "accountId": ACCOUNT,
        "apiId": API_ID,
        "httpMethod": method,
        "path": f"/{STAGE}{path}",
        "protocol": "HTTP/1.1",
        "requestId": str(uuid.uuid4()),
        "resourcePath": resource,
        "stage": STAGE,
        "identity": {"sourceIp": "198.51.100.7", "userAgent": "pytest"},
    }
    if site_id is not None:
        request_context["authorizer"] = {"site_id": site_id, "principalId": site_id, "integrationLatency": 3}
    text = raw_body if raw_body is not None else (json.dumps(body) if body is not None else None)
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": all_headers,
        "multiValueHeaders": {k: [v] for k, v in all_headers.items()},
        "queryStringParameters": {k: v[-1] for k, v in multi_query.items()} or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": params or None,
        "stageVariables": None,
        "requestContext": request_context,
        "body": text,
        "isBase64Encoded": False,
    }


def form_event(
    fields: dict[str, str], headers: dict[str, str] | None = None, path: str = "/token"
) -> dict[str, Any]:
    event = rest_event("POST", path, site_id=None, raw_body=urlencode(fields), headers=headers)
    event["headers"]["Content-Type"] = "application/x-www-form-urlencoded"
    event["multiValueHeaders"]["Content-Type"] = ["application/x-www-form-urlencoded"]
    return event


def basic_auth(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def authorizer_event(
    token_header: str | None, resource: str = "/jobs", method: str = "GET"
) -> dict[str, Any]:
    return {
        "type": "TOKEN",
        "authorizationToken": token_header,
        "methodArn": f"arn:aws:execute-api:{REGION}:{ACCOUNT}:{API_ID}/{STAGE}/{method}{resource}",
    }


def json_body(response: dict[str, Any]) -> Any:
    return json.loads(response["body"]) if response.get("body") else None


ROOT = Path(__file__).resolve().parents[1]
Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


def load_function(name: str) -> Handler:
    """`functions/<name>/app.py`'s lambda_handler, imported from its file as Lambda does (no sys.path)."""
    path = ROOT / "functions" / name / "app.py"
    spec = importlib.util.spec_from_file_location(f"test_function_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    handler: Handler = module.lambda_handler
    return handler


@dataclass
class ApiCaller:
    """Calls a handler with REST proxy events; returns (status, decoded JSON body)."""

    handler: Handler

    def __call__(
        self, method: str, resource: str, path_params: dict[str, str] | None = None, **kwargs: Any
    ) -> tuple[int, Any]:
        response = self.handler(rest_event(method, resource, path_params, **kwargs), LambdaContextStub())
        return response["statusCode"], json_body(response)

    def raw(self, event: dict[str, Any]) -> dict[str, Any]:
        return self.handler(event, LambdaContextStub())


def drs_object_body(checksum: str = "d41d8cd98f00b204e9800998ecf8427e", **overrides: Any) -> dict[str, Any]:
    """A valid POST /objects body, as the NMDC Runtime's site client sends it."""
    body: dict[str, Any] = {
        "name": "reads.fastq.gz",
        "description": "raw reads",
        "size": 1024,
        "checksums": [{"type": "md5", "checksum": checksum}],
        "created_time": "2024-05-01T12:00:00Z",
        "access_methods": [{"access_url": {"url": "https://data.example.org/reads.fastq.gz"}}],
        "mime_type": "application/gzip",
    }
    body.update(overrides)
    return body


def module_tables(seed: bool = True) -> dict[str, str]:
    """Tables (seeded from seed/) for a whole test module: creating them per test costs seconds,
    so API tests share them and keep apart by using ids of their own."""
    from jobtriggers.dal.registry import RegistryRepository
    from jobtriggers.local.store import create_tables
    from jobtriggers.logic.seed import apply_registry, load_seed_dir

    env = create_tables(f"m{uuid.uuid4().hex[:10]}")
    if seed:
        apply_registry(load_seed_dir(ROOT / "seed"), RegistryRepository())
    return env


def use_tables(env: dict[str, str]) -> None:
    """Point the environment (and the cached settings and clients) at these tables."""
    import os

    from jobtriggers.dal.dynamo import reset_clients
    from jobtriggers.settings import reset_settings_cache

    os.environ.update(env)
    reset_settings_cache()
    reset_clients()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"
