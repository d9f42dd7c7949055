"""Issue 8, item 5: POST /jobs:claim is safe to retry with an Idempotency-Key (ApiFunction's handler
with REST proxy events, against moto; the records live in the template's IdempotencyTable)."""

from __future__ import annotations

import uuid

import pytest

from jobtriggers.dal.dynamo import dynamodb
from jobtriggers.dal.jobs import JobRepository
from jobtriggers.dal.registry import RegistryRepository
from jobtriggers.dal.sites import SiteRepository
from jobtriggers.logic.sites import create_site
from jobtriggers.models import Workflow, iso, utcnow
from tests.api_events import ApiCaller, load_function, module_tables, unique, use_tables
from tests.faults import THROTTLE, FaultInjector, fast_backoff
from tests.jobs import put_new_job


@pytest.fixture(scope="module")
def api() -> ApiCaller:
    return ApiCaller(load_function("api"))


@pytest.fixture(scope="module")
def idem_tables(dynamo_endpoint: str) -> dict[str, str]:
    return module_tables(seed=False)


@pytest.fixture(autouse=True)
def _tables(idem_tables: dict[str, str]) -> None:
    use_tables(idem_tables)


def workflow_with_jobs(n: int) -> tuple[str, list[str]]:
    """A workflow of its own with `n` pending jobs (so tests do not take each other's)."""
    wf = unique("wf")
    RegistryRepository().put("workflow", Workflow(id=wf, name=wf, created_at=utcnow()))
    return wf, [put_new_job(wf, f"obj-{i}", iso(utcnow())).id for i in range(n)]


def new_site() -> str:
    site_id = unique("site")
    create_site(SiteRepository(), RegistryRepository(), site_id, [])
    return site_id


def claim_next(api: ApiCaller, site: str, wf: str, key: str | None) -> tuple[int, dict | None]:
    headers = {"Idempotency-Key": key} if key is not None else None
    return api("POST", "/jobs:claim", body={"workflow_id": wf}, headers=headers, site_id=site)


def claimed(job_ids: list[str]) -> list[str]:
    return [j for j in job_ids if JobRepository().get(j).status == "claimed"]


def test_a_repeated_key_answers_the_same_operation_and_claims_nothing_more(api: ApiCaller) -> None:
    # Given two pending jobs and a site
    wf, ids = workflow_with_jobs(2)
    site, key = new_site(), uuid.uuid4().hex
    # When the site claims with a key, and sends the same request again (its answer was lost)
    first = claim_next(api, site, wf, key)
    again = claim_next(api, site, wf, key)
    # Then both answers are the same operation, and only one job is claimed
    assert first[0] == again[0] == 200
    assert again[1] == first[1]
    assert len(claimed(ids)) == 1
    # And a new key is a new claim (the other job)
    other = claim_next(api, site, wf, uuid.uuid4().hex)
    assert other[0] == 200 and other[1] is not None and first[1] is not None
    assert other[1]["id"] != first[1]["id"]
    assert len(claimed(ids)) == 2


def test_without_a_key_each_request_is_a_new_claim_as_the_nmdc_client_expects(api: ApiCaller) -> None:
    # Given two pending jobs, When a site sends the same keyless request twice
    wf, ids = workflow_with_jobs(2)
    site = new_site()
    first, second = claim_next(api, site, wf, None), claim_next(api, site, wf, None)
    # Then each claimed a job
    assert first[0] == second[0] == 200 and first[1] != second[1]
    assert len(claimed(ids)) == 2


def test_a_key_is_the_sites_own_and_bound_to_its_body(api: ApiCaller) -> None:
    # Given two sites using the same key for their own claims
    wf, ids = workflow_with_jobs(2)
    a, b, key = new_site(), new_site(), uuid.uuid4().hex
    first_a, first_b = claim_next(api, a, wf, key), claim_next(api, b, wf, key)
    # Then each got its own job: keys of different sites never meet
    assert first_a[0] == first_b[0] == 200 and first_a[1] is not None and first_b[1] is not None
    assert first_a[1]["id"] != first_b[1]["id"] and len(claimed(ids)) == 2
    # When a site reuses its key for a claim of another workflow, Then 422 naming the header
    other_wf, _ = workflow_with_jobs(1)
    status, body = claim_next(api, a, other_wf, key)
    assert status == 422 and "Idempotency-Key" in str(body)
    # When the key is not one (empty, spaces, too long), Then 400 saying what a key is
    for bad in ("has space", "x" * 300):
        status, body = claim_next(api, a, wf, bad)
        assert status == 422 and "idempotency-key" in str(body).lower()


def test_a_204_is_remembered_too(api: ApiCaller) -> None:
    # Given a workflow with no pending job, When a site claims with a key twice
    wf, _ = workflow_with_jobs(0)
    site, key = new_site(), uuid.uuid4().hex
    # Then both answers are 204
    assert claim_next(api, site, wf, key) == (204, None)
    assert claim_next(api, site, wf, key) == (204, None)


def test_a_busy_idempotency_table_is_a_503_and_a_retry_with_the_key_claims_once(api: ApiCaller) -> None:
    # Given two pending jobs, and an idempotency table that throttles past botocore's retries
    wf, ids = workflow_with_jobs(2)
    site, key = new_site(), uuid.uuid4().hex
    busy = FaultInjector(
        rate=1.0, kinds=(THROTTLE,), operations={"PutItem"}, only_if_body_contains="claim-next"
    )
    with fast_backoff(), busy.attached(dynamodb()):
        status, body = claim_next(api, site, wf, key)
    # Then the site is told to retry (503), and nothing was claimed
    assert status == 503, body
    assert claimed(ids) == []
    # And its retry with the same key claims exactly one job, which a further repeat returns again
    first, again = claim_next(api, site, wf, key), claim_next(api, site, wf, key)
    assert first[0] == 200 and again == first and len(claimed(ids)) == 1
