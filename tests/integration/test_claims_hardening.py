"""Issue 8's claim defects, at the service level (ClaimService, JobClaims and the handlers, against the
moto server over HTTP): page tokens of ended leases, claim-next starving behind jobs the site cannot
run, what an attempt is, the lease reaper, and transactions that conflict or lose their answer.

Each test names the item it proves. Jobs are written straight into the jobs table where a test
needs many of them, or leases that ended long ago (setup, not what is measured).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bench.counting import Counts, RequestCounter
from jobtriggers.dal.dynamo import dynamodb, to_item
from jobtriggers.dal.jobs import JobRepository, job_item
from jobtriggers.dal.operations import OperationRepository, operation_item
from jobtriggers.dal.registry import RegistryRepository
from jobtriggers.dal.sites import SiteRepository
from jobtriggers.errors import ConflictError, RetryableStoreError
from jobtriggers.logic.claims import ClaimService, SiteRef
from jobtriggers.logic.sites import create_site
from jobtriggers.models import Job, JobStatus, Workflow, iso, utcnow
from jobtriggers.settings import table_names
from tests.api_events import LambdaContextStub, json_body, load_function, rest_event
from tests.faults import CONFLICT, LOST_RESPONSE, FaultInjector, fast_backoff
from tests.jobs import claimed, operation_of, report, stored_job

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
A, B = SiteRef.of("site-a"), SiteRef.of("site-b")
ERROR = {"code": "exit_1", "message": "boom"}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture(autouse=True)
def _compressed_backoff() -> Iterator[None]:
    with fast_backoff():
        yield


@pytest.fixture
def registry(tables: dict[str, str]) -> RegistryRepository:
    registry = RegistryRepository()
    for wf in (
        Workflow(id="wf", name="wf", created_at=T0, lease_seconds=60, max_attempts=2),
        Workflow(id="gpu-wf", name="gpu", created_at=T0, lease_seconds=60, capability_ids=["gpu"]),
    ):
        registry.put("workflow", wf)
    return registry


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def service(registry: RegistryRepository, clock: Clock) -> ClaimService:
    return claim_service(registry, clock)


def claim_service(registry: RegistryRepository, clock: Callable[[], datetime] = utcnow) -> ClaimService:
    return ClaimService(JobRepository(), OperationRepository(), registry, clock=clock)


def put_jobs(jobs: list[Job]) -> None:
    """Many jobs at once (BatchWriteItem, 25 a request), and the operation of each claimed one."""
    _batch_put(table_names().jobs_table, [job_item(j) for j in jobs])
    ops = [operation_item(operation_of(j)) for j in jobs if j.status == JobStatus.claimed]
    _batch_put(table_names().operations_table, ops)


def _batch_put(table: str, items: list[dict[str, Any]]) -> None:
    for start in range(0, len(items), 25):
        request: dict[str, Any] = {
            table: [{"PutRequest": {"Item": to_item(i)}} for i in items[start : start + 25]]
        }
        while request:
            request = dynamodb().batch_write_item(RequestItems=request).get("UnprocessedItems") or {}


def pending(workflow_id: str, n: int, prefix: str, start: datetime = T0) -> list[Job]:
    """New jobs (as created: version 1)."""
    return [
        Job.new(workflow_id, f"{prefix}{i:05d}", iso(start + timedelta(milliseconds=i))).model_copy(
            update={"version": 1}
        )
        for i in range(n)
    ]


def ended(workflow_id: str, n: int, prefix: str, lease_end: datetime) -> list[Job]:
    """Jobs claimed by a site that vanished: lease ended at `lease_end` (+ i ms), attempt 1 used."""
    return [
        claimed(
            job,
            site_id="site-gone",
            op_id=f"op-{prefix}{i:05d}",
            lease_expires_at=iso(lease_end + timedelta(milliseconds=i)),
            max_attempts=3,
        )
        for i, job in enumerate(pending(workflow_id, n, prefix, lease_end - timedelta(hours=1)))
    ]


# --------------------------------------------------------------------------- 1. page tokens


def test_item1_claimable_pages_of_ended_leases_continue_while_the_clock_moves(
    service: ClaimService, clock: Clock
) -> None:
    # Given three jobs whose leases ended
    items = pending("wf", 3, "o")
    put_jobs(items)
    ids = [i.id for i in items]
    for job_id in ids:
        service.claim(job_id, A)
        clock.advance(1)
    clock.advance(120)
    # When the claimable jobs are listed one per page, the clock moving between pages (as it does
    # between requests)
    seen: list[str] = []
    token: str | None = None
    while True:
        page, token = JobRepository().claimable_page("wf", iso(clock.now), 1, token)
        seen += [j.id for j in page]
        clock.advance(1)
        if not token:
            break
    # Then every page token is accepted, and each ended lease is listed once
    assert sorted(seen) == sorted(ids)


class TickingClock(Clock):
    """A clock that moves a millisecond each time it is read, as the real one does between pages."""

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=1)
        return self.now


def test_item1_claim_next_reaches_a_runnable_ended_lease_behind_120_it_cannot_run(
    registry: RegistryRepository,
) -> None:
    # Given 120 ended leases of a workflow the site cannot run (gpu), older than one it can run
    put_jobs(ended("gpu-wf", 120, "g", T0 - timedelta(hours=2)))
    [mine] = ended("wf", 1, "w", T0 - timedelta(hours=1))
    put_jobs([mine])
    # When the site asks for the next job, the clock moving on as it works
    op = claim_service(registry, TickingClock()).claim_next(A)
    # Then it takes that lease over (no "page_token belongs to a different query")
    assert op is not None and op.metadata["job"]["id"] == mine.id


# --------------------------------------------------------------------------- 2. starvation


def _claim_next_counted(service: ClaimService, site: SiteRef) -> tuple[Any, Counts]:
    counter = RequestCounter()
    counter.attach(dynamodb())
    try:
        before = counter.snapshot()
        op = service.claim_next(site)
        return op, counter.since(before)
    finally:
        counter.detach()


def test_item2_claim_next_at_1000_plus_1_finds_the_one_and_reads_only_what_the_site_can_run(
    registry: RegistryRepository, clock: Clock
) -> None:
    # Given 1,000 older jobs the site cannot run (a gpu workflow) and one it can
    put_jobs(pending("gpu-wf", 1000, "g", T0 - timedelta(days=1)))
    [first] = pending("wf", 1, "first")
    put_jobs([first])
    # When the site (no gpu) asks for the next job
    op, counts = _claim_next_counted(claim_service(registry, clock), A)
    # Then it gets the one it can run
    assert op is not None and op.metadata["job"]["id"] == first.id
    # And what it read does not grow with the jobs it cannot run: 1,000 more of them change nothing
    put_jobs(pending("gpu-wf", 1000, "h", T0 - timedelta(days=2)))
    [second] = pending("wf", 1, "second")
    put_jobs([second])
    op2, counts2 = _claim_next_counted(claim_service(registry, clock), A)
    assert op2 is not None and op2.metadata["job"]["id"] == second.id
    assert (counts2.items_read, counts2.total_requests) == (counts.items_read, counts.total_requests)
    # (registry: 1 query of its 2 workflows; wf: 1 query; the job: 1 consistent read; 1 transaction)
    assert counts.items_read <= 6 and counts.total_requests <= 5
    print(f"\nclaim-next at 1,000 + 1: {counts.as_dict()}; at 2,000 + 1: {counts2.as_dict()}")


def test_item2_jobs_of_a_workflow_gone_from_the_registry_neither_block_nor_get_claimed(
    registry: RegistryRepository, clock: Clock
) -> None:
    # Given 1,000 older jobs of a workflow since removed from the registry, and one the site can run
    put_jobs(pending("removed-wf", 1000, "r", T0 - timedelta(days=1)))
    [mine] = pending("wf", 1, "m")
    put_jobs([mine])
    service = claim_service(registry, clock)
    # When the site asks for the next job twice
    op, counts = _claim_next_counted(service, A)
    again = service.claim_next(A)
    # Then it gets its job, reading none of the others, and then nothing (they are claimable by nobody)
    assert op is not None and op.metadata["job"]["id"] == mine.id
    assert counts.items_read <= 6
    assert again is None
    items, _ = JobRepository().list_page(workflow_id="removed-wf", status="pending", limit=1000)
    assert len(items) == 1000


def test_item2_ended_leases_are_taken_over_while_many_jobs_the_site_cannot_run_are_pending(
    service: ClaimService, clock: Clock
) -> None:
    # Given 500 pending jobs the site cannot run, and one ended lease of a workflow it can run
    put_jobs(pending("gpu-wf", 500, "g", T0 - timedelta(days=1)))
    [lost] = ended("wf", 1, "l", T0 - timedelta(minutes=5))
    put_jobs([lost])
    # When the site asks for the next job
    op = service.claim_next(A)
    # Then it takes the ended lease over, as the job's second attempt
    assert op is not None and op.metadata["job"]["id"] == lost.id and op.metadata["attempt"] == 2


# --------------------------------------------------------------------------- 4. attempts


def test_item4_releases_give_their_attempt_back(service: ClaimService) -> None:
    # Given a job of a workflow with max_attempts 2, claimed and released by two sites in turn
    [item] = pending("wf", 1, "o")
    put_jobs([item])
    for site in (A, B):
        service.claim(item.id, site)
        service.release(item.id, site)
    assert stored_job(item.id)["attempts"] == 0
    # When the next claim ends in an error
    op = service.claim(item.id, A).operation
    service.update_operation(op.id, A, report(done=True, result=ERROR))
    # Then it was the first failed attempt: the job is pending again, the error its last_error
    job = JobRepository().get(item.id)
    assert (job.status, job.attempts, job.last_error) == ("pending", 1, ERROR)
    # And the second error fails it
    op = service.claim(item.id, B).operation
    service.update_operation(op.id, B, report(done=True, result=ERROR))
    job = JobRepository().get(item.id)
    assert (job.status, job.attempts, job.result) == ("failed", 2, ERROR)


def test_item4_expired_leases_are_failed_attempts_and_the_job_fails_after_max_attempts(
    service: ClaimService, clock: Clock
) -> None:
    # Given a job of a workflow with max_attempts 2 whose workers keep dying
    [item] = pending("wf", 1, "o")
    put_jobs([item])
    first = service.claim(item.id, A).operation
    clock.advance(61)
    # When another site claims it after the lease ended
    second = service.claim_next(B)
    # Then the first attempt counted as failed with lease_expired, visible on the job
    assert second is not None and second.metadata["attempt"] == 2
    assert service.own_operation(first.id, A).result["code"] == "lease_expired"
    assert JobRepository().get(item.id).last_error["code"] == "lease_expired"
    # When the second worker dies too and a site asks again after its lease ended
    clock.advance(61)
    assert service.claim_next(A) is None
    # Then the job has failed for good, saying why, and its last operation is closed
    job = JobRepository().get(item.id)
    assert (job.status, job.attempts) == ("failed", 2)
    assert job.result["code"] == job.last_error["code"] == "lease_expired"
    assert service.own_operation(second.id, B).done is True
    with pytest.raises(ConflictError, match="lease_expired"):
        service.claim(item.id, A)


def test_item4_the_reaper_expires_ended_leases_without_any_claim(registry: RegistryRepository) -> None:
    # Given (real clock) a job on its first attempt and one on its last, both of dead workers, and a
    # live one; each operation exists as its claim made it
    now = datetime.now(UTC)
    again, last = ended("wf", 2, "x", now - timedelta(minutes=2))
    last = last.model_copy(update={"attempts": 3, "max_attempts": 3})
    live = ended("wf", 1, "live", now + timedelta(hours=1))[0]
    put_jobs([again, last, live])
    # When the scheduled reaper runs (its Lambda handler, as EventBridge invokes it)
    reaper = load_function("lease_reaper")
    reaped = reaper({"source": "aws.events", "detail-type": "Scheduled Event"}, LambdaContextStub())
    # Then the first is pending again with its attempt counted, the last failed, the live one untouched
    assert (reaped["pending"], reaped["failed"], reaped["skipped"]) == (1, 1, 0)
    again_now, last_now, live_now = (stored_job(j.id) for j in (again, last, live))
    assert (again_now["status"], again_now["attempts"]) == ("pending", 1)
    assert again_now["last_error"]["code"] == "lease_expired" and "lease_expires_at" not in again_now
    assert last_now["status"] == "failed" and last_now["result"]["code"] == "lease_expired"
    assert live_now["status"] == "claimed"
    # And the dead workers' operations are closed with the reason; a second run finds nothing
    assert again.operation_id is not None
    closed = OperationRepository().get(again.operation_id)
    assert closed is not None and closed.done is True and closed.result["code"] == "lease_expired"
    assert reaper({}, LambdaContextStub())["seen"] == 0


# --------------------------------------------------------------------------- 6. conflicts


class ConflictsFirst(FaultInjector):
    """Hit the first `n` transactions with `kind` (TransactionConflict unless told), then let
    everything through."""

    def __init__(self, n: int, kind: str = CONFLICT) -> None:
        super().__init__(rate=1.0, kinds=(kind,), operations={"TransactWriteItems"})
        self.left = n

    def _choose(self, operation: str, body: bytes) -> str | None:
        if self.left <= 0 or operation != "TransactWriteItems":
            return None
        self.left -= 1
        return super()._choose(operation, body)


def test_item6_a_conflicting_claim_is_retried_inside_the_service_and_succeeds(service: ClaimService) -> None:
    # Given a pending job, and a store where the first three transactions meet another on the same item
    [item] = pending("wf", 1, "o")
    put_jobs([item])
    with ConflictsFirst(3).attached(dynamodb()) as faults:
        # When a site claims it
        outcome = service.claim(item.id, A)
    # Then the claim went through (not "another claim took the job"), once
    assert faults.faults[CONFLICT] == 3
    job = JobRepository().get(item.id)
    assert (job.status, job.operation_id, len(job.claims)) == ("claimed", outcome.operation.id, 1)


def test_item6_a_conflicting_patch_is_retried_and_succeeds(service: ClaimService) -> None:
    # Given a claimed job, and a store where the report's first transaction conflicts
    [item] = pending("wf", 1, "o")
    put_jobs([item])
    op = service.claim(item.id, A).operation
    with ConflictsFirst(1).attached(dynamodb()):
        # When the holder reports done
        done = service.update_operation(op.id, A, report(done=True, result={"outputs": ["x"]}))
    # Then it is done, not 409 "fenced off"
    assert done.done is True and JobRepository().get(item.id).status == "done"


def test_item6_conflicts_that_persist_end_in_503_with_retry_after_never_409(
    registry: RegistryRepository,
) -> None:
    # Given a pending job, a site, and a store where every transaction conflicts
    [item] = pending("wf", 1, "o")
    put_jobs([item])
    create_site(SiteRepository(), registry, "site-a", [])
    api = load_function("api")
    event = rest_event("POST", "/jobs/{job_id}", {"job_id": f"{item.id}:claim"}, site_id="site-a")
    with FaultInjector(rate=1.0, kinds=(CONFLICT,), operations={"TransactWriteItems"}).attached(dynamodb()):
        # When the site claims it over the API
        response = api(event, LambdaContextStub())
    # Then the answer is 503 with Retry-After (busy: try again), not 409, and nothing was written
    assert response["statusCode"] == 503, json_body(response)
    assert response["multiValueHeaders"]["Retry-After"] == ["1"]
    assert stored_job(item.id)["status"] == "pending"
    # And the service itself says busy
    faults = FaultInjector(rate=1.0, kinds=(CONFLICT,), operations={"TransactWriteItems"})
    with pytest.raises(RetryableStoreError), faults.attached(dynamodb()):
        claim_service(registry).claim(item.id, A)


def test_item6_a_patch_whose_answer_was_lost_and_retried_is_a_success(service: ClaimService) -> None:
    # Given a claimed job, and a store that applies the report but loses its answer (botocore retries)
    [item] = pending("wf", 1, "o")
    put_jobs([item])
    op = service.claim(item.id, A).operation
    lost = ConflictsFirst(1, kind=LOST_RESPONSE)
    with lost.attached(dynamodb()):
        # When the holder reports done (the retry carries the same ClientRequestToken)
        done = service.update_operation(op.id, A, report(done=True, result={"outputs": ["x"]}))
    # Then the retry was answered as the applied write it repeats: done, not 409
    assert lost.faults[LOST_RESPONSE] == 1
    assert done.done is True and JobRepository().get(item.id).status == "done"
