"""POST /jobs, who may claim and cancel what it makes, and PATCH with the whole metadata, through
ApiFunction (REST proxy events) against moto."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from jobtriggers.dal.dynamo import dynamodb
from jobtriggers.dal.registry import RegistryRepository
from jobtriggers.dal.sites import SiteRepository
from jobtriggers.errors import NotFoundError
from jobtriggers.models import MAX_CONFIG_BYTES, Workflow, config_key, iso, job_id_for, utcnow
from jobtriggers.models.sites import Site
from tests.api_events import ApiCaller, load_function, module_tables, unique, use_tables
from tests.faults import LOST_RESPONSE, FaultInjector, fast_backoff
from tests.jobs import put_new_job, stored_job

JOB = "/jobs/{job_id}"
OP = "/operations/{operation_id}"
NMDC_WORKFLOW = "Metagenome Annotation: v1.1.0"


@pytest.fixture(scope="module")
def api() -> ApiCaller:
    return ApiCaller(load_function("api"))


@pytest.fixture(scope="module")
def creation_tables(dynamo_endpoint: str) -> dict[str, str]:
    env = module_tables(seed=False)
    registry = RegistryRepository()
    registry.put("workflow", Workflow(id="wf", name="wf", created_at=utcnow()))
    registry.put("workflow", Workflow(id="gpu-wf", name="gpu", created_at=utcnow(), capability_ids=["gpu"]))
    return env


@pytest.fixture(autouse=True)
def _tables(creation_tables: dict[str, str]) -> None:
    use_tables(creation_tables)


def make_site(capabilities: list[str] | None = None, *, can_create_jobs: bool = False) -> str:
    from jobtriggers.models.sites import ClientRecord

    site_id = unique("site")
    site = Site(
        id=site_id,
        client_id=unique("client"),
        created_at=iso(utcnow()),
        capability_ids=capabilities or [],
        can_create_jobs=can_create_jobs,
    )
    client = ClientRecord(client_id=site.client_id, site_id=site_id, secret_hash={}, credential_version=1)
    SiteRepository().create(site, client)
    return site_id


def record(workflow_id: str = NMDC_WORKFLOW, **config: Any) -> dict[str, Any]:
    """A job record as NMDC's scheduler posts it."""
    return {
        "workflow": {"id": workflow_id},
        "config": {
            "git_repo": "https://github.com/microbiomedata/mg_annotation",
            "release": "v1.1.0",
            **config,
        },
        "claims": [],
    }


def create(api: ApiCaller, body: Any, site: str, **kwargs: Any) -> tuple[int, Any]:
    return api("POST", "/jobs", body=body, site_id=site, **kwargs)


def jobs_of(api: ApiCaller, site: str, **config: Any) -> list[dict[str, Any]]:
    status, body = api(
        "GET",
        "/jobs",
        query={"filter": json.dumps({f"config.{k}": v for k, v in config.items()})},
        site_id=site,
    )
    assert status == 200, body
    found: list[dict[str, Any]] = body["resources"]
    token = body["next_page_token"]
    while token:
        query = {"filter": json.dumps({f"config.{k}": v for k, v in config.items()}), "page_token": token}
        status, body = api("GET", "/jobs", query=query, site_id=site)
        found += body["resources"]
        token = body["next_page_token"]
    return found


# --------------------------------------------------------------------------- creating


def test_a_site_without_the_permission_is_403_and_nothing_is_written(api: ApiCaller) -> None:
    site, tag = make_site(), unique("t")
    status, body = create(api, record(tag=tag), site)
    assert status == 403 and "can_create_jobs" in body["detail"]
    assert jobs_of(api, site, tag=tag) == []
    # And once an operator allows it, the same request creates the job; revoked, it is 403 again
    SiteRepository().set_can_create_jobs(site, True)
    assert create(api, record(tag=tag), site)[0] == 201
    SiteRepository().set_can_create_jobs(site, False)
    assert create(api, record(tag=unique("t")), site)[0] == 403
    with pytest.raises(NotFoundError):
        SiteRepository().set_can_create_jobs(unique("nobody"), True)


