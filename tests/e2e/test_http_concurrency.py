"""The local API serves requests at once, as Lambda would in many containers: two slow requests
overlap in time, and sites claiming the same job race for real (issue 12.5).

Until now the local runtime served one request at a time (every function in one process, behind a
lock on Powertools' class), so no race through HTTP was ever real.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from jobtriggers.local.proxy import Outcome
from jobtriggers.local.runtime import LocalRuntime

from .conftest import SiteSession
from .test_worker import add_job, register_workflow

SLOW_SECONDS = 1.0


class SlowReads:
    """A proxy hook that holds GetItems on one table for a while and records when."""

    def __init__(self, table: str) -> None:
        self.table = table.encode()
        self.spans: list[tuple[float, float]] = []
        self._lock = threading.Lock()

    def __call__(self, operation: str, body: bytes) -> Outcome | None:
        if operation == "GetItem" and self.table in body:
            started = time.monotonic()
            time.sleep(SLOW_SECONDS)
            with self._lock:
                self.spans.append((started, time.monotonic()))
        return None

    def most_at_once(self) -> int:
        events = sorted([(s, 1) for s, _ in self.spans] + [(e, -1) for _, e in self.spans])
        level = peak = 0
        for _, step in events:
            level += step
            peak = max(peak, level)
        return peak


def test_two_slow_requests_overlap_in_time_through_the_gateway(
    local_runtime: LocalRuntime, new_site: Callable[..., SiteSession]
) -> None:
    # Given two jobs and a store that takes a second to read any job
    site = new_site()
    _, wf_id = register_workflow(local_runtime)
    jobs = [add_job(local_runtime, wf_id), add_job(local_runtime, wf_id)]
    slow = SlowReads(local_runtime.tables["JOBS_TABLE"])
    barrier = threading.Barrier(2)
    # (Two warm workers of each function on the way, as provisioned concurrency would keep: a cold
    # start, seconds here, would otherwise decide the timing.)
    assert local_runtime.pool is not None
    for function in ("AuthorizerFunction", "ApiFunction"):
        assert local_runtime.pool.provision(function, 2) >= 2

    def get(job_id: str) -> int:
        with httpx.Client(base_url=local_runtime.base_url, timeout=30) as http:
            barrier.wait()
            return http.get(f"/jobs/{job_id}", headers=site.headers).status_code

    with local_runtime.proxy.hooked(slow):  # type: ignore[union-attr]
        # When both are read over HTTP at the same moment
        started = time.monotonic()
        with ThreadPoolExecutor(2) as pool:
            statuses = list(pool.map(get, jobs))
        elapsed = time.monotonic() - started
    # Then both answered, and their reads were in the store at the same time: the API served them
    # in two processes at once, not one after the other
    assert statuses == [200, 200]
    assert len(slow.spans) == 2
    (first_start, first_end), (second_start, second_end) = sorted(slow.spans)
    overlap = min(first_end, second_end) - max(first_start, second_start)
    print(
        f"\ntwo GET /jobs/{{id}} of >= {SLOW_SECONDS:.0f} s each: {elapsed:.2f} s in all, "
        f"{overlap:.2f} s at once"
    )
    assert slow.most_at_once() == 2
    assert overlap >= SLOW_SECONDS / 2


def test_sites_claiming_one_job_at_once_race_for_real_and_exactly_one_wins(
    local_runtime: LocalRuntime, new_site: Callable[..., SiteSession]
) -> None:
    # Given 16 sites and a job per round
    _, wf_id = register_workflow(local_runtime)
    sites = [new_site() for _ in range(16)]
    store_conflicts_before = _store_conflicts(local_runtime)
    statuses: Counter[int] = Counter()
    with httpx.Client(
        base_url=local_runtime.base_url, timeout=60, limits=httpx.Limits(max_connections=32)
    ) as http:
        for _round in range(6):
            job_id = add_job(local_runtime, wf_id)
            barrier = threading.Barrier(len(sites))

            def claim(site: SiteSession, job_id: str = job_id, barrier: threading.Barrier = barrier) -> Any:
                barrier.wait()
                return site, http.post(f"/jobs/{job_id}:claim", headers=site.headers)

            # When all 16 POST /jobs/{id}:claim at the same moment
            with ThreadPoolExecutor(len(sites)) as pool:
                answers = list(pool.map(claim, sites))
            statuses.update(r.status_code for _, r in answers)
            # Then exactly one got 200 and every other one 409 naming the winner
            winners = [s for s, r in answers if r.status_code == 200]
            assert len(winners) == 1, [(r.status_code, r.text) for _, r in answers]
            assert all(r.status_code == 409 for _, r in answers if r.status_code != 200)
            assert all(winners[0].site_id in r.json()["detail"] for _, r in answers if r.status_code == 409)
    # And the races were real: claims that read the job as free lost the conditional write to
    # another claim in flight at the same time (one request at a time, none ever would)
    conflicts = _store_conflicts(local_runtime) - store_conflicts_before
    print(f"\n16 sites x 6 jobs: statuses {dict(statuses)}, {conflicts} conditional writes lost at the store")
    assert conflicts > 0


def _store_conflicts(runtime: LocalRuntime) -> int:
    errors = runtime.stats()["dynamodb"]["errors"]
    return int(
        errors.get("TransactionCanceledException", 0) + errors.get("ConditionalCheckFailedException", 0)
    )


def test_what_the_functions_print_is_collected_from_their_processes(
    local_runtime: LocalRuntime, api: httpx.Client, new_site: Callable[..., SiteSession]
) -> None:
    # When a request that logs is served (a claim)
    site = new_site()
    job_id = add_job(local_runtime, register_workflow(local_runtime)[1])
    r = api.post(f"/jobs/{job_id}:claim", headers=site.headers)
    assert r.status_code == 200, r.text
    request_id = r.headers["x-amzn-RequestId"]
    # Then the API function's log line for it (Powertools' JSON, with the request's correlation id
    # and the function's name from its own environment) is in the runtime's logs by the time the
    # answer is back
    lines = [line for line in local_runtime.logs.lines("ApiFunction") if request_id in line]
    assert any(job_id in line for line in lines), local_runtime.logs.lines("ApiFunction")[-3:]
    assert all(f'"function_name":"{local_runtime.config.table_prefix}-ApiFunction"' in line for line in lines)
