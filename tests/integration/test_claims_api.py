"""Claim, release and operation routes through ApiFunction (REST proxy events), against moto:
the status codes and bodies a site sees for each rule."""

from __future__ import annotations

import json

import pytest

from jobtriggers.dal.dynamo import dynamodb, to_item
from jobtriggers.dal.registry import RegistryRepository
from jobtriggers.models import Workflow, iso, utcnow
from jobtriggers.settings import table_names
from tests.api_events import ApiCaller, load_function, module_tables, unique, use_tables
from tests.jobs import put_new_job

JOB = "/jobs/{job_id}"
OP = "/operations/{operation_id}"


@pytest.fixture(scope="module")
def api() -> ApiCaller:
    return ApiCaller(load_function("api"))


@pytest.fixture(scope="module")
def claim_tables(dynamo_endpoint: str) -> dict[str, str]:
    env = module_tables(seed=False)
    registry = RegistryRepository()
    registry.put("workflow", Workflow(id="wf", name="wf", created_at=utcnow(), max_attempts=2))
    registry.put("workflow", Workflow(id="gpu-wf", name="gpu", created_at=utcnow(), capability_ids=["gpu"]))
    return env


@pytest.fixture(autouse=True)
def _tables(claim_tables: dict[str, str]) -> None:
    use_tables(claim_tables)


def make_site(capabilities: list[str] | None = None) -> str:
    site_id = unique("site")
    item = {
        "pk": f"site#{site_id}",
        "kind": "site",
        "id": site_id,
        "client_id": unique("client"),
        "created_at": iso(utcnow()),
        "capability_ids": capabilities or [],
        "credential_version": 1,
    }
    dynamodb().put_item(TableName=table_names().sites_table, Item=to_item(item))
    return site_id


def make_job(workflow_id: str = "wf") -> str:
    return put_new_job(workflow_id, unique("obj"), iso(utcnow())).id


def claim(api: ApiCaller, job_id: str, site: str) -> tuple[int, dict]:
    return api("POST", JOB, {"job_id": f"{job_id}:claim"}, site_id=site)


def test_claim_answers_by_the_rules(api: ApiCaller) -> None:
    # Given a pending job and two sites
    job_id, a, b = make_job(), make_site(), make_site()
    # When A claims it (no body, as the NMDC client does), Then 200 with an operation
    status, op = claim(api, job_id, a)
    assert status == 200
    assert set(op) == {"id", "done", "expire_time", "result", "metadata"}
    assert op["metadata"]["site_id"] == a and op["metadata"]["job"]["id"] == job_id
    # And A again gets the same operation; B gets 409 naming A and the lease end
    assert claim(api, job_id, a) == (200, op)
    status, body = claim(api, job_id, b)
    assert status == 409 and a in body["detail"] and op["metadata"]["lease_expires_at"] in body["detail"]
    # And an unknown job is 404, a job id of the wrong shape 422, no action suffix 404
    assert claim(api, "bm9wZSNub3Bl", a)[0] == 404
    assert claim(api, "not*an*id", a)[0] in (404, 422)
    assert api("POST", JOB, {"job_id": job_id}, site_id=a)[0] == 404
    # And without the authorizer's site, 401
    assert claim(api, job_id, None)[0] == 401  # type: ignore[arg-type]


def test_capability_403_names_what_is_missing(api: ApiCaller) -> None:
    # Given a job that needs gpu
    job_id = make_job("gpu-wf")
    # When a site without gpu claims it, Then 403 naming gpu; with gpu, 200
    status, body = claim(api, job_id, make_site())
    assert status == 403 and "gpu" in body["detail"]
    assert claim(api, job_id, make_site(["gpu"]))[0] == 200


def test_claim_next_200_then_204(api: ApiCaller) -> None:
    # Given one pending job of a workflow of its own
    wf = unique("wf")
    RegistryRepository().put("workflow", Workflow(id=wf, name=wf, created_at=utcnow()))
    job_id = make_job(wf)
    site = make_site()
    # When a site claims the next job of that workflow twice
    first = api("POST", "/jobs:claim", body={"workflow_id": wf}, site_id=site)
    second = api("POST", "/jobs:claim", body={"workflow_id": wf}, site_id=site)
    # Then it gets the job, then 204 with no body
    assert first[0] == 200 and first[1]["metadata"]["job"]["id"] == job_id
    assert second == (204, None)
    # And a workflow that does not exist, or an unknown field, is 422
    assert api("POST", "/jobs:claim", body={"workflow_id": "nope"}, site_id=site)[0] == 422
    assert api("POST", "/jobs:claim", body={"workflow": wf}, site_id=site)[0] == 422


