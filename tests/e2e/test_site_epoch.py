"""A site deleted and created again under the same id is a new site: its earlier tokens stay refused.

Over HTTP against the local runtime; sites are made and deleted as operators do (the runtime's
`create_site`, the sites repository `jobtriggers sites delete` uses).
"""

from __future__ import annotations

import uuid

import httpx

from jobtriggers.dal.sites import SiteRepository
from jobtriggers.local.runtime import LocalRuntime


def _token(api: httpx.Client, creds: dict[str, str]) -> str:
    r = api.post(
        "/token",
        data={
            "grant_type": "client_credentials",
            "client_id": creds["client_id"],
            "client_secret": creds["client_secret"],
        },
    )
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


def test_a_token_of_a_deleted_site_stays_refused_after_the_site_is_created_again(
    local_runtime: LocalRuntime, api: httpx.Client
) -> None:
    # Given a site whose token works
    site_id = f"reborn-{uuid.uuid4().hex[:8]}"
    first = local_runtime.create_site(site_id, [])
    old = {"Authorization": f"Bearer {_token(api, first)}"}
    assert api.get("/jobs", headers=old).status_code == 200
    # When the site is deleted and created again under the same id (its credential version restarts at 1)
    SiteRepository(local_runtime.tables["SITES_TABLE"]).delete(site_id)
    second = local_runtime.create_site(site_id, [])
    # Then the token issued to the first incarnation is refused, on reads and on writes
    assert api.get("/jobs", headers=old).status_code == 401
    assert api.post("/jobs:claim", json={}, headers=old).status_code == 401
    # And the new incarnation's own token works
    new = {"Authorization": f"Bearer {_token(api, second)}"}
    assert api.get("/jobs", headers=new).status_code == 200
