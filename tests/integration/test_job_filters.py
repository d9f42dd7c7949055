"""GET /jobs and GET /operations with MongoDB filters, against moto: the index each reads, bounded
pages, page tokens, projection, and refusals."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from jobtriggers.dal.dynamo import dynamodb
from jobtriggers.dal.jobs import JobRepository
from jobtriggers.dal.operations import OperationRepository
from jobtriggers.dal.pages import ReadBudget
from jobtriggers.dal.registry import RegistryRepository
from jobtriggers.logic.filters import parse_filter, parse_projection
from jobtriggers.logic.listing import JobListing, ListQuery, OperationListing
from jobtriggers.models import Job, JobEventType, Transition, Workflow, iso, utcnow
from tests.api_events import ApiCaller, load_function, module_tables, unique, use_tables
from tests.jobs import put_new_job

JOB = "/jobs/{job_id}"
OP = "/operations/{operation_id}"


@pytest.fixture(scope="module")
def api() -> ApiCaller:
    return ApiCaller(load_function("api"))


@pytest.fixture(scope="module")
def filter_tables(dynamo_endpoint: str) -> dict[str, str]:
    env = module_tables(seed=False)
    RegistryRepository().put("workflow", Workflow(id="wf", name="wf", created_at=utcnow()))
    return env


@pytest.fixture(autouse=True)
def _tables(filter_tables: dict[str, str]) -> None:
    use_tables(filter_tables)


@contextmanager
def queries() -> Iterator[list[dict[str, Any]]]:
    """The Query requests the data access sends inside the block (their parameters)."""
    seen: list[dict[str, Any]] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        seen.append(dict(params))

    client = dynamodb()
    client.meta.events.register("provide-client-params.dynamodb.Query", record, unique_id="test-queries")
    try:
        yield seen
    finally:
        client.meta.events.unregister("provide-client-params.dynamodb.Query", unique_id="test-queries")


def submitted(workflow_id: str, config: dict[str, Any], site: str = "jgi") -> Job:
    now = iso(utcnow())
    job = Job.submitted(workflow_id, config, now, site)
    assert JobRepository().create(job, Transition(events=[JobEventType.created], at=now, by=site))
    return job


def make_site(api_site: str | None = None) -> str:
    from jobtriggers.dal.sites import SiteRepository
    from jobtriggers.models.sites import ClientRecord, Site

    site_id = api_site or unique("site")
    site = Site(id=site_id, client_id=unique("client"), created_at=iso(utcnow()))
    SiteRepository().create(
        site, ClientRecord(client_id=site.client_id, site_id=site_id, secret_hash={}, credential_version=1)
    )
    return site_id


def listing(budget: ReadBudget | None = None) -> JobListing:
    return JobListing(JobRepository(), RegistryRepository(), budget)


def query(
    flt: dict[str, Any], limit: int = 20, token: str | None = None, projection: str | None = None
) -> ListQuery:
    return ListQuery(parse_filter(json.dumps(flt)), parse_projection(projection), limit, token)


# --------------------------------------------------------------------------- index choice through HTTP


@pytest.mark.parametrize(
    ("flt", "index"),
    [
        ({"config.object_id": "o-1"}, "by_object"),
        ({"workflow.id": {"$in": ["a", "b"]}, "claims": {"$size": 0}}, "by_workflow"),
        ({"workflow.id": "a", "status": "pending"}, "by_workflow_status"),
        ({"status": "failed"}, "by_status"),
        ({"site_id": "nersc"}, "by_site"),
        ({"config.git_repo": "https://github.com/x/y"}, "by_created"),
    ],
)
def test_get_jobs_reads_the_index_the_filter_pins(api: ApiCaller, flt: dict[str, Any], index: str) -> None:
    with queries() as seen:
        status, _ = api("GET", "/jobs", query={"filter": json.dumps(flt)}, site_id="s")
    assert status == 200
    assert {q["IndexName"] for q in seen} == {index}


def test_get_operations_reads_the_callers_own_by_done_or_not(api: ApiCaller) -> None:
    for flt, index in (({"done": False}, "by_site_done"), ({"metadata.extra.x": 1}, "by_site")):
        with queries() as seen:
            assert api("GET", "/operations", query={"filter": json.dumps(flt)}, site_id="s")[0] == 200
        assert {q["IndexName"] for q in seen} == {index}
        assert all("s" in json.dumps(q["ExpressionAttributeValues"]) for q in seen)


# --------------------------------------------------------------------------- bounded pages


def test_a_config_field_filter_reads_a_bounded_page_at_a_time_and_finds_every_match_once() -> None:
    # Given 30 jobs of a workflow, 3 of them of one repository (every tenth)
    wf = unique("Metagenome Annotation: v1.1")
    repo = unique("https://github.com/microbiomedata/mg")
    matching = []
    for n in range(30):
        job = submitted(wf, {"git_repo": repo if n % 10 == 0 else "elsewhere", "n": n})
        if n % 10 == 0:
            matching.append(job.id)
    # When the scheduler's filter is listed with at most 4 items read per page
    found: list[str] = []
    token: str | None = None
    pages = []
    while True:
        page = listing(ReadBudget(items=4)).page(
            query({"workflow.id": wf, "config.git_repo": repo}, 100, token)
        )
        pages.append(page.stats)
        found += [r["id"] for r in page.resources]
        token = page.next_page_token
        if not token:
            break
    # Then each page read at most 4 items, some pages held no match but went on, and every match
    # came exactly once
    assert sorted(found) == sorted(matching)
    assert all(s.items_read <= 4 for s in pages)
    assert any(s.results == 0 for s in pages[:-1])
    assert sum(s.items_read for s in pages) == 30


def test_an_unfiltered_page_reads_exactly_what_it_returns_and_tokens_can_be_used_again() -> None:
    wf = unique("wf")
    ids = [put_new_job(wf, f"o{n:02d}", f"2024-01-01T00:00:{n:02d}.000Z").id for n in range(7)]
    first = listing().page(query({"workflow.id": wf}, 3))
    assert [r["id"] for r in first.resources] == ids[:3]
    assert first.stats.items_read == 3 and first.next_page_token
    second = listing().page(query({"workflow.id": wf}, 3, first.next_page_token))
    again = listing().page(query({"workflow.id": wf}, 3, first.next_page_token))
    assert [r["id"] for r in second.resources] == [r["id"] for r in again.resources] == ids[3:6]
    third = listing().page(query({"workflow.id": wf}, 3, second.next_page_token))
    assert [r["id"] for r in third.resources] == ids[6:] and third.next_page_token is None


def test_a_page_that_stops_inside_a_query_goes_on_right_after_the_last_item_it_looked_at() -> None:
    # Given jobs where matches are scarce at first, then dense (the page's second Query asks for
    # more than it needs, and stops inside it)
    wf = unique("wf")
    want = []
    for n in range(12):
        job = submitted(wf, {"keep": n >= 4, "n": n})
        if n >= 4:
            want.append(job.id)
    found: list[str] = []
    token: str | None = None
    while True:
        page = listing().page(query({"workflow.id": wf, "config.keep": True}, 3, token))
        assert len(page.resources) <= 3
        found += [r["id"] for r in page.resources]
        token = page.next_page_token
        if not token:
            break
    assert found == [j for j in want]


def test_a_page_stops_at_its_byte_bound_with_at_least_one_result() -> None:
    wf = unique("wf")
    for n in range(5):
        submitted(wf, {"blob": "x" * 2000, "n": n})
    page = listing(ReadBudget(result_bytes=5000)).page(query({"workflow.id": wf}, 100))
    assert 1 <= len(page.resources) <= 3 and page.next_page_token and page.stats.stopped_by == "bytes"


def test_partitions_of_an_in_are_read_in_turn_across_pages() -> None:
    a, b = unique("wf-a"), unique("wf-b")
    ids = {w: [put_new_job(w, f"o{n}", f"2024-01-01T00:00:0{n}.000Z").id for n in range(3)] for w in (a, b)}
    found: list[str] = []
    token: str | None = None
    while True:
        page = listing().page(query({"workflow.id": {"$in": [b, a]}}, 2, token))
        found += [r["id"] for r in page.resources]
        token = page.next_page_token
        if not token:
            break
    assert found == ids[a] + ids[b]  # partitions in order of their values, each oldest first


# --------------------------------------------------------------------------- tokens, projection, refusals


def test_tokens_belong_to_their_query(api: ApiCaller) -> None:
    wf = unique("wf")
    for n in range(3):
        put_new_job(wf, f"o{n}", iso(utcnow()))
    flt = json.dumps({"workflow.id": wf, "claims": {"$size": 0}})
    token = api("GET", "/jobs", query={"filter": flt, "max_page_size": "1"}, site_id="s")[1][
        "next_page_token"
    ]
    assert token
    other = json.dumps({"workflow.id": wf, "claims": {"$size": 1}})
    status, body = api("GET", "/jobs", query={"filter": other, "page_token": token}, site_id="s")
    assert status == 400 and "different query" in body["detail"]
    assert api("GET", "/jobs", query={"filter": flt, "page_token": token + "x"}, site_id="s")[0] == 400
    assert api("GET", "/jobs", query={"filter": flt, "page_token": token}, site_id="s")[0] == 200


def test_projection_serves_the_named_fields_and_the_id(api: ApiCaller) -> None:
    wf = unique("wf")
    job = submitted(wf, {"git_repo": "r", "release": "v1", "inputs": {"a": 1}})
    query_ = {
        "filter": json.dumps({"workflow.id": wf}),
        "projection": "config.git_repo, claims, config.inputs.a",
    }
    status, body = api("GET", "/jobs", query=query_, site_id="s")
    assert status == 200
    assert body["resources"] == [
        {"id": job.id, "config": {"git_repo": "r", "inputs": {"a": 1}}, "claims": []}
    ]


@pytest.mark.parametrize("operator", ["$where", "$expr", "$function", "$regex", "$text", "$jsonSchema"])
def test_operators_outside_the_subset_are_422_naming_them(api: ApiCaller, operator: str) -> None:
    flt = (
        {operator: "1"}
        if operator in ("$where", "$expr", "$text", "$jsonSchema")
        else {"id": {operator: "x"}}
    )
    for resource in ("/jobs", "/operations"):
        status, body = api("GET", resource, query={"filter": json.dumps(flt)}, site_id="s")
        assert status == 422 and operator in body["detail"][0]["msg"], (resource, body)
        assert body["detail"][0]["loc"] == ["query", "filter"]


def test_query_parameters_still_select_with_the_filter(api: ApiCaller) -> None:
    wf = unique("wf")
    first = put_new_job(wf, "o1", iso(utcnow()))
    put_new_job(wf, "o2", iso(utcnow()))
    status, body = api("GET", "/jobs", query={"workflow_id": wf, "object_id": "o1"}, site_id="s")
    assert [j["id"] for j in body["resources"]] == [first.id]
    flt = json.dumps({"config.object_id": {"$in": ["o1", "o2"]}})
    status, body = api(
        "GET", "/jobs", query={"workflow_id": wf, "filter": flt, "status": "pending"}, site_id="s"
    )
    assert status == 200 and len(body["resources"]) == 2
    # workflow_missing is part of what is matched
    obj = unique("obj")
    kept, gone = put_new_job("wf", obj, iso(utcnow())), put_new_job(unique("gone"), obj, iso(utcnow()))
    for missing, expected in (("true", gone.id), ("false", kept.id)):
        q = {"object_id": obj, "workflow_missing": missing}
        assert [j["id"] for j in api("GET", "/jobs", query=q, site_id="s")[1]["resources"]] == [expected]


def test_the_watchers_filter_sees_a_job_before_a_claim_not_while_held_and_again_after_a_release(
    api: ApiCaller,
) -> None:
    wf = unique("wf")
    site = make_site()
    job = put_new_job("wf", unique("obj"), iso(utcnow()))
    watcher = {
        "$and": [
            {"workflow.id": {"$in": ["wf", wf]}},
            {"config.object_id": job.object_id},
            {
                "$or": [
                    {"claims": {"$size": 0}},
                    {"claims": {"$not": {"$elemMatch": {"cancelled": {"$ne": True}}}}},
                ]
            },
        ]
    }

    def unclaimed() -> list[str]:
        body = api("GET", "/jobs", query={"filter": json.dumps(watcher)}, site_id=site)[1]
        return [j["id"] for j in body["resources"]]

    assert unclaimed() == [job.id]
    _, op = api("POST", JOB, {"job_id": f"{job.id}:claim"}, site_id=site)
    assert unclaimed() == []
    assert api("POST", JOB, {"job_id": f"{job.id}:release"}, site_id=site)[0] == 200
    assert unclaimed() == [job.id]
    # Claimed again and finished: its last claim is done and not cancelled, so it stays out
    _, op = api("POST", JOB, {"job_id": f"{job.id}:claim"}, site_id=site)
    api("PATCH", OP, {"operation_id": op["id"]}, body={"done": True, "result": {"ok": 1}}, site_id=site)
    assert unclaimed() == []


def test_operations_filter_projection_and_pages(api: ApiCaller) -> None:
    site = make_site()
    ops = []
    for _ in range(3):
        job = put_new_job("wf", unique("obj"), iso(utcnow()))
        ops.append(api("POST", JOB, {"job_id": f"{job.id}:claim"}, site_id=site)[1])
    api("PATCH", OP, {"operation_id": ops[1]["id"]}, body={"metadata": {"stage": "align"}}, site_id=site)
    flt = json.dumps({"metadata.stage": {"$exists": True}})
    status, body = api(
        "GET", "/operations", query={"filter": flt, "projection": "metadata.stage"}, site_id=site
    )
    assert status == 200 and body["resources"] == [{"id": ops[1]["id"], "metadata": {"stage": "align"}}]
    seen: list[str] = []
    token = None
    while True:
        q = {
            "filter": json.dumps({"done": False}),
            "max_page_size": "2",
            **({"page_token": token} if token else {}),
        }
        body = api("GET", "/operations", query=q, site_id=site)[1]
        seen += [o["id"] for o in body["resources"]]
        token = body["next_page_token"]
        if not token:
            break
    assert seen == [o["id"] for o in ops]
    direct = OperationListing(OperationRepository()).page(site, query({"done": True}))
    assert direct.resources == [] and direct.stats.requests == 1
