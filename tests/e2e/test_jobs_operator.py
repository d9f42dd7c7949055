"""Operators steer jobs that sites run, on the local runtime (issue 9, item 4's Done-when).

Everything here goes the way it goes in production: jobs come from tagging objects over the API (the
object-type stream and TriggerResolver), sites claim and report over the API (`SiteClient`, and the
real `jobtriggers site work` as a subprocess), operators act with the real `jobtriggers jobs ...`
command over the tables, and the events are what JobEventsFunction put on the runtime's bus
(`GET /local/events`, `LocalRuntime.events(job_id)`).

- A cancel reaches a running `site work` command within one heartbeat: the command is stopped
  (it notes the SIGTERM in a file), the job ends `cancelled`, and the worker goes on to its next job.
- A rerun of a failed job runs it again, and `jobs show` lists both operations.
- A full life (create, claim, fail, rerun, claim, done) is exactly those six events, in order, once
  each; and so under 20 % injected DynamoDB faults.
"""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from jobtriggers.client import Conflict, SiteClient, Unavailable
from jobtriggers.dal.jobs import JobRepository
from jobtriggers.local.runtime import LocalRuntime
from jobtriggers.logic.triggering import TRIGGER_CACHE_SECONDS
from jobtriggers.models import Operation, iso, job_id_for, utcnow
from tests.e2e.conftest import SiteSession
from tests.e2e.test_worker import JOBTRIGGERS, get_job, register_workflow, site_env
from tests.faults import FaultInjector, fast_backoff
from tests.jobs import put_new_job

LIFE = ["job.created", "job.claimed", "job.failed", "job.rerun", "job.claimed", "job.done"]
DYNAMODB_OPERATIONS = set(
    boto3.client("dynamodb", region_name="us-east-1").meta.service_model.operation_names
)
LEASE_SECONDS = 12  # site work renews every third of it: a heartbeat every 4 s
GRACE_SECONDS = 5


@pytest.fixture(autouse=True)
def _compressed_backoff() -> Iterator[None]:
    with fast_backoff():
        yield


