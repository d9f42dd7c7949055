"""The worker loop under injected DynamoDB faults: every job ends `done` exactly once.

Two sites run `jobtriggers site work` (the real CLI, as subprocesses) against the local runtime,
while tests/faults.py fails 20 % of the runtime's DynamoDB calls (its functions run in worker
processes and reach DynamoDB through the runtime's proxy, where the faults are injected). The API
answers 503 when botocore's retries run out, the site client backs off and retries, and claims and
reports are conditional transactions. A worker that gives up is started again, as a batch system
would. Counts are printed (`pytest -s`) and asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from jobtriggers.local.runtime import LocalRuntime
from tests.e2e.conftest import SiteSession
from tests.e2e.test_worker import JOBTRIGGERS, add_job, get_job, register_workflow, site_env
from tests.faults import FaultInjector, fast_backoff

JOBS = int(os.environ.get("FAULT_WORKER_JOBS", "16"))

# The command a site runs: note the job in a shared file (to count executions), print its outputs.
SCRIPT = (
    "import json, os, sys\n"
    "job = json.load(sys.stdin)\n"
    "with open(os.environ['RUN_LOG'], 'a') as f: f.write(job['id'] + '\\n')\n"
    "print(json.dumps({'outputs': [job['config']['object_id'] + '.out']}))\n"
)


@pytest.fixture(autouse=True)
def _compressed_backoff() -> Iterator[None]:
    with fast_backoff():
        yield


def _start_worker(env: dict[str, str], workflow_id: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            JOBTRIGGERS,
            "site",
            "work",
            "--workflow",
            workflow_id,
            "--json",
            "--",
            sys.executable,
            "-c",
            SCRIPT,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_workers_run_every_job_to_done_exactly_once_under_faults(
    local_runtime: LocalRuntime, api: httpx.Client, new_site: Callable[..., SiteSession], tmp_path: Path
) -> None:
    # Given JOBS pending jobs of a fresh workflow and two sites with a worker each
    _, wf_id = register_workflow(local_runtime, lease_seconds=60, max_attempts=3)
    job_ids = {add_job(local_runtime, wf_id) for _ in range(JOBS)}
    sites = [new_site(), new_site()]
    run_log = tmp_path / "runs.txt"
    envs = [{**site_env(local_runtime, s, tmp_path), "RUN_LOG": str(run_log)} for s in sites]
    reported: list[dict[str, object]] = []
    restarts = 0
    started = time.monotonic()
    # When the workers run under 20 % faults until no job is claimable (restarted if they give up)
    with FaultInjector(rate=0.2, seed=31).attached(local_runtime.proxy) as faults:
        for _round in range(6):
            workers = [_start_worker(env, wf_id) for env in envs]
            outcomes = [w.communicate(timeout=180) for w in workers]
            reported += [json.loads(line) for out, _ in outcomes for line in out.splitlines() if line.strip()]
            if all(w.returncode == 0 for w in workers):
                break
            restarts += sum(1 for w in workers if w.returncode != 0)
        with faults.paused():
            jobs = {j: get_job(api, sites[0], j) for j in job_ids}
    runs = Counter(run_log.read_text().split()) if run_log.exists() else Counter()
    print(
        f"\n{JOBS} jobs, 2 workers, {time.monotonic() - started:.1f}s: {len(reported)} reported,",
        f"{sum(runs.values())} runs, {restarts} worker restarts; faults {faults.summary()}",
    )
    # Then every job is done, once, with its command's result, and each command ran once
    assert {j: job["status"] for j, job in jobs.items()} == dict.fromkeys(job_ids, "done")
    for job in jobs.values():
        assert job["result"] == {"outputs": [job["config"]["object_id"] + ".out"]}
        assert job["attempts"] == 1
    assert runs == Counter(dict.fromkeys(job_ids, 1))
    assert sorted(str(r["job_id"]) for r in reported if r["status"] == "done") == sorted(job_ids)
    # And the faults reached the claims and reports
    assert faults.by_operation["TransactWriteItems"] > 0
