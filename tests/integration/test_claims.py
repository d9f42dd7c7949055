"""Claims, leases and operations against the moto server over HTTP (the DynamoDB transactions)."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from jobtriggers.dal.jobs import JobRepository
from jobtriggers.dal.operations import OperationRepository
from jobtriggers.dal.registry import RegistryRepository
from jobtriggers.errors import BadRequestError, ConflictError, ForbiddenError, NotFoundError
from jobtriggers.logic.claims import ClaimService, SiteRef
from jobtriggers.models import Job, Workflow, iso, utcnow
from tests.jobs import put_new_job, report, stored_job, stored_operation

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
A, B = SiteRef.of("site-a"), SiteRef.of("site-b")


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def registry(tables: dict[str, str]) -> RegistryRepository:
    registry = RegistryRepository()
    for wf in (
        Workflow(id="wf", name="wf", created_at=T0, lease_seconds=60, max_attempts=2),
        Workflow(id="gpu-wf", name="gpu", created_at=T0, capability_ids=["gpu"]),
    ):
        registry.put("workflow", wf)
    return registry


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def service(registry: RegistryRepository, clock: Clock) -> ClaimService:
    return claim_service(registry, clock)


def claim_service(
    registry: RegistryRepository,
    clock: Callable[[], datetime] = utcnow,
    rng: random.Random | None = None,
) -> ClaimService:
    """The claim service on the tables (as wiring.claim_service builds it), with a test clock."""
    return ClaimService(JobRepository(), OperationRepository(), registry, clock=clock, rng=rng)


def add_jobs(workflow_id: str, n: int, prefix: str = "o", start: datetime = T0) -> list[str]:
    jobs = JobRepository()
    return [
        put_new_job(workflow_id, f"{prefix}{i}", iso(start + timedelta(milliseconds=i)), repo=jobs).id
        for i in range(n)
    ]


def test_claim_writes_job_and_operation_together(service: ClaimService) -> None:
    # Given a pending job in the jobs table
    [job_id] = add_jobs("wf", 1)
    # When site A claims it
    op = service.claim(job_id, A).operation
    # Then the job and the operation items both record the claim
    job = JobRepository().get(job_id)
    assert (job.status, job.site_id, job.operation_id, job.attempts) == ("claimed", "site-a", op.id, 1)
    assert [c.model_dump() for c in job.claims] == [
        {"op_id": op.id, "site_id": "site-a", "done": False, "cancelled": False}
    ]
    stored = stored_operation(op.id)
    assert stored["site_done"] == "site-a#false" and stored["metadata"]["job"]["id"] == job_id
    # And the job's place in the claimed queue is its lease end
    assert stored_job(job_id)["queue_at"] == op.expire_time == job.lease_expires_at
    # And the same site claiming again gets the same operation
    assert service.claim(job_id, A).operation.id == op.id
    # And GET /jobs?status=claimed&site_id=site-a finds it through the index
    items, _ = JobRepository().list_page(site_id="site-a", status="claimed")
    assert [j.id for j in items] == [job_id]


def test_lease_expiry_takeover_and_fencing(service: ClaimService, clock: Clock) -> None:
    # Given site A claimed a job with a 60 s lease
    [job_id] = add_jobs("wf", 1)
    old = service.claim(job_id, A).operation
    # When B claims within the lease, Then 409 naming A
    clock.advance(30)
    with pytest.raises(ConflictError, match="site-a"):
        service.claim(job_id, B)
    # When the lease has ended (no TTL: only the clock), B takes the job over
    clock.advance(31)
    new = service.claim(job_id, B).operation
    job = JobRepository().get(job_id)
    assert (job.site_id, job.operation_id, job.attempts) == ("site-b", new.id, 2)
    # Then A's operation is closed, and nothing A sends changes the job
    old_now = service.own_operation(old.id, A)
    assert old_now.done is True and old_now.result["code"] == "lease_expired"
    with pytest.raises(ConflictError, match="lease ended"):
        service.update_operation(old.id, A, report(done=True, result={"outputs": ["x"]}))
    with pytest.raises(ConflictError):
        service.update_operation(old.id, A, report(metadata={"progress": 1}))
    after = JobRepository().get(job_id)
    assert after.model_dump() == job.model_dump()


def test_retries_up_to_max_attempts_then_failed(service: ClaimService) -> None:
    # Given a workflow with max_attempts 2
    [job_id] = add_jobs("wf", 1)
    error = {"code": "exit_2", "message": "bad input", "details": {"stderr_tail": "oops"}}
    # When the first attempt reports an error
    op1 = service.claim(job_id, A).operation
    service.update_operation(op1.id, A, report(done=True, result=error))
    # Then the job is pending again and claimable (by another site)
    assert JobRepository().get(job_id).status == "pending"
    op2 = service.claim_next(B, "wf")
    assert op2 is not None and op2.metadata["attempt"] == 2
    # When the second attempt reports an error too, Then the job failed, keeping the error
    service.update_operation(op2.id, B, report(done=True, result=error))
    job = JobRepository().get(job_id)
    assert job.status == "failed" and job.result == error
    assert service.claim_next(A, "wf") is None
    with pytest.raises(ConflictError, match="failed"):
        service.claim(job_id, A)


def test_done_keeps_the_result_and_later_patches_are_409(service: ClaimService) -> None:
    # Given a claimed job
    [job_id] = add_jobs("wf", 1)
    op = service.claim(job_id, A).operation
    # When the holder heartbeats with metadata, then reports done with outputs
    service.update_operation(op.id, A, report(metadata={"progress": 0.5}))
    done = service.update_operation(op.id, A, report(done=True, result={"outputs": ["obj-2"]}))
    # Then job and operation are done with the result, metadata merged
    assert done.done is True and done.metadata["progress"] == 0.5
    job = JobRepository().get(job_id)
    assert job.status == "done" and job.result == {"outputs": ["obj-2"]} and job.lease_expires_at is None
    # And a second completion is refused and changes nothing
    with pytest.raises(ConflictError, match="finished"):
        service.update_operation(op.id, A, report(done=True, result={"outputs": []}))
    assert JobRepository().get(job_id).result == {"outputs": ["obj-2"]}


def test_heartbeat_moves_the_lease(service: ClaimService, clock: Clock) -> None:
    # Given a claimed job 50 s into its 60 s lease
    [job_id] = add_jobs("wf", 1)
    op = service.claim(job_id, A).operation
    clock.advance(50)
    # When the holder heartbeats
    service.update_operation(op.id, A, report())
    # Then the job's lease (and its queue position) moved to 60 s from now
    item = stored_job(job_id)
    assert item["lease_expires_at"] == item["queue_at"] == iso(clock.now + timedelta(seconds=60))
    # And 20 s later (past the first lease end) B still cannot take the job
    clock.advance(20)
    with pytest.raises(ConflictError):
        service.claim(job_id, B)


def test_release(service: ClaimService) -> None:
    # Given site A holds a job
    [job_id] = add_jobs("wf", 1)
    op = service.claim(job_id, A).operation
    # When B releases it, Then 403; when A releases it, the job is pending and the operation cancelled
    with pytest.raises(ForbiddenError):
        service.release(job_id, B)
    released = service.release(job_id, A)
    assert released.done is True and released.metadata["cancelled"] is True and released.id == op.id
    assert JobRepository().get(job_id).status == "pending"
    # And a second release is 409; the job can be claimed again
    with pytest.raises(ConflictError):
        service.release(job_id, A)
    assert service.claim(job_id, B).created


def test_capabilities_and_unknown_jobs(service: ClaimService) -> None:
    # Given a job of a workflow that needs gpu
    [job_id] = add_jobs("gpu-wf", 1)
    # When a site without gpu claims it, Then 403 naming gpu; claim-next skips it
    with pytest.raises(ForbiddenError, match="gpu"):
        service.claim(job_id, A)
    assert service.claim_next(A) is None
    # And a site with gpu gets it from claim-next
    op = service.claim_next(SiteRef.of("gpu-site", ["gpu"]))
    assert op is not None and op.metadata["job"]["id"] == job_id
    # And an unknown job id is 404
    with pytest.raises(NotFoundError):
        service.claim("bm9wZSNub3Bl", A)


def test_operations_list_by_site_and_done_with_pages(service: ClaimService, clock: Clock) -> None:
    # Given site A claimed 3 jobs (a second apart) and finished one; site B claimed one
    ids = add_jobs("wf", 4)
    ops = []
    for job_id in ids[:3]:
        clock.advance(1)
        ops.append(service.claim(job_id, A).operation)
    service.claim(ids[3], B)
    service.update_operation(ops[0].id, A, report(done=True, result={}))
    repo = OperationRepository()
    # When A lists its live operations one at a time
    live: list[str] = []
    token: str | None = None
    while True:
        page, token = repo.list_page(site_id="site-a", done=False, limit=1, page_token=token)
        live += [o.id for o in page]
        if not token:
            break
    # Then it sees exactly its two live ones, oldest first, across pages, and none of B's
    assert live == [o.id for o in ops[1:]]
    done, _ = repo.list_page(site_id="site-a", done=True)
    assert [o.id for o in done] == [ops[0].id]
    all_a, _ = repo.list_page(site_id="site-a", limit=10)
    assert len(all_a) == 3


def test_claimable_listing_spans_pending_and_ended_leases(service: ClaimService, clock: Clock) -> None:
    # Given 3 pending jobs, one claimed with a live lease, and one whose lease ended
    ids = add_jobs("wf", 5)
    service.claim(ids[0], A)
    clock.advance(61)
    service.claim(ids[1], A)
    jobs = JobRepository()
    # When the claimable jobs are listed two per page
    seen: list[str] = []
    token: str | None = None
    while True:
        page, token = jobs.claimable_page("wf", iso(clock.now), 2, token)
        seen += [j.id for j in page]
        if not token:
            break
    # Then the pending ones and the ended lease are listed once each, the live one not at all
    assert sorted(seen) == sorted([ids[0], *ids[2:]])
    # And a token from another query is refused
    with pytest.raises(BadRequestError):
        jobs.claimable_page("other-wf", iso(clock.now), 2, "e30")


# The same races through the HTTP API, at the sizes the issue asks for (32 x 20, 8 x 200), are in
# tests/e2e/test_claim_race.py; these smaller ones pin the data-access layer alone.
RACES = 5


def test_32_threads_claiming_one_job_have_exactly_one_winner(registry: RegistryRepository) -> None:
    # Given a few jobs, each raced for by 32 sites at once (a barrier releases them together)
    ids = add_jobs("wf", RACES)
    conflicts = 0
    started = time.perf_counter()
    for job_id in ids:
        barrier = threading.Barrier(32)

        def claim(i: int, job_id: str = job_id, barrier: threading.Barrier = barrier) -> str | None:
            service = claim_service(registry)
            barrier.wait()
            try:
                return service.claim(job_id, SiteRef.of(f"site-{i}")).operation.id
            except ConflictError:
                return None

        with ThreadPoolExecutor(32) as pool:
            results = list(pool.map(claim, range(32)))
        winners = [r for r in results if r]
        conflicts += results.count(None)
        # Then exactly one site won, and the job and the operations table agree on it
        assert len(winners) == 1
        job = JobRepository().get(job_id)
        assert job.operation_id == winners[0] and job.attempts == 1 and len(job.claims) == 1
    elapsed = time.perf_counter() - started
    print(
        f"\n32x{RACES} race: {RACES * 32 / elapsed:.0f} claim attempts/s, "
        f"{conflicts / RACES:.0f} conflicts per job"
    )


def test_8_sites_claim_next_jobs_each_exactly_once(registry: RegistryRepository) -> None:
    # Given 60 pending jobs and 8 sites calling claim-next in a loop at once
    ids = set(add_jobs("wf", 60))
    claimed: dict[str, list[str]] = {}
    calls = Counter[str]()

    def site_loop(n: int) -> None:
        site = SiteRef.of(f"site-{n}")
        service = claim_service(registry, rng=random.Random(n))
        mine: list[str] = []
        while True:
            calls["claim_next"] += 1
            op = service.claim_next(site, "wf")
            if op is None:
                break
            mine.append(op.metadata["job"]["id"])
        claimed[site.id] = mine

    started = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(site_loop, range(8)))
    elapsed = time.perf_counter() - started
    # Then every job was claimed exactly once: none lost, none twice
    every = [j for mine in claimed.values() for j in mine]
    assert len(every) == len(set(every)) == len(ids)
    assert set(every) == ids
    # And the jobs table agrees: each job claimed once by the site that got it
    holder = {j: s for s, mine in claimed.items() for j in mine}
    for job in _all_jobs():
        assert job.status == "claimed" and job.attempts == 1
        assert job.site_id == holder[job.id]
    # And the work was spread over the sites
    assert sum(1 for mine in claimed.values() if mine) >= 4
    print(f"\n8x{len(ids)} claim-next: {len(ids) / elapsed:.0f} claims/s, {calls['claim_next']} calls")


def _all_jobs() -> list[Job]:
    out: list[Job] = []
    token: str | None = None
    while True:
        items, token = JobRepository().list_page(limit=100, page_token=token)
        out += items
        if not token:
            return out
