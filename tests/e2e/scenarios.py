"""End-to-end scenarios written once, run against the local runtime (tests/e2e/test_scenarios.py)
and against a deployed stack over HTTPS (tests/e2e_aws, `make e2e STACK=name`).

They use only what a site has: the HTTP API and its own credentials. Waiting for the stream is
polling GET /jobs, as a site would, so the same code serves both.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt

from tests.e2e.conftest import SiteSession

TYPE = "metagenome_raw_paired_end_reads"  # seed/: -> metag-1.0.0, which needs no capability
WORKFLOW = "metag-1.0.0"


@dataclass
class Deployment:
    """Where the scenarios run: an API client (base URL set), a way to make sites, how long jobs take."""

    api: httpx.Client
    make_site: Callable[[], SiteSession]
    job_timeout: float = 5.0


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def object_body(object_id: str) -> dict[str, Any]:
    return {
        "id": object_id,
        "name": "reads.fastq.gz",
        "description": "end-to-end test object",
        "size": 1024,
        "checksums": [{"type": "md5", "checksum": uuid.uuid4().hex}],
        "created_time": "2024-05-01T12:00:00Z",
        "access_methods": [{"access_url": {"url": f"https://data.example.org/{object_id}"}}],
    }


def jobs_of(d: Deployment, site: SiteSession, object_id: str) -> list[dict[str, Any]]:
    r = d.api.get("/jobs", params={"object_id": object_id}, headers=site.headers)
    assert r.status_code == 200, r.text
    return list(r.json()["resources"])


def wait_for_jobs(d: Deployment, site: SiteSession, object_id: str, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + d.job_timeout
    while True:
        jobs = jobs_of(d, site, object_id)
        if len(jobs) >= count or time.monotonic() > deadline:
            return jobs
        time.sleep(0.2)


def tagged_object(d: Deployment, site: SiteSession) -> tuple[str, dict[str, Any]]:
    """An object registered and tagged over HTTP, and the one job the stream made for it."""
    object_id = _unique("e2e")
    created = d.api.post("/objects", json=object_body(object_id), headers=site.headers)
    assert created.status_code == 201, created.text
    tagged = d.api.put(f"/objects/{object_id}/types/{TYPE}", headers=site.headers)
    assert tagged.status_code in (200, 201, 204), tagged.text
    (job,) = wait_for_jobs(d, site, object_id, 1)
    return object_id, job


def tag_makes_exactly_one_job(d: Deployment) -> None:
    # Given a site, an object it registers and tags with a type that triggers one workflow
    site = d.make_site()
    started = time.monotonic()
    object_id, job = tagged_object(d, site)
    elapsed = time.monotonic() - started
    # Then exactly that workflow's job exists, pending, for that object
    assert job["workflow"]["id"] == WORKFLOW
    assert job["config"]["object_id"] == object_id
    assert job["status"] == "pending"
    # And tagging it again (and the tag being redelivered) adds none
    again = d.api.put(f"/objects/{object_id}/types/{TYPE}", headers=site.headers)
    assert again.status_code in (200, 201, 204)
    time.sleep(min(2.0, d.job_timeout / 2))
    assert [j["id"] for j in jobs_of(d, site, object_id)] == [job["id"]]
    print(f"tag -> job in {elapsed:.2f}s")


def claim_and_complete(d: Deployment) -> None:
    # Given a job made by tagging, and two sites
    owner, other = d.make_site(), d.make_site()
    _, job = tagged_object(d, owner)
    # When the first claims it (twice, as a retried request would), and the second tries
    first = d.api.post(f"/jobs/{job['id']}:claim", headers=owner.headers)
    retried = d.api.post(f"/jobs/{job['id']}:claim", headers=owner.headers)
    refused = d.api.post(f"/jobs/{job['id']}:claim", headers=other.headers)
    # Then the holder gets the same operation both times, and the other a 409 naming the holder
    assert first.status_code == 200, first.text
    assert retried.status_code == 200 and retried.json()["id"] == first.json()["id"]
    assert refused.status_code == 409
    assert owner.site_id in refused.text
    op = first.json()
    assert op["done"] is False and op["metadata"]["site_id"] == owner.site_id
    # When the holder reports it done with a result
    done = d.api.patch(
        f"/operations/{op['id']}",
        json={"done": True, "result": {"outputs": ["obj-x"]}},
        headers=owner.headers,
    )
    # Then the job is done and keeps the result, and a second report is refused
    assert done.status_code == 200, done.text
    finished = d.api.get(f"/jobs/{job['id']}", headers=owner.headers).json()
    assert finished["status"] == "done"
    assert (
        d.api.patch(f"/operations/{op['id']}", json={"done": True}, headers=owner.headers).status_code == 409
    )


def refuses_bad_tokens(d: Deployment) -> None:
    # Given tokens a site never got from POST /token
    site = d.make_site()
    now = datetime.now(UTC)
    claims = {"sub": site.site_id, "iss": "jobtriggers", "iat": now, "nbf": now, "jti": "x", "ver": 1}
    forged = {
        "wrong key": jwt.encode({**claims, "exp": now + timedelta(minutes=5)}, "k" * 64, algorithm="HS256"),
        "alg none": jwt.encode({**claims, "exp": now + timedelta(minutes=5)}, "", algorithm="none"),
        "garbage": "not-a-token",
    }
    for name, token in forged.items():
        object_id = _unique("forged")
        headers = {"Authorization": f"Bearer {token}"}
        # When they read and write
        read = d.api.get("/jobs", headers=headers)
        write = d.api.post("/objects", json=object_body(object_id), headers=headers)
        # Then both are 401 and nothing was written
        assert (read.status_code, write.status_code) == (401, 401), name
        assert d.api.get(f"/objects/{object_id}", headers=site.headers).status_code == 404, name
    assert d.api.get("/jobs").status_code == 401


def keeps_sites_apart(d: Deployment) -> None:
    # Given site A holding a job and its operation
    owner, intruder = d.make_site(), d.make_site()
    _, job = tagged_object(d, owner)
    op = d.api.post(f"/jobs/{job['id']}:claim", headers=owner.headers).json()
    # When site B reads, reports on and releases it
    read = d.api.get(f"/operations/{op['id']}", headers=intruder.headers)
    patched = d.api.patch(f"/operations/{op['id']}", json={"done": True}, headers=intruder.headers)
    released = d.api.post(f"/jobs/{job['id']}:release", headers=intruder.headers)
    # Then all are refused and the job is still A's
    assert read.status_code in (403, 404)
    assert patched.status_code in (403, 404)
    assert released.status_code == 403
    still = d.api.get(f"/jobs/{job['id']}", headers=owner.headers).json()
    assert still["status"] == "claimed"


SCENARIOS: dict[str, Callable[[Deployment], None]] = {
    "tag makes exactly one job": tag_makes_exactly_one_job,
    "claim and complete": claim_and_complete,
    "refuses bad tokens": refuses_bad_tokens,
    "keeps sites apart": keeps_sites_apart,
}