def test_the_same_record_is_one_job_201_then_200(api: ApiCaller) -> None:
    site, tag = make_site(can_create_jobs=True), unique("t")
    body = record(tag=tag, inputs={"proj": "p", "input_file": "https://x"}, iteration=1)
    status, first = create(api, body, site)
    assert status == 201
    assert first["id"] == job_id_for(NMDC_WORKFLOW, config_key(body["config"]))
    assert (first["claims"], first["status"], first["created_by"]) == ([], "pending", site)
    assert first["config"] == body["config"] and "object_id" not in first["config"]
    # The same record again, its keys in another order and 1 as 1.0: the same job, 200
    reordered = {
        "claims": [],
        "config": dict(reversed(list(body["config"].items()))),
        "workflow": body["workflow"],
    }
    reordered["config"]["iteration"] = 1.0
    status, again = create(api, reordered, site)
    assert status == 200 and again["id"] == first["id"] and again["created_at"] == first["created_at"]
    # Another config is another job
    assert create(api, record(tag=tag, iteration=2), site)[1]["id"] != first["id"]
    assert len(jobs_of(api, site, tag=tag)) == 2
    # The job was written with its created transition, by the site
    item = stored_job(first["id"])
    assert item["version"] == 1 and item["transition"]["by"] == site and "object_id" not in item


def test_a_lost_answer_to_the_put_is_still_one_job(api: ApiCaller) -> None:
    # Given the put's answer lost once (the job was written; botocore retries the put)
    class LoseFirstAnswer(FaultInjector):
        def _choose(self, operation: str, body: bytes) -> str | None:
            kind = super()._choose(operation, body)
            if kind is not None:
                self.enabled = False
            return kind

    site, tag = make_site(can_create_jobs=True), unique("t")
    with (
        fast_backoff(),
        LoseFirstAnswer(rate=1.0, kinds=(LOST_RESPONSE,), operations={"PutItem"}).attached(
            dynamodb()
        ) as faults,
    ):
        status, job = create(api, record(tag=tag), site)
    # Then the request is answered with the job (200: the retry found it), and it is one job
    assert faults.injected == 1
    assert status == 200 and job["created_by"] == site
    # And the client's own retry of the request is the same job again
    assert create(api, record(tag=tag), site)[1]["id"] == job["id"]
    assert [j["id"] for j in jobs_of(api, site, tag=tag)] == [job["id"]]


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        pytest.param({"config": {}}, 422, "workflow is required", id="no-workflow"),
        pytest.param({"workflow": {"id": "w"}}, 422, "config is required", id="no-config"),
        pytest.param({"workflow": {"id": "w"}, "config": [1]}, 422, "dictionary", id="config-not-object"),
        pytest.param({"workflow": {"id": "a#b"}, "config": {}}, 422, "pattern", id="hash-in-workflow"),
        pytest.param(
            {"workflow": {"id": "w", "name": "x"}, "config": {}}, 422, "Extra inputs", id="workflow-extra"
        ),
        pytest.param({"workflow": {"id": "w"}, "config": {}, "confg": {}}, 422, "Extra inputs", id="typo"),
        pytest.param(
            {"workflow": {"id": "w"}, "config": {}, "claims": [{"op_id": "o", "site_id": "s"}]},
            422,
            "a new job has no claims",
            id="claims",
        ),
        pytest.param({"workflow": {"id": "w"}, "config": {"object_id": 5}}, 422, "DRS id", id="object-id"),
        pytest.param({"workflow": {"id": "w"}, "config": {"": 1}}, 422, "empty key", id="empty-key"),
        pytest.param(
            {"workflow": {"id": "w"}, "config": {"n": 10**40}}, 422, "38 significant", id="huge-number"
        ),
        pytest.param(
            {"workflow": {"id": "w"}, "config": {"x": "y" * MAX_CONFIG_BYTES}}, 413, "at most", id="too-large"
        ),
        pytest.param({"workflow": {"id": "w" * 256}, "config": {}}, 201, "", id="longest-workflow-id"),
        pytest.param(
            {"workflow": {"id": "é" * 256}, "config": {}}, 422, "bytes of UTF-8", id="wide-workflow-id"
        ),
    ],
)
def test_bad_records_are_refused_naming_why_and_write_nothing(
    api: ApiCaller, body: dict[str, Any], status: int, fragment: str
) -> None:
    site = make_site(can_create_jobs=True)
    got, answer = create(api, body, site)
    assert got == status, answer
    if status == 201:
        return
    assert fragment in json.dumps(answer)
    listed = api("GET", "/jobs", query={"filter": json.dumps({"created_by": site})}, site_id=site)[1]
    assert listed["resources"] == []


