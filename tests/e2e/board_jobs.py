"""Jobs in the local runtime for the board's tests, made the way sites make them: tag an object over
HTTP (the stream makes the job), claim it, report on it. The workflows are ones no other end-to-end
test uses (`nom-1.0.0`, `gcms-metab-1.0.0`: seed/, no capability needed), so their counts are the
board tests' own while the session's runtime is shared."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx

from jobtriggers.local.runtime import LocalRuntime
from tests.e2e.conftest import SiteSession
from tests.e2e.scenarios import object_body

NOM = ("nom-input", "nom-1.0.0")
GCMS = ("gcms-metab-input", "gcms-metab-1.0.0")


def tag_jobs(
    api: httpx.Client, runtime: LocalRuntime, site: SiteSession, trigger: tuple[str, str], count: int
) -> list[dict[str, Any]]:
    """`count` new objects tagged with the trigger's type; the jobs the stream made for them."""
    object_type, workflow_id = trigger
    objects = []
    for _ in range(count):
        object_id = f"board-{uuid.uuid4().hex[:10]}"
        created = api.post("/objects", json=object_body(object_id), headers=site.headers)
        assert created.status_code == 201, created.text
        tagged = api.put(f"/objects/{object_id}/types/{object_type}", headers=site.headers)
        assert tagged.status_code in (200, 201, 204), tagged.text
        objects.append(object_id)
    runtime.wait_for_stream()
    jobs = []
    for object_id in objects:
        found = api.get(
            "/jobs", params={"object_id": object_id, "workflow_id": workflow_id}, headers=site.headers
        ).json()["resources"]
        assert len(found) == 1, found
        jobs.extend(found)
    return jobs


def claim(api: httpx.Client, site: SiteSession, job_id: str) -> dict[str, Any]:
    r = api.post(f"/jobs/{job_id}:claim", headers=site.headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


def report(api: httpx.Client, site: SiteSession, op_id: str, body: dict[str, Any]) -> dict[str, Any]:
    r = api.patch(f"/operations/{op_id}", json=body, headers=site.headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


def fail_for_good(api: httpx.Client, site: SiteSession, job_id: str, code: str, message: str) -> None:
    """Claim and report an error until the job has used its attempts (3 by default) and failed."""
    for attempt in range(1, 10):
        op = claim(api, site, job_id)
        report(api, site, op["id"], {"done": True, "result": {"code": code, "message": message}})
        if api.get(f"/jobs/{job_id}", headers=site.headers).json()["status"] == "failed":
            return
        assert attempt < 9
    raise AssertionError(f"job {job_id} never failed")


def api_counts(api: httpx.Client, site: SiteSession, workflow_id: str) -> dict[str, int]:
    """The workflow's jobs by status, as the API lists them (every page)."""
    counts = {}
    for status in ("pending", "claimed", "done", "failed", "cancelled"):
        n, token = 0, None
        while True:
            params: dict[str, Any] = {"workflow_id": workflow_id, "status": status, "max_page_size": 1000}
            if token:
                params["page_token"] = token
            body = api.get("/jobs", params=params, headers=site.headers).json()
            n += len(body["resources"])
            token = body.get("next_page_token")
            if not token:
                break
        counts[status] = n
    return counts


def wait_until(check: Any, timeout: float = 20.0, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)