def operator(runtime: LocalRuntime, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """`jobtriggers jobs ARGS --endpoint-url ...`, as an operator runs it against the local runtime."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBTRIGGERS_")}
    env.update(runtime.tables)
    env["COLUMNS"] = "300"
    return subprocess.run(
        [JOBTRIGGERS, "jobs", *args, "--endpoint-url", runtime.dynamodb_endpoint],
        env=env,
        input=input,
        capture_output=True,
        text=True,
        timeout=120,
    )


def operator_json(runtime: LocalRuntime, *args: str, input: str | None = None, exit_code: int = 0) -> Any:
    proc = operator(runtime, *args, "--json", input=input)
    assert proc.returncode == exit_code, proc.stderr + proc.stdout
    return json.loads(proc.stdout)


def events_of(runtime: LocalRuntime, job_id: str, count: int, timeout: float = 60) -> list[dict[str, Any]]:
    """The job's events once at least `count` are there and the stream is idle (so any extra would
    be there too)."""
    deadline = time.monotonic() + timeout
    while len(runtime.events(job_id)) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    runtime.wait_for_stream(timeout=max(1.0, deadline - time.monotonic()))
    return runtime.events(job_id)


def _at(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def _wait_for_file(path: Path, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the worker ended early: {proc.communicate()}"
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.05)


# The command: a `fast-` object's job finishes at once; any other runs until stopped, noting when it
# started and when SIGTERM reached it (a job that ran to its end would note `finished`).
SLOW_OR_FAST = (
    "import json, os, signal, sys, time\n"
    "job = json.load(sys.stdin)\n"
    "obj = job['config']['object_id']\n"
    "marks = os.environ['MARKS']\n"
    "if obj.startswith('fast-'):\n"
    "    print(json.dumps({'outputs': [obj + '.out']}))\n"
    "    sys.exit(0)\n"
    "def note(name):\n"
    "    with open(os.path.join(marks, name), 'w') as f:\n"
    "        f.write(repr(time.time()))\n"
    "def stopped(signum, frame):\n"
    "    note('stopped')\n"
    "    sys.stderr.write('got SIGTERM, stopping\\n')\n"
    "    sys.exit(143)\n"
    "signal.signal(signal.SIGTERM, stopped)\n"
    "note('started')\n"
    "time.sleep(120)\n"
    "note('finished')\n"
)


def test_cancel_reaches_a_running_site_work_command_within_one_heartbeat(
    local_runtime: LocalRuntime, api: httpx.Client, new_site: Callable[..., SiteSession], tmp_path: Path
) -> None:
    # Given a slow job and a fast one of a workflow with a 12 s lease (a heartbeat every 4 s)
    _, wf_id = register_workflow(local_runtime, lease_seconds=LEASE_SECONDS, max_attempts=3)
    jobs = JobRepository(local_runtime.tables["JOBS_TABLE"])
    suffix = uuid.uuid4().hex[:8]
    slow = put_new_job(wf_id, f"slow-{suffix}", iso(utcnow()), repo=jobs).id
    fast = put_new_job(wf_id, f"fast-{suffix}", iso(utcnow()), repo=jobs).id
    site = new_site()
    marks = tmp_path / "marks"
    marks.mkdir()
    # And a site's worker running the slow one's command
    worker = subprocess.Popen(
        [
            JOBTRIGGERS,
            "site",
            "work",
            "--workflow",
            wf_id,
            "--max-jobs",
            "2",
            "--grace",
            str(GRACE_SECONDS),
            "--json",
            "--",
            sys.executable,
            "-c",
            SLOW_OR_FAST,
        ],
        env={**site_env(local_runtime, site, tmp_path), "MARKS": str(marks)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for_file(marks / "started", worker)
        assert get_job(api, site, slow)["status"] == "claimed"
        # When an operator cancels it
        [outcome] = operator_json(local_runtime, "cancel", slow)
        assert (outcome["outcome"], outcome["status"]) == ("done", "claimed, cancel requested")
        # Then the worker stops the command, reports, and goes on to the other job
        stdout, stderr = worker.communicate(timeout=90)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()
    assert worker.returncode == 0, stderr
    # The command got SIGTERM (it noted when), and never ran to its end
    assert (marks / "stopped").exists() and not (marks / "finished").exists()
    stopped_at = float((marks / "stopped").read_text())
    # Within one heartbeat (plus the grace, which it did not need) of the cancel being written
    events = events_of(local_runtime, slow, 4)
    assert [e["detail-type"] for e in events] == [
        "job.created",
        "job.claimed",
        "job.cancel_requested",
        "job.cancelled",
    ]
    cancel_at = _at(events[2]["detail"]["occurred_at"])
    heartbeat = LEASE_SECONDS / 3
    cancel_to_stop = stopped_at - cancel_at
    print(
        f"\ncancel to SIGTERM: {cancel_to_stop:.2f}s "
        f"(heartbeat every {heartbeat:.1f}s, grace {GRACE_SECONDS}s)"
    )
    assert 0 < cancel_to_stop <= heartbeat + GRACE_SECONDS
    # And the job ended cancelled by the site, with the error `cancelled` and the command's last words
    job = get_job(api, site, slow)
    assert job["status"] == "cancelled" and job["cancel_requested"] is True
    assert job["last_error"]["code"] == "cancelled"
    assert "got SIGTERM" in job["last_error"]["details"]["stderr_tail"]
    assert events[3]["detail"]["by"] == site.site_id
    op = api.get(f"/operations/{job['operation_id']}", headers=site.headers).json()
    assert op["done"] is True and op["result"]["code"] == "cancelled"
    # And the worker said so, and ran the next job to done
    said = " ".join(stderr.split())
    assert f"job {slow} was cancelled: stopping the command" in said
    assert f"job {slow}: cancelled (the command was stopped)" in said
    runs = {r["job_id"]: r["status"] for r in map(json.loads, stdout.splitlines())}
    assert runs == {slow: "cancelled", fast: "done"}
    assert get_job(api, site, fast)["status"] == "done"
    # And nobody can claim the cancelled job
    assert SiteClient(local_runtime.base_url, site.client_id, site.client_secret).claim_next(wf_id) is None


def test_rerun_of_a_failed_job_runs_it_again_and_keeps_both_operations(
    local_runtime: LocalRuntime, api: httpx.Client, new_site: Callable[..., SiteSession], tmp_path: Path
) -> None:
    # Given a job of a workflow with one attempt, which a site's command failed
    _, wf_id = register_workflow(local_runtime, lease_seconds=30, max_attempts=1)
    jobs = JobRepository(local_runtime.tables["JOBS_TABLE"])
    job_id = put_new_job(wf_id, f"obj-{uuid.uuid4().hex[:8]}", iso(utcnow()), repo=jobs).id
    site = new_site()
    env = site_env(local_runtime, site, tmp_path)
    failing = "import sys; sys.stderr.write('reference genome missing\\n'); sys.exit(3)"
    succeeding = "import json, sys; job = json.load(sys.stdin); print(json.dumps({'outputs': [job['id']]}))"

    def work(script: str) -> dict[str, Any]:
        proc = subprocess.run(
            [
                JOBTRIGGERS,
                "site",
                "work",
                "--workflow",
                wf_id,
                "--once",
                "--json",
                "--",
                sys.executable,
                "-c",
                script,
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        return dict(json.loads(proc.stdout))

    assert work(failing)["status"] == "error"
    # The operator finds it among the failed jobs, with its error
    [failed] = operator_json(local_runtime, "list", "--workflow", wf_id, "--status", "failed")
    assert (failed["id"], failed["last_error"]["code"]) == (job_id, "exit_3")
    first_op = failed["operation_id"]
    # When the operator reruns it, and the site's worker runs it again
    [outcome] = operator_json(local_runtime, "rerun", job_id)
    assert (outcome["outcome"], outcome["status"]) == ("done", "pending")
    assert work(succeeding)["status"] == "done"
    # Then it is done in its second run, and `jobs show` lists both operations, the failed one first
    shown = operator_json(local_runtime, "show", job_id)
    assert (shown["job"]["status"], shown["job"]["run"], shown["job"]["result"]) == (
        "done",
        2,
        {"outputs": [job_id]},
    )
    ops = shown["operations"]
    assert [(o["run"], o["done"], o["site_id"]) for o in ops] == [
        ("earlier", True, site.site_id),
        ("current", True, site.site_id),
    ]
    assert ops[0]["id"] == first_op and ops[0]["result"]["code"] == "exit_3"
    assert ops[1]["id"] == shown["job"]["operation_id"] != first_op and ops[1]["result"] == {
        "outputs": [job_id]
    }
    # And for people too
    table = operator(local_runtime, "show", job_id)
    assert table.returncode == 0, table.stderr
    assert "operations (2)" in table.stdout
    rows = [line for line in table.stdout.splitlines() if first_op in line or ops[1]["id"] in line]
    assert any("earlier" in r and "error exit_3" in r for r in rows)
    assert any("current" in r and r.rstrip(" │").endswith("done") for r in rows)


# --------------------------------------------------------------------------- a full life's events


def _tag_new_object(api: SiteClient, type_id: str) -> str:
    """Register an object and tag it with `type_id` over the API (a retried POST whose first answer
    was lost finds the object made: 409, and it is there)."""
    object_id = f"obj-{uuid.uuid4().hex[:12]}"
    body = {
        "id": object_id,
        "name": "reads.fastq",
        "size": 10,
        "checksums": [{"type": "sha256", "checksum": uuid.uuid4().hex}],
        "created_time": "2025-01-01T00:00:00Z",
        "access_methods": [{"access_url": {"url": f"https://example.org/{object_id}"}}],
    }
    try:
        api.request("POST", "/objects", json=body)
    except Conflict:
        api.request("GET", f"/objects/{object_id}")
    api.request("PUT", f"/objects/{object_id}/types", json=[type_id])
    return object_id


def _claim_next(site: SiteClient, workflow_id: str, timeout: float = 90) -> Operation:
    """Claim the next job as `site work` does: one Idempotency-Key for the logical claim, kept
    while an earlier try with it is still being answered (409) or the API stays busy."""
    key, deadline = uuid.uuid4().hex, time.monotonic() + timeout
    while True:
        try:
            op = site.claim_next(workflow_id, idempotency_key=key)
        except (Conflict, Unavailable):
            assert time.monotonic() < deadline, "the claim never got through"
            time.sleep(1)
            continue
        assert op is not None, "nothing to claim"
        return op


def _full_lives(
    runtime: LocalRuntime, new_site: Callable[..., SiteSession], count: int
) -> tuple[list[str], dict[str, Any]]:
    """`count` jobs through their lives: created by tagging, claimed and failed by site A (one
    attempt), rerun by an operator (one bulk command, ids on stdin), claimed and finished by site B;
    heartbeats in between. The job ids, and the rerun's outcomes."""
    type_id, wf_id = register_workflow(runtime, lease_seconds=60, max_attempts=1)
    time.sleep(TRIGGER_CACHE_SECONDS)  # the warm resolver's trigger set includes the new trigger
    a, b = new_site(), new_site()
    with (
        SiteClient(runtime.base_url, a.client_id, a.client_secret, timeout=20) as site_a,
        SiteClient(runtime.base_url, b.client_id, b.client_secret, timeout=20) as site_b,
    ):
        objects = [_tag_new_object(site_a, type_id) for _ in range(count)]
        job_ids = [job_id_for(wf_id, o) for o in objects]
        deadline = time.monotonic() + 60
        while {j.id for j in site_a.list_jobs(workflow_id=wf_id, status="pending")} != set(job_ids):
            assert time.monotonic() < deadline, "the tags did not make their jobs"
            time.sleep(0.2)
        for _ in job_ids:
            op = _claim_next(site_a, wf_id)
            site_a.heartbeat(op.id, {"progress": 0.5})
            site_a.fail(op.id, "exit_1", "the command failed")
        reran = operator_json(runtime, "rerun", "-", input="\n".join(job_ids) + "\n")
        for _ in job_ids:
            op = _claim_next(site_b, wf_id)
            site_b.heartbeat(op.id)
            site_b.complete(op.id, {"outputs": [op.metadata["job"]["config"]["object_id"] + ".out"]})
        assert site_b.claim_next(wf_id) is None
    return job_ids, {"outcomes": reran, "sites": (a.site_id, b.site_id)}


