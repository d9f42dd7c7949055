"""Ids that would make keys DynamoDB refuses are 4xx before they reach the store, and write nothing.

On AWS, a key value over 2048 bytes (1024 for a sort key) is a ValidationException, which the
service would answer 500; moto does not check. Over HTTP against the local runtime: every input
that becomes a key, at a size or shape no valid id has, is refused with a 4xx that names it, and
nothing was written. (tests/unit/test_key_bounds.py shows that what is accepted fits.)
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from jobtriggers.local.runtime import LocalRuntime
from jobtriggers.models import CLIENT_ID_MAX_LENGTH
from tests.api_events import basic_auth, drs_object_body
from tests.e2e.conftest import SiteSession

TWO_WORKFLOWS_TYPE = "read_qc_analysis_activity_set"  # seed/: -> mgasm-1.0.3 and mgrba-1.0.2
WIDE = "\U0001d538"  # 4 bytes of UTF-8


def _object(api: httpx.Client, site: SiteSession) -> str:
    object_id = f"keys-{uuid.uuid4().hex[:12]}"
    r = api.post(
        "/objects", json=drs_object_body(id=object_id, checksum=uuid.uuid4().hex), headers=site.headers
    )
    assert r.status_code == 201, r.text
    return object_id


def _assert_refused(r: httpx.Response, *mentions: str) -> None:
    assert 400 <= r.status_code < 500 and r.status_code != 401, (r.status_code, r.text[:300])
    text = json.dumps(r.json()["detail"])
    for m in mentions:
        assert m in text, (m, text[:300])


# --------------------------------------------------------------------------- POST /token (no auth)


@pytest.mark.parametrize(
    "client_id",
    [pytest.param("c" * 3000, id="3-kb"), pytest.param(WIDE * 600, id="2400-bytes-in-600-characters")],
)
@pytest.mark.parametrize("how", ["form", "basic", "json"])
def test_a_client_id_no_site_can_have_is_400_naming_it_and_its_limit(
    api: httpx.Client, client_id: str, how: str
) -> None:
    # When the unauthenticated token endpoint gets a client id longer than any key DynamoDB takes
    form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": "s"}
    if how == "form":
        r = api.post("/token", data=form)
    elif how == "json":
        r = api.post("/token", json=form)
    else:
        r = api.post(
            "/token",
            data={"grant_type": "client_credentials"},
            headers={"Authorization": basic_auth(client_id, "s")},
        )
    # Then it is a 400 naming the field and its limit (not a 401 after a refused GetItem, nor a 500)
    assert r.status_code == 400, (r.status_code, r.text[:300])
    assert "client_id" in r.json()["detail"] and str(CLIENT_ID_MAX_LENGTH) in r.json()["detail"]


# --------------------------------------------------------------------------- writes


def test_a_checksum_too_wide_for_its_guard_key_is_422_and_nothing_is_written(
    api: httpx.Client, new_site: Callable[..., SiteSession]
) -> None:
    # Given an object whose checksum is 512 characters of 4 bytes each: its guard key
    # `checksum#<type>#<value>` would be over 2048 bytes
    site = new_site()
    object_id = f"keys-{uuid.uuid4().hex[:12]}"
    body = drs_object_body(id=object_id, checksum=WIDE * 512)
    # When it is posted
    r = api.post("/objects", json=body, headers=site.headers)
    # Then it is refused naming the checksum, and the object does not exist
    _assert_refused(r, "checksum")
    assert api.get(f"/objects/{object_id}", headers=site.headers).status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        pytest.param("PUT", "/objects/{object}/types", ["t" * 257], id="type-id-in-body"),
        pytest.param("PUT", "/objects/{object}/types", [WIDE * 300], id="wide-type-id-in-body"),
        pytest.param("PUT", "/objects/{object}/types/" + "t" * 300, None, id="type-id-in-path"),
        pytest.param("PUT", "/objects/" + "o" * 201 + "/types", ["metadata-in"], id="object-id-in-path"),
    ],
)
def test_ids_out_of_bounds_do_not_tag(
    api: httpx.Client, new_site: Callable[..., SiteSession], method: str, path: str, body: Any
) -> None:
    # Given an object without types
    site = new_site()
    object_id = _object(api, site)
    # When it is tagged with an id out of bounds
    r = api.request(method, path.format(object=object_id), json=body, headers=site.headers)
    # Then it is refused, and the object still has no type
    _assert_refused(r)
    assert api.get(f"/objects/{object_id}/types", headers=site.headers).json() == []


@pytest.mark.parametrize(
    ("path", "body"),
    [
        pytest.param("/jobs:claim", {"workflow_id": "w" * 257}, id="workflow-id"),
        pytest.param("/jobs:claim", {"workflow_id": WIDE * 257}, id="wide-workflow-id"),
        pytest.param("/jobs/" + "A" * 701 + ":claim", None, id="job-id"),
        pytest.param("/jobs/" + "A" * 701 + ":release", None, id="job-id-release"),
    ],
)
def test_ids_out_of_bounds_claim_nothing(
    api: httpx.Client, new_site: Callable[..., SiteSession], path: str, body: Any
) -> None:
    site = new_site()
    r = api.post(path, json=body, headers=site.headers)
    _assert_refused(r)
    assert api.get("/operations", headers=site.headers).json()["resources"] == []


def test_an_operation_id_out_of_bounds_changes_nothing(
    api: httpx.Client, new_site: Callable[..., SiteSession]
) -> None:
    site = new_site()
    r = api.patch("/operations/" + "o" * 129, json={"done": True}, headers=site.headers)
    _assert_refused(r)
    assert api.get("/operations/" + "o" * 129, headers=site.headers).status_code in (404, 422)


# --------------------------------------------------------------------------- reads


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"site_id": "s" * 101}, id="site-id"),
        pytest.param({"workflow_id": WIDE * 257}, id="workflow-id"),
        pytest.param({"object_id": "o" * 201}, id="object-id"),
    ],
)
def test_list_filters_out_of_bounds_are_4xx(
    api: httpx.Client, new_site: Callable[..., SiteSession], params: dict[str, str]
) -> None:
    _assert_refused(api.get("/jobs", params=params, headers=new_site().headers))


@pytest.mark.parametrize(
    ("params", "field"),
    [
        pytest.param(
            {"filter": json.dumps({"workflow.id": WIDE * 520}, ensure_ascii=False)},
            "workflow_id",
            id="workflow-in-filter",
        ),
        pytest.param(
            {"filter": json.dumps({"config.object_id": WIDE * 520}, ensure_ascii=False)},
            "object_id",
            id="object-in-filter",
        ),
        pytest.param(
            {"object_id": "o-1", "filter": json.dumps({"workflow.id": WIDE * 260}, ensure_ascii=False)},
            "workflow_id",
            id="workflow-in-filter-as-sort-key",
        ),
        pytest.param(
            {"claimable": "true", "filter": json.dumps({"workflow.id": WIDE * 520}, ensure_ascii=False)},
            "workflow",
            id="claimable-workflow-in-filter",
        ),
    ],
)
def test_filter_values_too_long_for_a_key_are_4xx_naming_the_field(
    api: httpx.Client, new_site: Callable[..., SiteSession], params: dict[str, str], field: str
) -> None:
    # `filter`'s values are not bounded like the query parameters they stand for: a value over the
    # key limit reaches the Query's key condition unless the store's gate stops it
    _assert_refused(api.get("/jobs", params=params, headers=new_site().headers), field)


def _edited(token: str, key: dict[str, Any]) -> str:
    """A page token the API issued, with its start key replaced (the query fingerprint kept)."""
    payload = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    payload["k"] = key
    return base64.urlsafe_b64encode(json.dumps(payload, ensure_ascii=False).encode()).decode().rstrip("=")


EDITED_KEYS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "a-key-value-over-2048-bytes": lambda k: {name: {"S": "x" * 2100} for name in list(k)[:1]},
    "a-wide-key-value-over-2048-bytes": lambda k: {name: {"S": WIDE * 520} for name in list(k)[:1]},
    "a-number-where-a-string-goes": lambda k: {name: {"S": 5} for name in k},
    "not-an-attribute-value": lambda k: {name: "plain" for name in k},
    "no-key-at-all": lambda k: {},
}


@pytest.fixture(scope="module")
def paged(local_runtime: LocalRuntime) -> dict[str, Any]:
    """A site holding two claimed jobs of one object: GET /jobs and GET /operations both page."""
    creds = local_runtime.create_site(f"keys-{uuid.uuid4().hex[:8]}", [])
    with httpx.Client(base_url=local_runtime.base_url, timeout=10) as api:
        token = api.post("/token", data={"grant_type": "client_credentials", **creds}).json()["access_token"]
        site = SiteSession(
            site_id=creds["site_id"],
            client_id=creds["client_id"],
            client_secret=creds["client_secret"],
            token=token,
            headers={"Authorization": f"Bearer {token}"},
        )
        object_id = _object(api, site)
        tagged = api.put(f"/objects/{object_id}/types/{TWO_WORKFLOWS_TYPE}", headers=site.headers)
        assert tagged.status_code == 200, tagged.text
        assert local_runtime.wait_for_stream()
        jobs = api.get("/jobs", params={"object_id": object_id}, headers=site.headers).json()["resources"]
        assert len(jobs) == 2
        for job in jobs:
            assert api.post(f"/jobs/{job['id']}:claim", headers=site.headers).status_code == 200
    return {"site": site, "object_id": object_id}


@pytest.mark.parametrize("edit", sorted(EDITED_KEYS))
@pytest.mark.parametrize("listing", ["/jobs", "/operations"])
def test_an_edited_page_token_is_400_before_it_reaches_the_store(
    api: httpx.Client, paged: dict[str, Any], listing: str, edit: str
) -> None:
    # Given the first page of a listing, whose token carries the last key it read
    site: SiteSession = paged["site"]
    params = {"max_page_size": "1"} | ({"object_id": paged["object_id"]} if listing == "/jobs" else {})
    first = api.get(listing, params=params, headers=site.headers)
    assert first.status_code == 200, first.text
    token = first.json()["next_page_token"]
    assert token
    key = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))["k"]
    # When the token's key is edited (its query fingerprint kept) and the next page asked for
    r = api.get(
        listing, params={**params, "page_token": _edited(token, EDITED_KEYS[edit](key))}, headers=site.headers
    )
    # Then it is a 400 saying the token is not one the API issued (not a 500 from DynamoDB, nor a 503)
    assert r.status_code == 400, (r.status_code, r.text[:300])
    assert "page_token" in r.json()["detail"]
    # And the token as issued still works
    assert api.get(listing, params={**params, "page_token": token}, headers=site.headers).status_code == 200