def test_patch_rules_over_http(api: ApiCaller) -> None:
    # Given site A's operation on a job of a workflow with max_attempts 2
    job_id, a, b = make_job(), make_site(), make_site()
    _, op = claim(api, job_id, a)
    path = {"operation_id": op["id"]}
    # When another site reads or patches it, Then 403
    assert api("GET", OP, path, site_id=b)[0] == 403
    assert api("PATCH", OP, path, body={"metadata": {"x": 1}}, site_id=b)[0] == 403
    # When the holder changes a key the service owns, or sends an unknown field, Then 422
    status, body = api("PATCH", OP, path, body={"metadata": {"site_id": b}}, site_id=a)
    assert status == 422 and "site_id" in json.dumps(body)
    assert api("PATCH", OP, path, body={"state": "running"}, site_id=a)[0] == 422
    # When it heartbeats with progress, Then 200 with the metadata merged
    status, body = api("PATCH", OP, path, body={"metadata": {"progress": 0.25}}, site_id=a)
    assert status == 200 and body["metadata"]["progress"] == 0.25 and body["done"] is False
    # When it reports an error, Then the job is pending again (attempt 1 of 2)
    error = {"code": "exit_1", "message": "boom"}
    status, body = api("PATCH", OP, path, body={"done": True, "result": error}, site_id=a)
    assert status == 200 and body["done"] is True and body["result"] == error
    assert api("GET", JOB, {"job_id": job_id}, site_id=a)[1]["status"] == "pending"
    # And a PATCH to the finished operation is 409
    assert api("PATCH", OP, path, body={"metadata": {"late": 1}}, site_id=a)[0] == 409


def test_release_over_http(api: ApiCaller) -> None:
    # Given site A holds a job
    job_id, a, b = make_job(), make_site(), make_site()
    _, op = claim(api, job_id, a)
    release = {"job_id": f"{job_id}:release"}
    # When B releases it, Then 403; when A does, 200 and the operation is cancelled
    assert api("POST", JOB, release, site_id=b)[0] == 403
    status, body = api("POST", JOB, release, site_id=a)
    assert status == 200 and body["id"] == op["id"] and body["metadata"]["cancelled"] is True
    # And releasing a job that is not claimed is 409
    assert api("POST", JOB, release, site_id=a)[0] == 409


def test_operations_listing_and_claimable_jobs(api: ApiCaller) -> None:
    # Given site A with one live and one finished operation
    a = make_site()
    live_job, done_job = make_job(), make_job()
    _, live = claim(api, live_job, a)
    _, done = claim(api, done_job, a)
    api("PATCH", OP, {"operation_id": done["id"]}, body={"done": True, "result": {"ok": True}}, site_id=a)
    # When A lists its operations by `done` and by the NMDC `filter`
    _, by_done = api("GET", "/operations", query={"done": "false"}, site_id=a)
    _, by_filter = api("GET", "/operations", query={"filter": json.dumps({"done": True})}, site_id=a)
    # Then each shows the right one, and another site sees none of them
    assert [o["id"] for o in by_done["resources"]] == [live["id"]]
    assert [o["id"] for o in by_filter["resources"]] == [done["id"]]
    assert api("GET", "/operations", site_id=make_site())[1]["resources"] == []
    # And a filter on any served path selects on it (here the job), while an operator outside the
    # subset, or another site's id, is 422
    by_job = api("GET", "/operations", query={"filter": json.dumps({"metadata.job.id": live_job})}, site_id=a)
    assert [o["id"] for o in by_job[1]["resources"]] == [live["id"]]
    assert api("GET", "/operations", query={"filter": '{"id": {"$regex": "x"}}'}, site_id=a)[0] == 422
    assert api("GET", "/operations", query={"filter": '{"metadata.site_id": "other"}'}, site_id=a)[0] == 422
    # And GET /jobs?claimable=true lists pending jobs but not the claimed or done ones
    status, body = api(
        "GET", "/jobs", query={"claimable": "true", "workflow_id": "wf", "max_page_size": "1000"}, site_id=a
    )
    listed = {j["id"] for j in body["resources"]}
    assert status == 200 and live_job not in listed and done_job not in listed
    assert all(j["status"] == "pending" for j in body["resources"])
    assert api("GET", "/jobs", query={"claimable": "true", "status": "done"}, site_id=a)[0] == 422


def test_values_the_store_cannot_keep_are_422_not_500(api: ApiCaller) -> None:
    # Given site A's live operation
    a = make_site()
    _, op = claim(api, make_job(), a)
    path = {"operation_id": op["id"]}
    # When it sends NaN, or a number with more digits than DynamoDB keeps
    nan = api("PATCH", OP, path, raw_body='{"metadata": {"ratio": NaN}}', site_id=a)
    huge = api("PATCH", OP, path, raw_body='{"metadata": {"n": 1' + "0" * 60 + "}}", site_id=a)
    # Then both are 422 that say what is wrong, and the operation is still live
    assert nan[0] == 422 and "NaN" in json.dumps(nan[1])
    assert huge[0] == 422, huge
    assert api("GET", OP, path, site_id=a)[1]["done"] is False
