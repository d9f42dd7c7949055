"""Nobody where they don't belong, over HTTP against the local runtime (gateway, authorizer, API).

Tokens that are wrong in every way we know of, a deleted site, a rotated secret, one site reaching
for another's operations, oversized bodies, unbounded pages and ids, and the logs of a whole flow
searched for secrets. Each refusal is checked to have changed nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest

from jobtriggers.dal.sites import SiteRepository
from jobtriggers.local.runtime import LocalRuntime
from jobtriggers.logic.sites import rotate_secret
from tests.api_events import drs_object_body
from tests.e2e.conftest import SiteSession

TYPE = "metagenome_raw_paired_end_reads"  # seed/: -> metag-1.0.0, no capability needed
WORKFLOW = "metag-1.0.0"


def _forge(
    runtime: LocalRuntime, site_id: str, key: str | None = None, alg: str = "HS256", **claims: Any
) -> str:
    now = datetime.now(UTC)
    # The site's real epoch, so that each bad token is wrong in its one way only.
    stored = SiteRepository(runtime.tables["SITES_TABLE"]).get_site(site_id)
    payload: dict[str, Any] = {
        "sub": site_id,
        "iss": "jobtriggers",
        "iat": now,
        "nbf": now,
        "exp": now + timedelta(minutes=5),
        "jti": uuid.uuid4().hex,
        "ver": 1,
        "epoch": stored.epoch if stored else "",
    }
    payload.update(claims)
    if alg == "none":
        return jwt.encode(payload, "", algorithm="none")
    return jwt.encode(payload, key or runtime.signing_key, algorithm=alg)


def _object(api: httpx.Client, site: SiteSession) -> str:
    object_id = f"sec-{uuid.uuid4().hex[:12]}"
    r = api.post(
        "/objects", json=drs_object_body(id=object_id, checksum=uuid.uuid4().hex), headers=site.headers
    )
    assert r.status_code == 201, r.text
    return object_id


BAD_TOKENS: dict[str, Callable[[LocalRuntime, str], str]] = {
    "expired": lambda rt, s: _forge(rt, s, exp=datetime.now(UTC) - timedelta(minutes=1)),
    "not-yet-valid": lambda rt, s: _forge(rt, s, nbf=datetime.now(UTC) + timedelta(hours=1)),
    "wrong-signature": lambda rt, s: _forge(rt, s, key="not-the-key-" + "x" * 52),
    "alg-none": lambda rt, s: _forge(rt, s, alg="none"),
    "other-algorithm": lambda rt, s: _forge(rt, s, alg="HS512"),
    "other-issuer": lambda rt, s: _forge(rt, s, iss="someone-else"),
    "no-such-site": lambda rt, s: _forge(rt, "site-that-never-was"),
    "old-credential-version": lambda rt, s: _forge(rt, s, ver=99),
    "missing-jti": lambda rt, s: jwt.encode(
        {
            "sub": s,
            "iss": "jobtriggers",
            "iat": datetime.now(UTC),
            "nbf": datetime.now(UTC),
            "exp": datetime.now(UTC) + timedelta(minutes=5),
            "ver": 1,
        },
        rt.signing_key,
        algorithm="HS256",
    ),
    "garbage": lambda rt, s: "not.a.token",
}


@pytest.mark.parametrize("kind", sorted(BAD_TOKENS))
def test_bad_tokens_are_401_and_change_nothing(
    kind: str, local_runtime: LocalRuntime, api: httpx.Client, new_site: Callable[..., SiteSession]
) -> None:
    # Given a real site and a token that is wrong in one way
    site = new_site()
    headers = {"Authorization": f"Bearer {BAD_TOKENS[kind](local_runtime, site.site_id)}"}
    object_id = f"sec-{uuid.uuid4().hex[:12]}"
    # When it reads jobs and tries to create an object
    read = api.get("/jobs", headers=headers)
    write = api.post(
        "/objects", json=drs_object_body(id=object_id, checksum=uuid.uuid4().hex), headers=headers
    )
    # Then both are 401 with a JSON detail, and the object does not exist
    assert (read.status_code, write.status_code) == (401, 401)
    assert "detail" in read.json()
    assert api.get(f"/objects/{object_id}", headers=site.headers).status_code == 404


@pytest.mark.parametrize("header", [None, "", "Bearer", "Basic dXNlcjpwYXNz", "Token abc", "Bearer a b c"])
def test_missing_or_malformed_authorization_is_401(api: httpx.Client, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    r = api.get("/jobs", headers=headers)
    assert r.status_code == 401
    assert r.json()["detail"]


def test_a_deleted_site_loses_access_at_once(
    local_runtime: LocalRuntime, api: httpx.Client, new_site: Callable[..., SiteSession]
) -> None:
    # Given a site whose token works
    site = new_site()
    assert api.get("/jobs", headers=site.headers).status_code == 200
    # When the site is deleted (as `jobtriggers sites delete` does)
    SiteRepository(local_runtime.tables["SITES_TABLE"]).delete(site.site_id)
    # Then its token is refused, and its credentials get no new token
    assert api.get("/jobs", headers=site.headers).status_code == 401
    r = api.post(
        "/token",
        data={
            "grant_type": "client_credentials",
            "client_id": site.client_id,
            "client_secret": site.client_secret,
        },
    )
    assert r.status_code == 401


def test_a_rotated_secret_revokes_old_tokens_and_the_old_secret(
    local_runtime: LocalRuntime, api: httpx.Client, new_site: Callable[..., SiteSession]
) -> None:
    # Given a site with a working token
    site = new_site()
    # When its secret is rotated
    new = rotate_secret(SiteRepository(local_runtime.tables["SITES_TABLE"]), site.site_id)
    # Then the old token and the old secret are refused, and the new secret works
    assert api.get("/jobs", headers=site.headers).status_code == 401
    old = {
        "grant_type": "client_credentials",
        "client_id": site.client_id,
        "client_secret": site.client_secret,
    }
    assert api.post("/token", data=old).status_code == 401
    fresh = api.post("/token", data={**old, "client_secret": new.client_secret})
    assert fresh.status_code == 200
    assert (
        api.get("/jobs", headers={"Authorization": f"Bearer {fresh.json()['access_token']}"}).status_code
        == 200
    )


def test_token_endpoint_refuses_wrong_credentials_without_saying_which(
    api: httpx.Client, new_site: Callable[..., SiteSession]
) -> None:
    site = new_site()
    wrong_secret = api.post(
        "/token",
        data={"grant_type": "client_credentials", "client_id": site.client_id, "client_secret": "nope"},
    )
    unknown_client = api.post(
        "/token",
        data={"grant_type": "client_credentials", "client_id": "no-such-client", "client_secret": "nope"},
    )
    assert wrong_secret.status_code == unknown_client.status_code == 401
    assert wrong_secret.json() == unknown_client.json()


# --------------------------------------------------------------------------- one site, another's things


def _claimed_operation(
    local_runtime: LocalRuntime, api: httpx.Client, owner: SiteSession
) -> tuple[str, dict[str, Any]]:
    """A job made by tagging an object, claimed by `owner`: (job id, its operation)."""
    object_id = _object(api, owner)
    assert api.put(f"/objects/{object_id}/types/{TYPE}", headers=owner.headers).status_code in (200, 201, 204)
    assert local_runtime.wait_for_stream()
    jobs = api.get("/jobs", params={"object_id": object_id, "workflow_id": WORKFLOW}, headers=owner.headers)
    (job,) = jobs.json()["resources"]
    claim = api.post(f"/jobs/{job['id']}:claim", headers=owner.headers)
    assert claim.status_code == 200, claim.text
    return job["id"], claim.json()


def test_one_site_cannot_read_or_change_another_sites_operation(
    local_runtime: LocalRuntime, api: httpx.Client, new_site: Callable[..., SiteSession]
) -> None:
    # Given site A holding a claimed job and its operation
    owner, intruder = new_site(), new_site()
    job_id, op = _claimed_operation(local_runtime, api, owner)
    before = api.get(f"/operations/{op['id']}", headers=owner.headers).json()
    # When site B reads it, lists operations, reports it done, and releases the job
    read = api.get(f"/operations/{op['id']}", headers=intruder.headers)
    listed = api.get("/operations", headers=intruder.headers)
    patched = api.patch(
        f"/operations/{op['id']}", json={"done": True, "result": {"stolen": True}}, headers=intruder.headers
    )
    released = api.post(f"/jobs/{job_id}:release", headers=intruder.headers)
    # Then every attempt is refused, B's list does not show it, and nothing changed
    assert read.status_code in (403, 404)
    assert patched.status_code in (403, 404)
    assert released.status_code == 403
    assert op["id"] not in {o["id"] for o in listed.json()["resources"]}
    assert api.get(f"/operations/{op['id']}", headers=owner.headers).json() == before
    job = api.get(f"/jobs/{job_id}", headers=owner.headers).json()
    assert job["status"] == "claimed"
    assert job.get("site_id", owner.site_id) == owner.site_id


# --------------------------------------------------------------------------- limits


def test_a_body_over_the_limit_is_413_and_nothing_is_written(
    local_runtime: LocalRuntime, api: httpx.Client, new_site: Callable[..., SiteSession]
) -> None:
    # Given a body over API Gateway's 10 MB payload limit
    site = new_site()
    object_id = f"sec-{uuid.uuid4().hex[:12]}"
    body = drs_object_body(id=object_id, checksum=uuid.uuid4().hex, description="x" * (10 * 1024 * 1024 + 1))
    # When it is posted
    r = api.post("/objects", json=body, headers=site.headers)
    # Then it is 413 with a JSON detail, and the object does not exist
    assert r.status_code == 413
    assert api.get(f"/objects/{object_id}", headers=site.headers).status_code == 404


def test_a_body_over_the_apis_own_limit_is_413_with_the_limit_named(
    api: httpx.Client, new_site: Callable[..., SiteSession]
) -> None:
    # Given a body well under API Gateway's 10 MB but over what any request of this API needs
    from jobtriggers.api.resolver import MAX_REQUEST_BYTES

    site = new_site()
    object_id = f"sec-{uuid.uuid4().hex[:12]}"
    body = drs_object_body(id=object_id, checksum=uuid.uuid4().hex, description="x" * (MAX_REQUEST_BYTES + 1))
    # When it is posted
    r = api.post("/objects", json=body, headers=site.headers)
    # Then the API refuses it before parsing, saying the limit, and nothing was written
    assert r.status_code == 413
    assert f"at most {MAX_REQUEST_BYTES} bytes" in r.json()["detail"]
    assert api.get(f"/objects/{object_id}", headers=site.headers).status_code == 404


@pytest.mark.parametrize(
    "contents",
    [
        pytest.param([{"name": "tiny", "n": 1e-200}], id="number-below-dynamodb-range"),
        pytest.param([{"name": "huge", "n": 10**60}], id="number-over-38-digits"),
        pytest.param([{"name": "big", "blob": "x" * 500_000}], id="item-over-400kb"),
    ],
)
def test_objects_the_store_cannot_keep_are_4xx_and_nothing_is_written(
    api: httpx.Client, new_site: Callable[..., SiteSession], contents: list[dict[str, Any]]
) -> None:
    # Given an object whose free-form contents DynamoDB cannot store
    site = new_site()
    object_id = f"sec-{uuid.uuid4().hex[:12]}"
    body = drs_object_body(id=object_id, checksum=uuid.uuid4().hex, contents=contents)
    # When it is posted
    r = api.post("/objects", json=body, headers=site.headers)
    # Then it is a 4xx saying why (found by make fuzz as 500s), and nothing was written
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    assert r.json()["detail"]
    assert api.get(f"/objects/{object_id}", headers=site.headers).status_code == 404


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/jobs", {"max_page_size": "0"}),
        ("/jobs", {"max_page_size": "1001"}),
        ("/jobs", {"max_page_size": "-5"}),
        ("/jobs", {"max_page_size": "many"}),
        ("/jobs", {"page_token": "x" * 5000}),
        ("/jobs", {"object_id": "o" * 201}),
        ("/jobs", {"workflow_id": "w" * 1000}),
        ("/jobs", {"filter": "{" * 3000}),
        ("/jobs", {"object_id": ""}),
        ("/jobs", {"workflow_id": "", "claimable": "true"}),
        ("/jobs", {"site_id": ""}),
        ("/jobs", {"filter": '{"config.object_id": {"$regex": ""}}'}),
        ("/operations", {"max_page_size": "100000"}),
        ("/objects/" + "a" * 201, None),
        ("/objects/bad%23id%00", None),
        ("/jobs/" + "A" * 701, None),
        ("/jobs/not!an*id", None),
        ("/operations/" + "o" * 129, None),
        ("/object_types/" + "t" * 300, None),
    ],
)
def test_page_sizes_and_ids_are_bounded_before_they_reach_a_key(
    api: httpx.Client, new_site: Callable[..., SiteSession], path: str, params: dict[str, str] | None
) -> None:
    # When a page size, an id or a filter is out of bounds
    r = api.get(path, params=params, headers=new_site().headers)
    # Then it is a 4xx with a JSON detail (checked before any store call), never a 5xx
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    assert r.status_code != 401
    assert "detail" in r.json()


@pytest.mark.parametrize(
    "flt", ['{"config.object_id": ""}', '{"workflow.id": {"$in": ["", "\\ud800"]}}', '{"site_id": ""}']
)
def test_a_filter_value_no_key_can_hold_matches_nothing_and_never_reaches_a_key(
    api: httpx.Client, new_site: Callable[..., SiteSession], flt: str
) -> None:
    # An empty string (DynamoDB refuses it as a key value: a 500) or text that is not UTF-8 is a
    # valid filter that no job matches: the answer is an empty page, not a Query
    r = api.get("/jobs", params={"filter": flt}, headers=new_site().headers)
    assert (r.status_code, r.json()) == (200, {"resources": [], "next_page_token": None})


def test_the_largest_allowed_page_is_served(api: httpx.Client, new_site: Callable[..., SiteSession]) -> None:
    r = api.get("/jobs", params={"max_page_size": "1000"}, headers=new_site().headers)
    assert r.status_code == 200
    assert len(r.json()["resources"]) <= 1000


# --------------------------------------------------------------------------- logs


def test_no_secret_or_token_appears_in_the_logs_of_a_whole_flow(
    local_runtime: LocalRuntime,
    api: httpx.Client,
    new_site: Callable[..., SiteSession],
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("DEBUG")
    # Given a whole flow: a site made, a token fetched, an object made and tagged, its job claimed
    # and reported done, a refused token and a wrong secret
    site = new_site()
    job_id, op = _claimed_operation(local_runtime, api, site)
    done = api.patch(
        f"/operations/{op['id']}", json={"done": True, "result": {"ok": 1}}, headers=site.headers
    )
    assert done.status_code == 200, done.text
    forged = _forge(local_runtime, site.site_id, key="k" * 64)
    assert api.get("/jobs", headers={"Authorization": f"Bearer {forged}"}).status_code == 401
    api.post(
        "/token",
        data={
            "grant_type": "client_credentials",
            "client_id": site.client_id,
            "client_secret": "wrong-" + "s" * 30,
        },
    )
    # When every log line written meanwhile is collected (Lambda loggers print to stdout)
    out, err = capfd.readouterr()
    logs = out + err + "\n".join(r.getMessage() for r in caplog.records)
    assert job_id in logs and site.site_id in logs  # the flow was logged (ids are, secrets are not)
    # Then no secret, token, signing key or token fragment appears in them
    secrets = {
        "client secret": site.client_secret,
        "access token": site.token,
        "token signature": site.token.rsplit(".", 1)[-1],
        "forged token": forged,
        "signing key": local_runtime.signing_key,
        "wrong secret": "wrong-" + "s" * 30,
    }
    leaked = [name for name, value in secrets.items() if value and value in logs]
    assert leaked == []
