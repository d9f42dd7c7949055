"""Issue 8's claim defects over HTTP, against the local runtime: what a site sees.

Each test registers workflows (and capabilities) of its own and writes its jobs straight into the
runtime's tables where it needs many, or leases that ended long ago (setup, not what is tested).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import httpx
import pytest

from jobtriggers.dal.dynamo import to_item
from jobtriggers.dal.jobs import job_item
from jobtriggers.dal.operations import operation_item
from jobtriggers.dal.registry import RegistryRepository
from jobtriggers.local.runtime import LocalRuntime
from jobtriggers.models import Capability, Job, Workflow, iso
from tests.jobs import claimed, operation_of

from .conftest import SiteSession

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def new_workflow(runtime: LocalRuntime, capability_ids: tuple[str, ...] = (), **limits: Any) -> str:
    wf_id = f"e2e-hard-{uuid.uuid4().hex[:8]}"
    registry = RegistryRepository(runtime.tables["REGISTRY_TABLE"])
    for cap in capability_ids:
        registry.put("capability", Capability(id=cap, name=cap, created_at=T0))
    registry.put(
        "workflow",
        Workflow(id=wf_id, name=wf_id, created_at=T0, capability_ids=list(capability_ids), **limits),
    )
    return wf_id


class Table:
    """Straight writes into one of the runtime's tables (BatchWriteItem), and their removal."""

    def __init__(self, runtime: LocalRuntime, env_var: str, key: str) -> None:
        self.client = boto3.client("dynamodb", endpoint_url=runtime.dynamodb_endpoint)
        self.name = runtime.tables[env_var]
        self.key = key

    def put(self, items: list[dict[str, Any]]) -> None:
        self._batch([{"PutRequest": {"Item": to_item(i)}} for i in items])

    def delete(self, items: list[dict[str, Any]]) -> None:
        self._batch([{"DeleteRequest": {"Key": to_item({self.key: i[self.key]})}} for i in items])

    def _batch(self, requests: list[dict[str, Any]]) -> None:
        for start in range(0, len(requests), 25):
            pending: dict[str, Any] = {self.name: requests[start : start + 25]}
            while pending:
                pending = self.client.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}


class JobsTable(Table):
    """The jobs table: jobs written as the service keeps them (job_item), and removed afterwards
    (the runtime is shared)."""

    def __init__(self, runtime: LocalRuntime) -> None:
        super().__init__(runtime, "JOBS_TABLE", "job_key")
        self.written: list[dict[str, Any]] = []

    def put_jobs(self, jobs: list[Job]) -> None:
        items = [job_item(j) for j in jobs]
        self.written.extend(items)
        self.put(items)


@pytest.fixture
def jobs_table(local_runtime: LocalRuntime) -> Iterator[JobsTable]:
    table = JobsTable(local_runtime)
    yield table
    table.delete(table.written)


def pending(workflow_id: str, n: int, start: datetime) -> list[Job]:
    """New jobs (as created: version 1), `start` + i ms apart."""
    return [
        Job.new(
            workflow_id, f"obj-{uuid.uuid4().hex[:10]}", iso(start + timedelta(milliseconds=i))
        ).model_copy(update={"version": 1})
        for i in range(n)
    ]


def get(api: httpx.Client, site: SiteSession, path: str, **params: Any) -> Any:
    r = api.get(path, params=params, headers=site.headers)
    assert r.status_code == 200, r.text
    return r.json()


def test_item1_claimable_listing_pages_through_ended_leases(
    local_runtime: LocalRuntime,
    api: httpx.Client,
    new_site: Callable[..., SiteSession],
    jobs_table: JobsTable,
) -> None:
    # Given three jobs of a workflow whose holders' leases ended an hour ago
    wf = new_workflow(local_runtime)
    ops = Table(local_runtime, "OPERATIONS_TABLE", "id")
    end = datetime.now(UTC) - timedelta(hours=1)
    items = [
        claimed(
            job,
            site_id="site-gone",
            op_id=f"op-{uuid.uuid4().hex}",
            lease_expires_at=iso(end + timedelta(seconds=i)),
        )
        for i, job in enumerate(pending(wf, 3, T0))
    ]
    jobs_table.put_jobs(items)
    ops.put([operation_item(operation_of(j)) for j in items])
    site = new_site()
    # When a site lists the claimable jobs of that workflow one per page
    seen: list[str] = []
    params: dict[str, Any] = {"workflow_id": wf, "claimable": "true", "max_page_size": 1}
    for _ in range(10):
        page = get(api, site, "/jobs", **params)
        seen += [j["id"] for j in page["resources"]]
        if not page["next_page_token"]:
            break
        params["page_token"] = page["next_page_token"]
    # Then every page token it was given is accepted, and each ended lease is listed once
    assert sorted(seen) == sorted(i.id for i in items)


