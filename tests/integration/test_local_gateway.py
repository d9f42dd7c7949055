"""The local API Gateway over HTTP, routing template.yaml's routes to small fake handlers."""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from jobtriggers.local.gateway import Gateway, RouteTable, api_settings
from jobtriggers.local.store import PortInUseError
from jobtriggers.local.template import api_routes, authorizer_function, load_template

TEMPLATE = load_template()


def echo(event: dict[str, Any]) -> dict[str, Any]:
    """A fake API handler: answers with the parts of the event the tests look at."""
    if event["path"].endswith("/crash"):
        raise RuntimeError("handler bug")
    if event["path"].endswith("/malformed"):
        return {"body": "no status code"}
    keys = (
        "resource",
        "path",
        "httpMethod",
        "pathParameters",
        "queryStringParameters",
        "body",
        "isBase64Encoded",
    )
    seen = {k: event[k] for k in keys}
    seen["multiValueQueryStringParameters"] = event["multiValueQueryStringParameters"]
    seen["authorizer"] = event["requestContext"].get("authorizer")
    seen["stage"] = event["requestContext"]["stage"]
    seen["x_multi"] = (event["multiValueHeaders"] or {}).get("X-Multi")
    return {"statusCode": 200, "headers": {"Content-Type": "application/json"}, "body": json.dumps(seen)}


def authorizer(event: dict[str, Any]) -> dict[str, Any]:
    """A fake TOKEN authorizer: `Bearer good` is allowed, `deny` denied, `crash` a bug, else 401."""
    assert event["type"] == "TOKEN"
    token = event["authorizationToken"]
    if token == "Bearer crash":
        raise ValueError("authorizer bug")
    if token not in ("Bearer good", "Bearer deny"):
        raise Exception("Unauthorized")
    effect = "Allow" if token == "Bearer good" else "Deny"
    arn_prefix = event["methodArn"].split("/")[0]
    return {
        "principalId": "site-a",
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{"Action": "execute-api:Invoke", "Effect": effect, "Resource": f"{arn_prefix}/*"}],
        },
        "context": {"site_id": "site-a", "attempt": 2, "admin": False},
    }


@pytest.fixture(scope="module")
def gateway() -> Iterator[Gateway]:
    auth = authorizer_function(TEMPLATE)
    assert auth is not None

    def invoke(function: str, event: dict[str, Any]) -> Any:
        return authorizer(event) if function == auth else echo(event)

    gw = Gateway(
        api_routes(TEMPLATE),
        invoke,
        authorizer=auth,
        settings=api_settings(TEMPLATE),
        local_routes={"/local/dlq": lambda: [{"entry": 1}], "/local/stats": lambda: {"batches": 3}},
        max_body_bytes=1024,
    )
    gw.start("127.0.0.1", 0)
    yield gw
    gw.stop()


@pytest.fixture
def http(gateway: Gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.base_url, timeout=5) as client:
        yield client


GOOD = {"Authorization": "Bearer good"}


def test_a_url_encoded_id_stays_one_segment_and_reaches_the_handler_decoded(http: httpx.Client) -> None:
    # When a registry id with '#' and '/' is requested URL-encoded
    r = http.get("/object_types/schema%23%2Fdefinitions%2FDatabase/workflows")
    # Then the route with one {type_id} segment matched; path stays encoded, the parameter is decoded
    assert r.status_code == 200
    seen = r.json()
    assert seen["resource"] == "/object_types/{type_id}/workflows"
    assert seen["path"] == "/object_types/schema%23%2Fdefinitions%2FDatabase/workflows"
    assert seen["pathParameters"] == {"type_id": "schema#/definitions/Database"}
    assert seen["stage"] == "v1"


def test_literal_segments_beat_parameters_so_claim_next_has_its_own_route(http: httpx.Client) -> None:
    # When the claim-next route, a job action and a job read are requested
    claim_next = http.post("/jobs:claim", headers=GOOD).json()
    action = http.post("/jobs/abc:claim", headers=GOOD).json()
    read = http.get("/jobs/abc", headers=GOOD).json()
    # Then each went to its template route
    assert claim_next["resource"] == "/jobs:claim"
    assert claim_next["pathParameters"] is None
    assert action["resource"] == "/jobs/{job_id}"
    assert action["pathParameters"] == {"job_id": "abc:claim"}
    assert read["resource"] == "/jobs/{job_id}"
    assert read["httpMethod"] == "GET"


def test_query_strings_and_headers_arrive_as_api_gateway_passes_them(http: httpx.Client) -> None:
    # When a query repeats a key and carries encoded characters, and a header repeats
    r = http.get(
        "/jobs?status=pending&workflow_id=metag-1.0.0&status=claimed&filter=%7B%22a%22%3A1%7D",
        headers=[("Authorization", "Bearer good"), ("X-Multi", "a"), ("X-Multi", "b")],
    )
    seen = r.json()
    # Then single values are the last, multi values all, and both decoded
    assert seen["queryStringParameters"] == {
        "status": "claimed",
        "workflow_id": "metag-1.0.0",
        "filter": '{"a":1}',
    }
    assert seen["multiValueQueryStringParameters"]["status"] == ["pending", "claimed"]
    assert seen["x_multi"] == ["a", "b"]


