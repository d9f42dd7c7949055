"""Concurrent claims through the HTTP API of the local runtime: one winner per job, no job lost or
claimed twice. (The local gateway runs up to 8 API containers at once, as Lambda would run many.)"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from jobtriggers.dal.jobs import JobRepository
from jobtriggers.local.runtime import LocalRuntime
from jobtriggers.models import iso, utcnow
from tests.jobs import put_new_job

from .conftest import SiteSession
from .test_worker import register_workflow

pytestmark = pytest.mark.slow  # about a minute each on the embedded DynamoDB


def add_jobs(runtime: LocalRuntime, workflow_id: str, n: int) -> list[str]:
    jobs = JobRepository(runtime.tables["JOBS_TABLE"])
    return [
        put_new_job(workflow_id, f"obj-{i}-{uuid.uuid4().hex[:6]}", iso(utcnow()), repo=jobs).id
        for i in range(n)
    ]


def test_32_sites_claiming_one_job_20_times_have_one_winner_each_time(
    local_runtime: LocalRuntime, new_site: Callable[..., SiteSession]
) -> None:
    # Given 32 sites and 20 jobs
    _, wf_id = register_workflow(local_runtime)
    sites = [new_site() for _ in range(32)]
    job_ids = add_jobs(local_runtime, wf_id, 20)
    statuses = Counter[int]()
    started = time.perf_counter()
    with httpx.Client(
        base_url=local_runtime.base_url, timeout=60, limits=httpx.Limits(max_connections=64)
    ) as http:
        for job_id in job_ids:
            # When all 32 POST /jobs/{id}:claim at the same moment
            barrier = threading.Barrier(len(sites))

            def claim(site: SiteSession, job_id: str = job_id, barrier: threading.Barrier = barrier) -> Any:
                barrier.wait()
                return site, http.post(f"/jobs/{job_id}:claim", headers=site.headers)

            with ThreadPoolExecutor(len(sites)) as pool:
                answers = list(pool.map(claim, sites))
            statuses.update(r.status_code for _, r in answers)
            # Then exactly one got 200 and every other one 409 naming the winner
            winners = [(s, r.json()) for s, r in answers if r.status_code == 200]
            assert len(winners) == 1, [(r.status_code, r.text) for _, r in answers]
            winner, op = winners[0]
            assert all(r.status_code == 409 for _, r in answers if r.status_code != 200)
            assert all(winner.site_id in r.json()["detail"] for _, r in answers if r.status_code == 409)
            # And the winner's retry gets the same operation; the job names it
            again = http.post(f"/jobs/{job_id}:claim", headers=winner.headers)
            assert again.status_code == 200 and again.json()["id"] == op["id"]
            job = http.get(f"/jobs/{job_id}", headers=winner.headers).json()
            assert (job["operation_id"], job["site_id"], job["attempts"]) == (op["id"], winner.site_id, 1)
    elapsed = time.perf_counter() - started
    print(
        f"\nHTTP 32x20 race: {sum(statuses.values()) / elapsed:.0f} claim requests/s, "
        f"statuses {dict(statuses)}"
    )


def test_8_sites_claim_next_200_jobs_each_exactly_once(
    local_runtime: LocalRuntime, new_site: Callable[..., SiteSession]
) -> None:
    # Given 200 pending jobs of one workflow and 8 sites
    _, wf_id = register_workflow(local_runtime)
    job_ids = set(add_jobs(local_runtime, wf_id, 200))
    sites = [new_site() for _ in range(8)]
    got: dict[str, list[str]] = {}
    requests = Counter[int]()

    def site_loop(site: SiteSession) -> None:
        mine: list[str] = []
        with httpx.Client(base_url=local_runtime.base_url, timeout=60) as http:
            while True:
                # When each calls POST /jobs:claim until it answers 204
                r = http.post("/jobs:claim", json={"workflow_id": wf_id}, headers=site.headers)
                requests[r.status_code] += 1
                if r.status_code == 204:
                    break
                assert r.status_code == 200, r.text
                mine.append(r.json()["metadata"]["job"]["id"])
        got[site.site_id] = mine

    started = time.perf_counter()
    with ThreadPoolExecutor(len(sites)) as pool:
        list(pool.map(site_loop, sites))
    elapsed = time.perf_counter() - started
    # Then every job was claimed exactly once: none lost, none twice
    claimed = [j for mine in got.values() for j in mine]
    assert len(claimed) == len(set(claimed)) == 200
    assert set(claimed) == job_ids
    # And each job records the one site that got it
    holder = {j: s for s, mine in got.items() for j in mine}
    jobs = JobRepository(local_runtime.tables["JOBS_TABLE"])
    for job_id in job_ids:
        job = jobs.get(job_id)
        assert (job.status, job.site_id, job.attempts) == ("claimed", holder[job_id], 1)
    # And the work was spread over the sites, ending with one 204 each
    assert requests[204] == 8 and sum(1 for mine in got.values() if mine) >= 4
    print(
        f"\nHTTP 8x200 claim-next: {200 / elapsed:.1f} claims/s, "
        f"per site {sorted(len(m) for m in got.values())}"
    )