def test_item2_claim_next_answers_a_job_behind_401_older_ones_the_site_cannot_run(
    local_runtime: LocalRuntime,
    api: httpx.Client,
    new_site: Callable[..., SiteSession],
    jobs_table: JobsTable,
) -> None:
    # Given 401 of the oldest pending jobs, of a workflow needing a capability the site lacks,
    # and an older-than-anything-else job of a workflow needing one it has
    suffix = uuid.uuid4().hex[:8]
    lacking, having = f"cap-x-{suffix}", f"cap-y-{suffix}"
    blocked = new_workflow(local_runtime, (lacking,))
    runnable = new_workflow(local_runtime, (having,))
    jobs_table.put_jobs(pending(blocked, 401, datetime(2020, 1, 1, tzinfo=UTC)))
    [mine] = pending(runnable, 1, datetime(2021, 1, 1, tzinfo=UTC))
    jobs_table.put_jobs([mine])
    site = new_site(capability_ids=[having])
    # When the site asks for the next job (no body, as the NMDC client does)
    first = api.post("/jobs:claim", headers=site.headers)
    # Then it gets a job, not 204
    assert first.status_code == 200, first.text
    # And asking on, it reaches its own job before ever hearing 204 (other tests' leftovers of
    # workflows any site may run can come first: workflows are visited from a random start)
    taken = [first.json()["metadata"]["job"]["id"]]
    while mine.id not in taken and len(taken) < 500:
        r = api.post("/jobs:claim", headers=site.headers)
        assert r.status_code == 200, r.text
        taken.append(r.json()["metadata"]["job"]["id"])
    assert mine.id in taken


def test_item2_jobs_of_a_workflow_gone_from_the_registry_are_shown_as_such_and_claimed_by_nobody(
    local_runtime: LocalRuntime,
    api: httpx.Client,
    new_site: Callable[..., SiteSession],
    jobs_table: JobsTable,
) -> None:
    # Given two pending jobs of a workflow that was then removed from the registry
    wf = new_workflow(local_runtime)
    items = pending(wf, 2, T0)
    jobs_table.put_jobs(items)
    RegistryRepository(local_runtime.tables["REGISTRY_TABLE"]).delete("workflow", wf)
    site = new_site()
    # When an operator looks at them, Then each says its workflow is missing
    job = get(api, site, f"/jobs/{items[0].id}")
    assert job["workflow_missing"] is True and job["status"] == "pending"
    listed = get(api, site, "/jobs", workflow_id=wf, workflow_missing="true")["resources"]
    assert sorted(j["id"] for j in listed) == sorted(i.id for i in items)
    assert get(api, site, "/jobs", workflow_id=wf, workflow_missing="false")["resources"] == []
    # And they are not claimable: not listed as such, and claim-next for that workflow is 422
    assert get(api, site, "/jobs", workflow_id=wf, claimable="true")["resources"] == []
    r = api.post("/jobs:claim", json={"workflow_id": wf}, headers=site.headers)
    assert r.status_code == 422 and wf in r.text
    # And a job of a workflow that exists says so
    [present] = pending(new_workflow(local_runtime), 1, T0)
    jobs_table.put_jobs([present])
    assert get(api, site, f"/jobs/{present.id}")["workflow_missing"] is False


def test_item4_a_release_gives_its_attempt_back(
    local_runtime: LocalRuntime,
    api: httpx.Client,
    new_site: Callable[..., SiteSession],
    jobs_table: JobsTable,
) -> None:
    # Given a job of a workflow with max_attempts 2
    wf = new_workflow(local_runtime, max_attempts=2)
    [item] = pending(wf, 1, T0)
    jobs_table.put_jobs([item])
    site = new_site()
    # When the site claims and releases it twice, then its third claim reports an error
    for _ in range(2):
        assert api.post(f"/jobs/{item.id}:claim", headers=site.headers).status_code == 200
        assert api.post(f"/jobs/{item.id}:release", headers=site.headers).status_code == 200
    assert get(api, site, f"/jobs/{item.id}")["attempts"] == 0
    op = api.post(f"/jobs/{item.id}:claim", headers=site.headers).json()
    assert op["metadata"]["attempt"] == 1
    error = {"code": "exit_1", "message": "boom"}
    r = api.patch(f"/operations/{op['id']}", json={"done": True, "result": error}, headers=site.headers)
    assert r.status_code == 200, r.text
    # Then that was its first failed attempt: pending again, the error visible as last_error
    job = get(api, site, f"/jobs/{item.id}")
    assert (job["status"], job["attempts"], job["last_error"]) == ("pending", 1, error)


def test_item5_a_claim_repeated_with_its_idempotency_key_is_answered_not_repeated(
    local_runtime: LocalRuntime,
    api: httpx.Client,
    new_site: Callable[..., SiteSession],
    jobs_table: JobsTable,
) -> None:
    # Given two pending jobs of a workflow and a site
    wf = new_workflow(local_runtime)
    items = pending(wf, 2, T0)
    jobs_table.put_jobs(items)
    site = new_site()
    headers = {**site.headers, "Idempotency-Key": uuid.uuid4().hex}
    # When the site sends its claim, and sends it again (as after a 502 that hid the first answer)
    first = api.post("/jobs:claim", json={"workflow_id": wf}, headers=headers)
    again = api.post("/jobs:claim", json={"workflow_id": wf}, headers=headers)
    # Then both answers are the same operation, and one job is claimed, the other still pending
    assert first.status_code == again.status_code == 200, (first.text, again.text)
    assert again.json() == first.json()
    statuses = sorted(get(api, site, f"/jobs/{i.id}")["status"] for i in items)
    assert statuses == ["claimed", "pending"]
