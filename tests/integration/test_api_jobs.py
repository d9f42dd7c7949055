"""GET /jobs (filters, `filter` JSON, pages) and GET /jobs/{id}, through ApiFunction, against moto."""

from __future__ import annotations

import json

import pytest

from jobtriggers.dal.jobs import JobRepository
from jobtriggers.models import job_id_for
from tests.api_events import ApiCaller, load_function, module_tables, unique, use_tables
from tests.jobs import put_new_job


@pytest.fixture(scope="module")
def api() -> ApiCaller:
    return ApiCaller(load_function("api"))


@pytest.fixture(scope="module")
def job_tables(dynamo_endpoint: str) -> dict[str, str]:
    return module_tables(seed=False)


@pytest.fixture(autouse=True)
def _tables(job_tables: dict[str, str]) -> None:
    use_tables(job_tables)


def _make_jobs(workflow_id: str, n: int) -> list[str]:
    """n pending jobs of one workflow, created in order (oldest first)."""
    repo = JobRepository()
    return [
        put_new_job(workflow_id, f"{workflow_id}-obj-{i:03d}", f"2024-01-01T00:00:{i:02d}.000Z", repo=repo).id
        for i in range(n)
    ]


def test_list_by_workflow_in_nmdc_shape(api: ApiCaller) -> None:
    wf = unique("wf")
    ids = _make_jobs(wf, 3)
    status, body = api("GET", "/jobs", query={"workflow_id": wf})
    assert status == 200
    assert [j["id"] for j in body["resources"]] == ids
    job = body["resources"][0]
    assert job["workflow"] == {"id": wf}
    assert job["config"] == {"object_id": f"{wf}-obj-000"}
    assert (job["status"], job["claims"]) == ("pending", [])
    assert body["next_page_token"] is None


def test_filter_json_as_the_nmdc_site_client_sends_it(api: ApiCaller) -> None:
    wf = unique("wf")
    ids = _make_jobs(wf, 2)
    # When the filter names the workflow and an object (JSON equalities)
    flt = json.dumps({"workflow.id": wf, "config.object_id": f"{wf}-obj-001"})
    status, body = api("GET", "/jobs", query={"filter": flt})
    # Then only that job is listed
    assert status == 200
    assert [j["id"] for j in body["resources"]] == [ids[1]]


def test_filter_by_status(api: ApiCaller) -> None:
    wf = unique("wf")
    ids = _make_jobs(wf, 2)
    status, body = api("GET", "/jobs", query={"filter": json.dumps({"workflow.id": wf, "status": "pending"})})
    assert (status, [j["id"] for j in body["resources"]]) == (200, ids)
    status, body = api("GET", "/jobs", query={"workflow_id": wf, "status": "done"})
    assert (status, body["resources"]) == (200, [])


def test_pages_follow_and_a_token_can_be_used_again(api: ApiCaller) -> None:
    wf = unique("wf")
    ids = _make_jobs(wf, 5)
    # When the jobs are read two at a time
    seen: list[str] = []
    token = None
    tokens = []
    while True:
        query = {"workflow_id": wf, "max_page_size": "2", **({"page_token": token} if token else {})}
        status, body = api("GET", "/jobs", query=query)
        assert status == 200
        seen += [j["id"] for j in body["resources"]]
        token = body["next_page_token"]
        if not token:
            break
        tokens.append(token)
    # Then every job came exactly once, in order
    assert seen == ids
    # And the first page token gives the same second page again (stateless, reusable)
    again = api("GET", "/jobs", query={"workflow_id": wf, "max_page_size": "2", "page_token": tokens[0]})[1]
    assert [j["id"] for j in again["resources"]] == ids[2:4]


def test_page_token_of_another_query_is_400(api: ApiCaller) -> None:
    wf = unique("wf")
    _make_jobs(wf, 3)
    token = api("GET", "/jobs", query={"workflow_id": wf, "max_page_size": "1"})[1]["next_page_token"]
    status, body = api("GET", "/jobs", query={"workflow_id": "other", "page_token": token})
    assert status == 400
    assert "different query" in body["detail"]
    status, body = api("GET", "/jobs", query={"page_token": "garbage!"})
    assert status == 400


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ({"max_page_size": "0"}, "greater than or equal to 1"),
        ({"max_page_size": "1001"}, "less than or equal to 1000"),
        ({"max_page_size": "many"}, "valid integer"),
        ({"status": "running"}, "pending"),
        ({"filter": "{not json"}, "not valid JSON"),
        ({"filter": "[1]"}, "JSON object"),
        ({"filter": '{"$or": []}'}, "$or takes a non-empty list"),
        ({"filter": '{"config.object_id": {"$regex": "."}}'}, "operator $regex is not supported"),
        ({"filter": '{"$where": "1"}'}, "operator $where is not supported"),
        ({"filter": '{"status": "running"}'}, "status 'running'"),
        ({"filter": '{"status": {"$in": ["pending", "stuck"]}}'}, "status 'stuck'"),
        ({"filter": '{"workflow.id": "a"}', "workflow_id": "b"}, "disagree"),
        ({"projection": "config..git_repo"}, "projection field"),
    ],
)
def test_bad_list_parameters_are_422_naming_them(api: ApiCaller, query: dict, fragment: str) -> None:
    status, body = api("GET", "/jobs", query=query)
    assert status == 422
    assert fragment in body["detail"][0]["msg"]
    assert body["detail"][0]["loc"][0] == "query"


def test_get_job_and_404(api: ApiCaller) -> None:
    wf = unique("wf")
    [job_id] = _make_jobs(wf, 1)
    status, job = api("GET", "/jobs/{job_id}", {"job_id": job_id})
    assert (status, job["id"], job["workflow"]["id"]) == (200, job_id, wf)
    status, body = api("GET", "/jobs/{job_id}", {"job_id": job_id_for(wf, "nothing")})
    assert status == 404 and "does not exist" in body["detail"]
    status, body = api("GET", "/jobs/{job_id}", {"job_id": "not-a-job-id"})
    assert status == 404


def test_get_job_with_invalid_id_is_422(api: ApiCaller) -> None:
    status, body = api("GET", "/jobs/{job_id}", {"job_id": "bad/id"})
    assert status == 422
    assert body["detail"][0]["loc"] == ["path", "job_id"]


@pytest.mark.parametrize(("resource", "params"), [("/jobs", None), ("/jobs/{job_id}", {"job_id": "abc"})])
def test_jobs_without_site_are_401(api: ApiCaller, resource: str, params: dict | None) -> None:
    status, body = api("GET", resource, params, site_id=None)
    assert status == 401
    assert "not authenticated" in body["detail"]