def test_the_authorizer_context_reaches_the_handler_as_strings(http: httpx.Client) -> None:
    # When an allowed token calls an authorized route
    seen = http.post("/objects", headers=GOOD, content=b'{"name": "x"}').json()
    # Then the handler sees the authorizer's context (values as strings) and principalId, and the body
    assert seen["authorizer"] == {
        "site_id": "site-a",
        "attempt": "2",
        "admin": "false",
        "principalId": "site-a",
    }
    assert seen["body"] == '{"name": "x"}'


def test_public_routes_skip_the_authorizer(http: httpx.Client) -> None:
    # When a public route is called without a token
    seen = http.get("/workflows").json()
    # Then the handler ran, with no authorizer context
    assert seen["resource"] == "/workflows"
    assert seen["authorizer"] is None


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),  # no Authorization header: the authorizer is not even called
        ({"Authorization": "Bearer expired"}, 401),  # Exception("Unauthorized")
        ({"Authorization": "Bearer deny"}, 401),  # a Deny policy: ACCESS_DENIED, which the template makes 401
        ({"Authorization": "Bearer crash"}, 500),  # any other exception: AUTHORIZER_FAILURE, as on AWS
    ],
)
def test_refused_requests_never_reach_the_handler(
    http: httpx.Client, headers: dict[str, str], status: int
) -> None:
    # When an authorized route is called with a bad or missing token
    r = http.get("/jobs", headers=headers)
    # Then the gateway answers itself, with the template's gateway response
    assert r.status_code == status
    if status == 401:
        assert "detail" in r.json()
        assert "resource" not in r.json()


def test_unknown_routes_and_methods_are_404_with_a_clear_detail(http: httpx.Client) -> None:
    # When a path no route has, and a route's path with another method, are requested
    unknown = http.get("/nope/nothing")
    wrong_method = http.delete("/workflows")
    # Then both are the template's MISSING_AUTHENTICATION_TOKEN response (404) saying why
    assert unknown.status_code == 404
    assert unknown.json() == {"detail": "no such route: /nope/nothing"}
    assert wrong_method.status_code == 404
    assert wrong_method.headers["Allow"] == "GET"
    assert "this path takes GET" in wrong_method.json()["detail"]


def test_a_failing_or_malformed_handler_is_a_502(http: httpx.Client) -> None:
    # When the handler raises, or returns something that is not a proxy response
    crash = http.get("/workflows/crash")
    malformed = http.get("/workflows/malformed")
    # Then API Gateway's 502 comes back
    for r in (crash, malformed):
        assert r.status_code == 502
        assert r.json() == {"message": "Internal server error"}


def test_a_body_over_the_limit_is_413(http: httpx.Client) -> None:
    # When a body larger than the limit (here 1 KiB) is posted
    r = http.post("/objects", headers=GOOD, content=b"x" * 2048)
    # Then it is refused before any function runs
    assert r.status_code == 413
    assert "over" in r.json()["detail"]


def test_bodies_that_are_not_utf8_arrive_base64_encoded_and_chunked_bodies_are_read(
    http: httpx.Client,
) -> None:
    # When a binary body and a chunked body are posted
    binary = http.post("/objects", headers=GOOD, content=b"\xff\xfe\x00").json()
    chunked = http.post("/objects", headers=GOOD, content=iter([b'{"a":', b" 1}"])).json()
    too_big = http.post("/objects", headers=GOOD, content=iter([b"x" * 600, b"y" * 600]))
    # Then the handler gets base64 for the first, the joined text for the second; the third is 413
    assert binary["isBase64Encoded"] is True
    assert base64.b64decode(binary["body"]) == b"\xff\xfe\x00"
    assert chunked["body"] == '{"a": 1}'
    assert chunked["isBase64Encoded"] is False
    assert too_big.status_code == 413


def test_local_endpoints_show_the_dlq_and_the_counters(http: httpx.Client) -> None:
    # When the local endpoints are read
    # Then they answer with what the runtime gave the gateway
    assert http.get("/local/dlq").json() == [{"entry": 1}]
    assert http.get("/local/stats").json() == {"batches": 3}


def test_the_router_prefers_literal_segments() -> None:
    # Given a literal and a parameter route at the same depth
    from jobtriggers.local.template import ApiRoute

    router = RouteTable([ApiRoute("A", "GET", "/x/{id}", True), ApiRoute("B", "GET", "/x/special", True)])
    # Then the literal wins for its own name and the parameter takes the rest
    assert router.match("GET", "/x/special").route.function == "B"  # type: ignore[union-attr]
    assert router.match("GET", "/x/other").route.function == "A"  # type: ignore[union-attr]
    assert router.match("GET", "/x/").route is None
    assert router.match("GET", "/x/a/b").route is None


def test_a_port_in_use_is_a_clear_error(gateway: Gateway) -> None:
    # Given a port that is taken
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        other = Gateway([], lambda f, e: None)
        # When another gateway tries to bind it
        # Then it fails with a message that names the port and what to do
        with pytest.raises(PortInUseError, match=rf"127\.0\.0\.1:{port} is already in use"):
            other.start("127.0.0.1", port)
