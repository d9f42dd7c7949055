"""The worker loop (`jobtriggers site work`) and the site client against the local runtime over HTTP.

Each test registers its own object type, workflow and trigger, so the jobs it makes are its own
(other tests' metag-1.0.0 jobs are never taken), and runs the real CLI as a site would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from jobtriggers.client import Conflict, SiteClient
from jobtriggers.dal.jobs import JobRepository
from jobtriggers.dal.registry import RegistryRepository
from jobtriggers.local.runtime import LocalRuntime
from jobtriggers.logic.triggering import TRIGGER_CACHE_SECONDS
from jobtriggers.models import ObjectType, Trigger, Workflow, iso, trigger_id, utcnow
from tests.jobs import put_new_job

from .conftest import SiteSession

JOBTRIGGERS = str(Path(sys.executable).parent / "jobtriggers")
T0 = datetime(2025, 1, 1, tzinfo=UTC)


def register_workflow(runtime: LocalRuntime, **limits: Any) -> tuple[str, str]:
    """A fresh object type -> workflow trigger in the runtime's registry: (type id, workflow id)."""
    suffix = uuid.uuid4().hex[:8]
    type_id, wf_id = f"e2e-type-{suffix}", f"e2e-wf-{suffix}"
    registry = RegistryRepository(runtime.tables["REGISTRY_TABLE"])
    registry.put("object_type", ObjectType(id=type_id, name=type_id, created_at=T0))
    registry.put("workflow", Workflow(id=wf_id, name=wf_id, created_at=T0, **limits))
    registry.put(
        "trigger",
        Trigger(id=trigger_id(type_id, wf_id), object_type_id=type_id, workflow_id=wf_id, created_at=T0),
    )
    return type_id, wf_id


def add_job(runtime: LocalRuntime, workflow_id: str) -> str:
    jobs = JobRepository(runtime.tables["JOBS_TABLE"])
    return put_new_job(workflow_id, f"obj-{uuid.uuid4().hex[:10]}", iso(utcnow()), repo=jobs).id