def test_deep_configs_and_not_json_numbers_are_422(api: ApiCaller) -> None:
    site = make_site(can_create_jobs=True)
    deep: Any = "leaf"
    for _ in range(30):
        deep = {"d": deep}
    assert create(api, {"workflow": {"id": "w"}, "config": deep}, site)[0] == 422
    raw = '{"workflow": {"id": "w"}, "config": {"ratio": NaN}}'
    status, body = api("POST", "/jobs", raw_body=raw, site_id=site)
    assert status == 422 and "NaN" in json.dumps(body)


def test_the_reference_record_as_stored_is_accepted_and_its_id_and_created_at_are_the_services(
    api: ApiCaller,
) -> None:
    from tests.e2e.test_nmdc_automation import REFERENCE_JOB

    site = make_site(can_create_jobs=True)
    reference = json.loads(REFERENCE_JOB.read_text())
    reference["config"]["activity_id"] = unique("nmdc:wfmgan")
    status, job = create(api, reference, site)
    assert status == 201
    assert job["id"] != reference["id"] and job["created_at"] != reference["created_at"]
    assert job["config"] == reference["config"]


# --------------------------------------------------------------------------- claiming and cancelling


def test_a_job_of_a_workflow_the_registry_does_not_know_is_its_creators_to_claim(api: ApiCaller) -> None:
    creator, other = make_site(can_create_jobs=True), make_site(["gpu"], can_create_jobs=True)
    status, job = create(api, record(tag=unique("t")), creator)
    assert status == 201 and job["workflow_missing"] is False
    # Another site (even one that may create jobs) cannot claim it, by id or by naming the workflow
    status, body = api("POST", JOB, {"job_id": f"{job['id']}:claim"}, site_id=other)
    assert status == 403 and creator in body["detail"]
    assert api("POST", "/jobs:claim", body={"workflow_id": NMDC_WORKFLOW}, site_id=other)[0] == 204
    # A site that may not create jobs naming such a workflow: it does not exist for it
    assert api("POST", "/jobs:claim", body={"workflow_id": NMDC_WORKFLOW}, site_id=make_site())[0] == 422
    # Its creator claims it (claim-next naming the workflow), with the long lease of such jobs
    status, op = api("POST", "/jobs:claim", body={"workflow_id": NMDC_WORKFLOW}, site_id=creator)
    assert status == 200 and op["metadata"]["job"]["workflow"]["id"] == NMDC_WORKFLOW
    lease = op["metadata"]["lease_expires_at"]
    assert lease > iso(utcnow() + timedelta(days=29))
    # And claim-next without a workflow never hands it out (it is in no registry queue)
    status, fresh = create(api, record(tag=unique("t")), creator)
    assert api("POST", "/jobs:claim", site_id=creator)[0] == 204
    assert api("POST", JOB, {"job_id": f"{fresh['id']}:claim"}, site_id=creator)[0] == 200


def test_a_created_job_of_a_registry_workflow_follows_the_registrys_capability_rule(api: ApiCaller) -> None:
    creator = make_site(can_create_jobs=True)
    status, job = create(api, record("gpu-wf", tag=unique("t")), creator)
    assert status == 201
    # Its creator lacks the capability: 403; a site with it claims the job
    status, body = api("POST", JOB, {"job_id": f"{job['id']}:claim"}, site_id=creator)
    assert status == 403 and "gpu" in body["detail"]
    assert api("POST", JOB, {"job_id": f"{job['id']}:claim"}, site_id=make_site(["gpu"]))[0] == 200


def test_triggered_jobs_of_a_workflow_gone_from_the_registry_stay_unclaimable(api: ApiCaller) -> None:
    job = put_new_job("gone-wf", unique("obj"), iso(utcnow()))
    body = api("GET", JOB, {"job_id": job.id}, site_id=make_site())[1]
    assert body["workflow_missing"] is True
    assert api("POST", JOB, {"job_id": f"{job.id}:claim"}, site_id=make_site())[0] == 409