def _assert_exactly_the_life(
    runtime: LocalRuntime, api: httpx.Client, job_id: str, sites: tuple[str, str], timeout: float
) -> None:
    events = events_of(runtime, job_id, len(LIFE), timeout)
    assert [e["detail-type"] for e in events] == LIFE, job_id
    assert [e["detail"]["event_id"] for e in events] == [f"{job_id}:{v}:0" for v in range(1, 7)]
    a, b = sites
    assert [e["detail"]["by"] for e in events] == [
        "service",
        a,
        a,
        f"operator:{getpass.getuser()}",
        b,
        b,
    ]
    assert [e["detail"]["status"] for e in events] == [
        "pending",
        "claimed",
        "failed",
        "pending",
        "claimed",
        "done",
    ]
    r = api.get("/local/events", params={"job_id": job_id})
    assert r.status_code == 200 and r.json() == events


def test_a_full_life_through_the_api_and_an_operator_is_its_six_events_once_in_order(
    local_runtime: LocalRuntime, api: httpx.Client, new_site: Callable[..., SiteSession]
) -> None:
    # When a job lives its life: tagged, claimed, failed (its one attempt), rerun, claimed, done
    (job_id,), rerun = _full_lives(local_runtime, new_site, count=1)
    assert [o["outcome"] for o in rerun["outcomes"]] == ["done"]
    # Then the bus received exactly those transitions, in order, once each, by whom made them
    _assert_exactly_the_life(local_runtime, api, job_id, rerun["sites"], timeout=60)


def test_full_lives_through_the_api_are_their_six_events_once_in_order_under_dynamodb_faults(
    local_runtime: LocalRuntime, api: httpx.Client, new_site: Callable[..., SiteSession]
) -> None:
    # Given 20 % of the functions' DynamoDB calls failing (throttles, 500s, timeouts, lost answers)
    faults = FaultInjector(rate=0.2, seed=11, operations=DYNAMODB_OPERATIONS)
    with faults.attached(local_runtime.proxy):
        # When three jobs live their lives through the API, the operator rerunning them in one go
        job_ids, rerun = _full_lives(local_runtime, new_site, count=3)
        # Then each job's events are exactly its life, in order, once each
        for job_id in job_ids:
            _assert_exactly_the_life(local_runtime, api, job_id, rerun["sites"], timeout=120)
    assert [o["outcome"] for o in rerun["outcomes"]] == ["done"] * 3
    stats = local_runtime.stats()
    print(
        f"\nfaults: {faults.summary()}; stream: {stats['function_errors']} function errors, "
        f"{stats['partial_failures']} partial failures"
    )
    # And the faults reached the API's and the consumers' writes
    assert faults.by_operation["TransactWriteItems"] > 0 and sum(faults.faults.values()) > 10