def site_env(runtime: LocalRuntime, site: SiteSession, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBTRIGGERS_")}
    env.update(
        JOBTRIGGERS_URL=runtime.base_url,
        JOBTRIGGERS_CLIENT_ID=site.client_id,
        JOBTRIGGERS_CLIENT_SECRET=site.client_secret,
    )
    env["HOME"] = str(tmp_path)  # no ~/.config/jobtriggers/site.toml from the machine
    return env


def work(env: dict[str, str], workflow_id: str, script: str, *flags: str, timeout: float = 120) -> str:
    """Run `jobtriggers site work` to the end; its stdout (one JSON line per job with --json)."""
    proc = subprocess.run(
        [
            JOBTRIGGERS,
            "site",
            "work",
            "--workflow",
            workflow_id,
            "--json",
            *flags,
            "--",
            sys.executable,
            "-c",
            script,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def get_job(api: httpx.Client, site: SiteSession, job_id: str) -> dict[str, Any]:
    r = api.get(f"/jobs/{job_id}", headers=site.headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


@pytest.fixture
def client(local_runtime: LocalRuntime) -> Iterator[Callable[[SiteSession], SiteClient]]:
    made: list[SiteClient] = []

    def make(site: SiteSession) -> SiteClient:
        c = SiteClient(local_runtime.base_url, site.client_id, site.client_secret, timeout=20)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def test_worker_runs_a_tagged_objects_job_to_done_with_its_output(
    local_runtime: LocalRuntime, api: httpx.Client, new_site: Callable[..., SiteSession], tmp_path: Path
) -> None:
    # Given a trigger from a fresh type to a fresh workflow, and an object tagged with that type
    type_id, wf_id = register_workflow(local_runtime, lease_seconds=30)
    # A trigger written straight to the registry is in the warm resolver's trigger set within the
    # set's lifetime (a seed load waits that long and backfills; logic/triggering.py): tag after it
    time.sleep(TRIGGER_CACHE_SECONDS)
    site = new_site()
    obj = {
        "name": "reads.fastq",
        "size": 10,
        "checksums": [{"type": "sha256", "checksum": uuid.uuid4().hex}],
        "created_time": "2025-01-01T00:00:00Z",
        "access_methods": [{"access_url": {"url": "https://example.org/reads.fastq"}}],
    }
    r = api.post("/objects", json=obj, headers=site.headers)
    assert r.status_code == 201, r.text
    object_id = r.json()["id"]
    r = api.put(f"/objects/{object_id}/types", json=[type_id], headers=site.headers)
    assert r.status_code < 300, r.text
    assert local_runtime.wait_for_stream(10)
    jobs = api.get("/jobs", params={"workflow_id": wf_id}, headers=site.headers).json()["resources"]
    assert [j["status"] for j in jobs] == ["pending"]
    # When the site's worker runs a command that reads the job from stdin and prints its outputs
    script = (
        "import json, os, sys\n"
        "job = json.load(sys.stdin)\n"
        "assert json.loads(os.environ['JOB_JSON']) == job\n"
        "assert 'JOBTRIGGERS_CLIENT_SECRET' not in os.environ\n"
        "print('working on', job['config']['object_id'])\n"
        "print(json.dumps({'outputs': [job['config']['object_id'] + '.out']}))\n"
    )
    out = work(site_env(local_runtime, site, tmp_path), wf_id, script)
    # Then exactly one job ran, and it is done with the command's last JSON line as its result
    [line] = out.splitlines()
    assert json.loads(line)["status"] == "done"
    job = get_job(api, site, jobs[0]["id"])
    assert job["status"] == "done"
    assert job["result"] == {"outputs": [f"{object_id}.out"]}
    assert job["attempts"] == 1 and job["site_id"] == site.site_id
    # And the site's operation for it is done with the same result
    ops = api.get("/operations", params={"done": "true"}, headers=site.headers).json()["resources"]
    assert [(o["metadata"]["job"]["id"], o["result"]) for o in ops] == [(job["id"], job["result"])]


def test_failing_command_is_retried_then_failed(
    local_runtime: LocalRuntime, api: httpx.Client, new_site: Callable[..., SiteSession], tmp_path: Path
) -> None:
    # Given a job of a workflow that allows 2 attempts
    _, wf_id = register_workflow(local_runtime, max_attempts=2)
    job_id = add_job(local_runtime, wf_id)
    site = new_site()
    # When the worker runs a command that always fails
    script = "import sys; sys.stderr.write('reference genome missing\\n'); sys.exit(3)"
    out = work(site_env(local_runtime, site, tmp_path), wf_id, script)
    # Then it ran twice (retried once), and the job failed with the exit status and stderr tail
    runs = [json.loads(line) for line in out.splitlines()]
    assert [r["status"] for r in runs] == ["error", "error"]
    job = get_job(api, site, job_id)
    assert job["status"] == "failed" and job["attempts"] == 2
    assert job["result"]["code"] == "exit_3"
    assert "reference genome missing" in job["result"]["details"]["stderr_tail"]


def test_interrupted_worker_releases_its_job(
    local_runtime: LocalRuntime, api: httpx.Client, new_site: Callable[..., SiteSession], tmp_path: Path
) -> None:
    # Given a worker running a long command on a job
    _, wf_id = register_workflow(local_runtime)
    job_id = add_job(local_runtime, wf_id)
    site = new_site()
    proc = subprocess.Popen(
        [
            JOBTRIGGERS,
            "site",
            "work",
            "--workflow",
            wf_id,
            "--",
            sys.executable,
            "-c",
            "import time; time.sleep(60)",
        ],
        env=site_env(local_runtime, site, tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:  # the worker says when the command starts
        if "running" in line:
            break
    time.sleep(0.5)
    assert get_job(api, site, job_id)["status"] == "claimed"
    # When the worker gets Ctrl-C
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    # Then it stopped, and the job is pending again with its operation cancelled
    assert proc.returncode == 130, stderr
    job = get_job(api, site, job_id)
    assert job["status"] == "pending"
    op = api.get(f"/operations/{job['operation_id']}", headers=site.headers).json()
    assert op["done"] is True and op["metadata"]["cancelled"] is True


def test_killed_worker_loses_its_lease_to_another_site(
    local_runtime: LocalRuntime,
    api: httpx.Client,
    new_site: Callable[..., SiteSession],
    client: Callable[[SiteSession], SiteClient],
) -> None:
    # Given site A claimed a job with a 10 s lease and then died (no heartbeat, no release)
    _, wf_id = register_workflow(local_runtime, lease_seconds=10)
    job_id = add_job(local_runtime, wf_id)
    a, b = new_site(), new_site()
    api_a, api_b = client(a), client(b)
    old = api_a.claim(job_id)
    # When site B asks within the lease, Then it is told who holds the job
    with pytest.raises(Conflict, match=a.site_id):
        api_b.claim(job_id)
    assert api_b.claim_next(wf_id) is None
    # When the lease has ended, B's claim-next takes the job over and completes it
    time.sleep(10.5)
    new = api_b.claim_next(wf_id)
    assert new is not None and new.metadata["job"]["id"] == job_id and new.metadata["attempt"] == 2
    api_b.complete(new.id, {"outputs": ["b"]})
    # Then A, coming back, is fenced off: its operation is finished and changes nothing
    assert api_a.get_operation(old.id).result["code"] == "lease_expired"
    with pytest.raises(Conflict):
        api_a.complete(old.id, {"outputs": ["a"]})
    with pytest.raises(Conflict, match="done"):
        api_a.release(job_id)
    job = get_job(api, a, job_id)
    assert job["status"] == "done" and job["result"] == {"outputs": ["b"]} and job["site_id"] == b.site_id


class _NmdcOperation(BaseModel):
    """The NMDC Runtime's Operation model, as its site client parses operations."""

    id: str
    done: bool
    expire_time: datetime
    result: Any = None
    metadata: dict[str, Any] | None = None


class _NmdcListOperationsResponse(BaseModel):
    resources: list[_NmdcOperation]
    next_page_token: str | None = None


def test_nmdc_site_client_calls_work_unchanged(
    local_runtime: LocalRuntime, new_site: Callable[..., SiteSession]
) -> None:
    """The requests RuntimeApiSiteClient makes (claim_job, get_operation, update_operation,
    list_operations), sent as it sends them: requests, form token, no claim body, params dicts."""
    import requests

    # Given a job and a site that authenticates as the NMDC client does
    _, wf_id = register_workflow(local_runtime)
    job_ids = [add_job(local_runtime, wf_id) for _ in range(3)]
    site = new_site()
    base = local_runtime.base_url
    token = requests.post(
        base + "/token",
        data={
            "grant_type": "client_credentials",
            "client_id": site.client_id,
            "client_secret": site.client_secret,
        },
        timeout=10,
    ).json()
    assert set(token["expires"]) >= {"days", "hours", "minutes"}
    headers = {"Authorization": f"Bearer {token['access_token']}"}

    def request(method: str, path: str, data: Any = None) -> requests.Response:
        kwargs: dict[str, Any] = {"url": base + path, "headers": headers, "timeout": 10}
        if method == "GET":
            kwargs["params"] = data
        else:
            kwargs["json"] = data
        rv = requests.request(method, **kwargs)
        rv.raise_for_status()
        return rv

    # When it claims the jobs (POST with no body), reads and updates an operation
    ops = [_NmdcOperation(**request("POST", f"/jobs/{j}:claim").json()) for j in job_ids]
    op = _NmdcOperation(**request("GET", f"/operations/{ops[0].id}").json())
    assert op.done is False and op.metadata and op.metadata["job"]["id"] == job_ids[0]
    updated = request("PATCH", f"/operations/{ops[0].id}", {"done": True, "result": {"outputs": []}}).json()
    assert _NmdcOperation(**updated).done is True
    # And lists operations page by page as list_operations does (filter, max_page_size, page_token)
    req: dict[str, Any] = {"filter": json.dumps({"done": False}), "max_page_size": 1}
    seen: list[str] = []
    while True:
        lor = _NmdcListOperationsResponse(**request("GET", "/operations", req).json())
        seen += [o.id for o in lor.resources]
        if not lor.next_page_token:
            break
        req = {**req, "page_token": lor.next_page_token}
    # Then every call parsed, and the live operations are exactly the two unfinished ones
    assert sorted(seen) == sorted(o.id for o in ops[1:])


def test_heartbeats_keep_a_long_job_past_its_first_lease(
    local_runtime: LocalRuntime,
    api: httpx.Client,
    new_site: Callable[..., SiteSession],
    client: Callable[[SiteSession], SiteClient],
    tmp_path: Path,
) -> None:
    # Given a job with a 10 s lease, and a worker whose command takes 13 s
    _, wf_id = register_workflow(local_runtime, lease_seconds=10)
    job_id = add_job(local_runtime, wf_id)
    a, b = new_site(), new_site()
    proc = subprocess.Popen(
        [
            JOBTRIGGERS,
            "site",
            "work",
            "--workflow",
            wf_id,
            "--once",
            "--",
            sys.executable,
            "-c",
            "import time, json; time.sleep(13); print(json.dumps({'slept': 13}))",
        ],
        env=site_env(local_runtime, a, tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # When another site tries to take the job after the first lease would have ended
    time.sleep(11.5)
    # Then the worker's heartbeats (every ~3 s) kept the lease: the job is still A's
    with pytest.raises(Conflict, match=a.site_id):
        client(b).claim(job_id)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    job = get_job(api, a, job_id)
    assert job["status"] == "done" and job["result"] == {"slept": 13} and job["attempts"] == 1
    op = client(a).get_operation(job["operation_id"])
    assert op.expire_time > op.metadata["job"]["lease_expires_at"]  # the lease was renewed


def test_site_cli_lists_claims_releases_and_shows_operations(
    local_runtime: LocalRuntime, new_site: Callable[..., SiteSession], tmp_path: Path
) -> None:
    # Given two pending jobs of a fresh workflow and a site's environment
    _, wf_id = register_workflow(local_runtime)
    job_ids = sorted(add_job(local_runtime, wf_id) for _ in range(2))
    env = site_env(local_runtime, new_site(), tmp_path)

    def cli(*args: str) -> Any:
        proc = subprocess.run(
            [JOBTRIGGERS, "site", *args], env=env, capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout) if "--json" in args else proc.stdout

    # When a person lists the claimable jobs, claims one, and looks at the operations
    assert sorted(j["id"] for j in cli("jobs", "--workflow", wf_id, "--claimable", "--json")) == job_ids
    op = cli("claim", job_ids[0], "--json")
    claimable = [j["id"] for j in cli("jobs", "--workflow", wf_id, "--claimable", "--json")]
    live = cli("ops", "--live", "--json")
    # Then the claimed job left the claimable list and its operation is live
    assert claimable == [job_ids[1]]
    assert [o["id"] for o in live] == [op["id"]]
    # When it releases the job, Then the job is claimable again and the operation cancelled
    released = cli("release", job_ids[0], "--json")
    assert released["metadata"]["cancelled"] is True
    assert sorted(j["id"] for j in cli("jobs", "--workflow", wf_id, "--claimable", "--json")) == job_ids
    assert "jobs" in cli("jobs", "--workflow", wf_id)  # the table for people