def test_the_creating_site_may_cancel_its_job_and_no_other_site_may(api: ApiCaller) -> None:
    creator, other = make_site(can_create_jobs=True), make_site(can_create_jobs=True)
    _, pending = create(api, record(tag=unique("t")), creator)
    _, claimed = create(api, record(tag=unique("t")), creator)
    _, op = api("POST", JOB, {"job_id": f"{claimed['id']}:claim"}, site_id=creator)
    # Another site: 403, and the job is as it was
    status, body = api("POST", JOB, {"job_id": f"{pending['id']}:cancel"}, site_id=other)
    assert status == 403 and "not created by" in body["detail"]
    assert api("GET", JOB, {"job_id": pending["id"]}, site_id=other)[1]["status"] == "pending"
    # A triggered job: no site created it, so no site cancels it
    triggered = put_new_job("wf", unique("obj"), iso(utcnow()))
    assert api("POST", JOB, {"job_id": f"{triggered.id}:cancel"}, site_id=creator)[0] == 403
    # The creator: a pending job is cancelled, a claimed one asked to stop (its heartbeat says so)
    status, body = api("POST", JOB, {"job_id": f"{pending['id']}:cancel"}, site_id=creator)
    assert (status, body["status"]) == (200, "cancelled")
    status, body = api("POST", JOB, {"job_id": f"{claimed['id']}:cancel"}, site_id=creator)
    assert (status, body["status"], body["cancel_requested"]) == (200, "claimed", True)
    beat = api("PATCH", OP, {"operation_id": op["id"]}, body={"done": False}, site_id=creator)[1]
    assert beat["metadata"]["cancel_requested"] is True
    assert stored_job(pending["id"])["transition"]["by"] == creator


# --------------------------------------------------------------------------- reporting


def test_patch_takes_back_the_whole_metadata_it_read_with_extra(api: ApiCaller) -> None:
    # Given a claimed job whose config is large (the operation carries it in metadata.job)
    creator = make_site(can_create_jobs=True)
    big = {
        "inputs": [{"url": f"https://data.example.org/{i:05d}.fastq", "md5": "0" * 32} for i in range(800)]
    }
    _, job = create(api, record(NMDC_WORKFLOW, tag=unique("t"), **big), creator)
    _, op = api("POST", JOB, {"job_id": f"{job['id']}:claim"}, site_id=creator)
    path = {"operation_id": op["id"]}
    assert len(json.dumps(op["metadata"])) > 64 * 1024
    # When the watcher reads it and sends the whole metadata back with `extra`, and done
    current = api("GET", OP, path, site_id=creator)[1]
    metadata = {**current["metadata"], "extra": {"jaws_jobid": 42}}
    status, body = api("PATCH", OP, path, body={"done": True, "metadata": metadata}, site_id=creator)
    # Then it is accepted: extra added, the service's keys as they were, the job done
    assert status == 200, body
    assert body["metadata"]["extra"] == {"jaws_jobid": 42}
    assert {k: body["metadata"][k] for k in ("job", "site_id", "attempt")} == {
        k: current["metadata"][k] for k in ("job", "site_id", "attempt")
    }
    assert api("GET", JOB, {"job_id": job["id"]}, site_id=creator)[1]["status"] == "done"


@pytest.mark.parametrize(
    ("key", "value"),
    [("site_id", "someone-else"), ("attempt", 7), ("job", {"id": "another"})],
)
def test_patch_changing_a_service_owned_key_is_422(api: ApiCaller, key: str, value: Any) -> None:
    creator = make_site(can_create_jobs=True)
    _, job = create(api, record(tag=unique("t")), creator)
    _, op = api("POST", JOB, {"job_id": f"{job['id']}:claim"}, site_id=creator)
    path = {"operation_id": op["id"]}
    metadata = {**op["metadata"], key: value, "extra": {"x": 1}}
    status, body = api("PATCH", OP, path, body={"metadata": metadata}, site_id=creator)
    assert status == 422 and key in body["detail"][0]["msg"]
    assert "extra" not in api("GET", OP, path, site_id=creator)[1]["metadata"]
