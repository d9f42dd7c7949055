"""Claim, lease and operation rules (logic/claims.py) against in-memory fakes and a fake clock."""

from __future__ import annotations

import copy
import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jobtriggers.dal.dynamo import request_token
from jobtriggers.dal.jobs import JobChange
from jobtriggers.errors import (
    ConflictError,
    ForbiddenError,
    NotFoundError,
    PayloadTooLargeError,
    ValidationFailed,
)
from jobtriggers.logic.claims import (
    CANDIDATE_PAGE,
    CANDIDATE_PAGES,
    TRIES_PER_PAGE,
    ClaimService,
    SiteRef,
    is_error_result,
)
from jobtriggers.logic.filters import parse_filter
from jobtriggers.logic.lifecycle import JobSteering
from jobtriggers.models import Job, Workflow, iso
from tests.fakes import FakeJobs, FakeWorkflows
from tests.jobs import report

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def _workflow(wf_id: str, **kw: Any) -> Workflow:
    return Workflow(id=wf_id, name=wf_id, created_at=T0, **kw)


def add_job(jobs: FakeJobs, workflow_id: str, object_id: str, created_at: datetime = T0) -> str:
    """A new pending job in the store (as a trigger makes it); its id."""
    return jobs.add(Job.new(workflow_id, object_id, iso(created_at))).id


A, B = SiteRef.of("site-a"), SiteRef.of("site-b")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def jobs() -> FakeJobs:
    return FakeJobs()


@pytest.fixture
def service(jobs: FakeJobs, clock: Clock) -> ClaimService:
    registry = FakeWorkflows(
        _workflow("wf", lease_seconds=60, max_attempts=2),
        _workflow("gpu-wf", capability_ids=["gpu", "big-mem"]),
        _workflow("default-wf"),
    )
    return ClaimService(jobs, jobs.operations, registry, clock=clock, rng=random.Random(7))


def test_claim_of_a_pending_job_returns_an_nmdc_shaped_operation(
    service: ClaimService, jobs: FakeJobs, clock: Clock
) -> None:
    # Given a pending job of a workflow with a 60 s lease
    job_id = add_job(jobs, "wf", "obj-1")
    # When site A claims it
    outcome = service.claim(job_id, A)
    # Then A holds a new operation in the NMDC Runtime's shape, and the job records the claim
    op = outcome.operation
    assert outcome.created is True
    assert op.done is False and op.result is None
    lease_end = iso(clock.now + timedelta(seconds=60))
    assert op.expire_time == lease_end
    assert op.metadata["site_id"] == "site-a"
    assert op.metadata["attempt"] == 1
    assert op.metadata["lease_expires_at"] == lease_end
    assert op.metadata["job"]["id"] == job_id
    assert op.metadata["job"]["config"] == {"object_id": "obj-1"}
    job = jobs.jobs[job_id]
    assert (job["status"], job["site_id"], job["operation_id"], job["attempts"]) == (
        "claimed",
        "site-a",
        op.id,
        1,
    )
    assert job["claims"] == [{"op_id": op.id, "site_id": "site-a", "done": False, "cancelled": False}]
    assert job["lease_expires_at"] == lease_end


def test_workflow_without_limits_gets_the_default_lease(
    service: ClaimService, jobs: FakeJobs, clock: Clock
) -> None:
    # Given a workflow that sets no lease_seconds
    job_id = add_job(jobs, "default-wf", "o")
    # When it is claimed
    op = service.claim(job_id, A).operation
    # Then the lease is the default hour
    assert op.metadata["lease_expires_at"] == iso(clock.now + timedelta(seconds=3600))


def test_same_site_claiming_again_gets_the_same_operation(service: ClaimService, jobs: FakeJobs) -> None:
    # Given site A holds a live lease on a job
    job_id = add_job(jobs, "wf", "o")
    first = service.claim(job_id, A)
    # When A retries the claim
    again = service.claim(job_id, A)
    # Then it gets the same operation and nothing new is written
    assert again.created is False
    assert again.operation.id == first.operation.id
    assert len(jobs.operations.ops) == 1
    assert jobs.jobs[job_id]["attempts"] == 1


def test_another_sites_live_lease_is_a_409_naming_holder_and_lease_end(
    service: ClaimService, jobs: FakeJobs, clock: Clock
) -> None:
    # Given site A holds a live lease
    job_id = add_job(jobs, "wf", "o")
    op = service.claim(job_id, A).operation
    clock.advance(59)
    # When site B claims the job before the lease ends
    with pytest.raises(ConflictError) as err:
        service.claim(job_id, B)
    # Then B is told who holds it and until when
    assert "site-a" in err.value.detail
    assert op.metadata["lease_expires_at"] in err.value.detail


def test_expired_lease_is_taken_over_and_the_old_holder_is_fenced_off(
    service: ClaimService, jobs: FakeJobs, clock: Clock
) -> None:
    # Given site A's lease has ended (the clock moved past it)
    job_id = add_job(jobs, "wf", "o")
    old = service.claim(job_id, A).operation
    clock.advance(61)
    # When site B claims the job
    new = service.claim(job_id, B).operation
    # Then B holds it with attempt 2, and A's operation is closed as expired
    job = jobs.jobs[job_id]
    assert (job["site_id"], job["operation_id"], job["attempts"]) == ("site-b", new.id, 2)
    assert new.metadata["attempt"] == 2
    assert jobs.operations.ops[old.id]["done"] is True
    assert jobs.operations.ops[old.id]["result"]["code"] == "lease_expired"
    # And nothing A sends changes the job any more: heartbeat, completion and release all fail
    before = copy.deepcopy(job)
    with pytest.raises(ConflictError, match="lease ended"):
        service.update_operation(old.id, A, report(metadata={"progress": 1}))
    with pytest.raises(ConflictError):
        service.update_operation(old.id, A, report(done=True, result={"outputs": []}))
    with pytest.raises(ForbiddenError):
        service.release(job_id, A)
    assert jobs.jobs[job_id] == before


def test_finished_jobs_cannot_be_claimed(service: ClaimService, jobs: FakeJobs) -> None:
    # Given one done job, one failed job and one cancelled job
    finished = {status: add_job(jobs, "wf", status) for status in ("done", "failed", "cancelled")}
    for status, job_id in finished.items():
        jobs.jobs[job_id]["status"] = status
    # When a site claims them, Then each is a 409 that says why, and how to run it again
    for status, job_id in finished.items():
        with pytest.raises(ConflictError, match=f"is {status}.*rerun"):
            service.claim(job_id, A)
    # And claim-next passes them by
    assert service.claim_next(A) is None


def test_missing_capabilities_are_a_403_naming_them(service: ClaimService, jobs: FakeJobs) -> None:
    # Given a workflow that needs gpu and big-mem
    job_id = add_job(jobs, "gpu-wf", "o")
    # When a site with only gpu claims it
    with pytest.raises(ForbiddenError) as err:
        service.claim(job_id, SiteRef.of("site-a", ["gpu"]))
    # Then the 403 names what it lacks, and the job is untouched
    assert "big-mem" in err.value.detail and "gpu," not in err.value.detail
    assert jobs.jobs[job_id]["status"] == "pending"
    # And a site with both may claim it
    assert service.claim(job_id, SiteRef.of("site-b", ["gpu", "big-mem", "x"])).created


def test_unknown_job_is_404(service: ClaimService) -> None:
    # Given no job, When a site claims an id, Then 404
    with pytest.raises(NotFoundError):
        service.claim("bm9wZSNub3Bl", A)


def test_a_claim_that_loses_the_race_reports_the_winner(service: ClaimService, jobs: FakeJobs) -> None:
    # Given site B claims the job between site A's read and A's write
    job_id = add_job(jobs, "wf", "o")
    other = ClaimService(jobs, jobs.operations, service.workflows, clock=service.clock)

    def interfere() -> None:
        jobs.before_apply = None
        other.claim(job_id, B)

    jobs.before_apply = interfere
    # When A's conditional write is checked
    with pytest.raises(ConflictError) as err:
        service.claim(job_id, A)
    # Then A's write failed, A re-read the job and was told B holds it; one operation exists
    assert "site-b" in err.value.detail
    assert len(jobs.operations.ops) == 1
    assert jobs.jobs[job_id]["site_id"] == "site-b"


def test_success_result_makes_the_job_done_with_its_result(service: ClaimService, jobs: FakeJobs) -> None:
    # Given a claimed job
    job_id = add_job(jobs, "wf", "o")
    op = service.claim(job_id, A).operation
    # When the holder reports done with outputs
    result = {"outputs": ["obj-9"], "n": 2}
    finished = service.update_operation(op.id, A, report(done=True, result=result))
    # Then the operation is done with the result, and so is the job
    assert finished.done is True and finished.result == result
    job = jobs.jobs[job_id]
    assert job["status"] == "done" and job["result"] == result
    # And a further PATCH is a 409
    with pytest.raises(ConflictError, match="finished"):
        service.update_operation(op.id, A, report(metadata={"late": True}))


def test_error_results_retry_until_max_attempts_then_fail(service: ClaimService, jobs: FakeJobs) -> None:
    # Given a workflow with max_attempts 2
    job_id = add_job(jobs, "wf", "o")
    error = {"code": "exit_1", "message": "boom", "details": {"stderr_tail": "Traceback"}}
    # When the first attempt ends in an error
    op1 = service.claim(job_id, A).operation
    service.update_operation(op1.id, A, report(done=True, result=error))
    # Then the job is pending again (retried), its lease gone
    job = jobs.jobs[job_id]
    assert job["status"] == "pending" and "lease_expires_at" not in job
    # When the second attempt ends in an error too
    op2 = service.claim(job_id, B).operation
    assert op2.metadata["attempt"] == 2
    service.update_operation(op2.id, B, report(done=True, result=error))
    # Then the job has failed for good, with the error as its result, and cannot be claimed
    job = jobs.jobs[job_id]
    assert job["status"] == "failed" and job["result"] == error
    with pytest.raises(ConflictError):
        service.claim(job_id, A)


def test_heartbeat_renews_the_lease_and_merges_metadata(
    service: ClaimService, jobs: FakeJobs, clock: Clock
) -> None:
    # Given a claimed job, 50 s into its 60 s lease
    job_id = add_job(jobs, "wf", "o")
    op = service.claim(job_id, A).operation
    clock.advance(50)
    # When the holder PATCHes progress
    patched = service.update_operation(op.id, A, report(metadata={"progress": 0.5, "stage": "asm"}))
    # Then the lease runs 60 s from now, and the metadata keeps the service's keys next to the site's
    lease_end = iso(clock.now + timedelta(seconds=60))
    assert jobs.jobs[job_id]["lease_expires_at"] == lease_end
    assert patched.metadata["lease_expires_at"] == lease_end == patched.expire_time
    assert patched.metadata["progress"] == 0.5 and patched.metadata["stage"] == "asm"
    assert patched.metadata["job"]["id"] == job_id
    # And past the old lease end another site still cannot take the job
    clock.advance(20)
    with pytest.raises(ConflictError, match="site-a"):
        service.claim(job_id, B)


def test_metadata_keys_the_service_owns_cannot_change(service: ClaimService, jobs: FakeJobs) -> None:
    # Given a claimed job
    job_id = add_job(jobs, "wf", "o")
    op = service.claim(job_id, A).operation
    # When the holder tries to change job, site_id or attempt, Then 422 naming the key
    for key, value in (("site_id", "site-b"), ("attempt", 9), ("job", {"id": "x"})):
        with pytest.raises(ValidationFailed, match=key):
            service.update_operation(op.id, A, report(metadata={key: value}))
    # And sending them back unchanged (as a client echoing the operation does) is accepted
    same = service.update_operation(op.id, A, report(metadata=dict(op.metadata) | {"note": "x"}))
    assert same.metadata["note"] == "x" and same.metadata["attempt"] == 1


def test_only_the_holder_may_read_or_patch_an_operation(service: ClaimService, jobs: FakeJobs) -> None:
    # Given site A's operation
    op = service.claim(add_job(jobs, "wf", "o"), A).operation
    # When site B reads or patches it, Then 403
    with pytest.raises(ForbiddenError):
        service.own_operation(op.id, B)
    with pytest.raises(ForbiddenError):
        service.update_operation(op.id, B, report(done=True, result={}))
    # And an unknown operation is 404
    with pytest.raises(NotFoundError):
        service.own_operation("nope", A)


def test_patch_rules_on_body_shape(service: ClaimService, jobs: FakeJobs) -> None:
    # Given a claimed job
    op = service.claim(add_job(jobs, "wf", "o"), A).operation
    # When a result comes without done: true, Then 422
    with pytest.raises(ValidationFailed, match="done"):
        service.update_operation(op.id, A, report(result={"outputs": []}))
    # When the body is huge, Then 413 pointing at objects
    with pytest.raises(PayloadTooLargeError, match="objects"):
        service.update_operation(op.id, A, report(metadata={"log": "x" * 70_000}))
    # When a key is empty, Then 422
    with pytest.raises(ValidationFailed):
        service.update_operation(op.id, A, report(metadata={"": 1}))
    # And the operation is still live after all of these
    assert jobs.operations.ops[op.id]["done"] is False


def test_release_by_holder_returns_the_job_and_cancels_the_operation(
    service: ClaimService, jobs: FakeJobs
) -> None:
    # Given site A holds a job
    job_id = add_job(jobs, "wf", "o")
    op = service.claim(job_id, A).operation
    # When site B releases it, Then 403
    with pytest.raises(ForbiddenError):
        service.release(job_id, B)
    # When A releases it
    released = service.release(job_id, A)
    # Then the job is pending, the operation done and cancelled
    assert jobs.jobs[job_id]["status"] == "pending"
    assert released.id == op.id and released.done is True and released.metadata["cancelled"] is True
    # And the release gave its attempt back: the job has used none
    assert jobs.jobs[job_id]["attempts"] == 0
    # And releasing again is a 409 (not claimed), and B may claim it now, as attempt 1 again
    with pytest.raises(ConflictError, match="not claimed"):
        service.release(job_id, A)
    assert service.claim(job_id, B).operation.metadata["attempt"] == 1


def test_claim_next_takes_the_oldest_runnable_jobs_first(
    service: ClaimService, jobs: FakeJobs, clock: Clock
) -> None:
    # Given an older job the site may not run (gpu) and three it may run
    add_job(jobs, "gpu-wf", "g", created_at=T0 - timedelta(hours=1))
    ids = [add_job(jobs, "wf", f"o{i}", created_at=T0 + timedelta(seconds=i)) for i in range(3)]
    # When site A claims the next job three times, and a fourth
    claimed = [service.claim_next(A) for _ in range(3)]
    fourth = service.claim_next(A)
    # Then it got each runnable job once, never the gpu one, and then nothing
    assert sorted(op.metadata["job"]["id"] for op in claimed if op) == sorted(ids)
    assert fourth is None


def test_claim_next_picks_up_ended_leases(service: ClaimService, jobs: FakeJobs, clock: Clock) -> None:
    # Given a job whose holder's lease ended
    job_id = add_job(jobs, "wf", "o")
    service.claim(job_id, A)
    assert service.claim_next(B, "wf") is None
    clock.advance(61)
    # When site B asks for the next job of the workflow
    op = service.claim_next(B, "wf")
    # Then it takes that job over
    assert op is not None and op.metadata["job"]["id"] == job_id and op.metadata["attempt"] == 2


def test_claim_next_checks_the_named_workflow(service: ClaimService, jobs: FakeJobs) -> None:
    # Given jobs of a gpu workflow, When a site without gpu names it, Then 403
    add_job(jobs, "gpu-wf", "o")
    with pytest.raises(ForbiddenError, match="gpu"):
        service.claim_next(A, "gpu-wf")
    # When a site names a workflow that does not exist, Then 422
    with pytest.raises(ValidationFailed, match="nope"):
        service.claim_next(A, "nope")


def test_claim_next_spreads_claimers_and_bounds_its_tries(jobs: FakeJobs, clock: Clock) -> None:
    # Given a full set of candidate pages, and a store where every claim loses its race (a crowd)
    for i in range(CANDIDATE_PAGE * CANDIDATE_PAGES):
        add_job(jobs, "wf", f"o{i}", created_at=T0 + timedelta(seconds=i))
    tried: list[str] = []

    def always_lose(change: JobChange) -> bool:
        assert change.new_operation is not None, "only claims are tried here"
        tried.append(change.job.id)
        return False

    jobs.apply = always_lose  # type: ignore[method-assign]
    registry = FakeWorkflows(_workflow("wf", lease_seconds=60))
    firsts = set()
    for seed in range(8):
        # When eight sites (each its own random order) ask for the next job
        tried.clear()
        op = ClaimService(jobs, jobs.operations, registry, clock=clock, rng=random.Random(seed)).claim_next(
            SiteRef.of(f"s{seed}")
        )
        # Then each gives up with None after a bounded number of tries
        assert op is None
        assert len(tried) == len(set(tried)) == TRIES_PER_PAGE * CANDIDATE_PAGES
        firsts.add(tried[0])
    # And they did not all start at the head of the queue
    assert len(firsts) >= 4


@pytest.mark.parametrize(
    ("result", "is_error"),
    [
        ({"code": "exit_1", "message": "boom"}, True),
        ({"code": "x", "message": "y", "details": {"a": 1}}, True),
        ({"code": "x", "message": "y", "outputs": []}, False),
        ({"outputs": ["o"]}, False),
        (None, False),
        ({"code": 1, "message": "y"}, False),
    ],
)
def test_error_results_are_recognised_by_their_shape(result: Any, is_error: bool) -> None:
    # Given a result, When classified, Then only {code, message, details?} with strings is an error
    assert is_error_result(result) is is_error


def test_a_claim_whose_answer_was_lost_still_counts(service: ClaimService, jobs: FakeJobs) -> None:
    # Given a store that applies the claim but reports a failed condition (botocore retried a
    # transaction whose first answer was lost, and the retry found the job taken - by itself)
    job_id = add_job(jobs, "wf", "o")
    real = jobs.apply

    def lost_answer(change: JobChange) -> bool:
        assert real(change)
        return False

    jobs.apply = lost_answer  # type: ignore[method-assign]
    # When the site claims the next job
    op = service.claim_next(A)
    # Then it gets the operation that holds the job, not None (the job would idle until its lease ends)
    assert op is not None and jobs.jobs[job_id]["operation_id"] == op.id


def test_a_late_heartbeat_before_any_takeover_revives_the_lease(
    service: ClaimService, jobs: FakeJobs, clock: Clock
) -> None:
    # Given site A's lease ended 5 s ago and nobody took the job
    job_id = add_job(jobs, "wf", "o")
    op = service.claim(job_id, A).operation
    clock.advance(65)
    # When A heartbeats
    service.update_operation(op.id, A, report())
    # Then it holds the job again for a full lease, and B cannot take it
    assert jobs.jobs[job_id]["lease_expires_at"] == iso(clock.now + timedelta(seconds=60))
    with pytest.raises(ConflictError):
        service.claim(job_id, B)


# --------------------------------------------------------------------------- attempts and expiries


def test_releases_give_their_attempts_back(service: ClaimService, jobs: FakeJobs) -> None:
    # Given a job of a workflow with max_attempts 2, released twice by its holders
    job_id = add_job(jobs, "wf", "o")
    for site in (A, B):
        service.claim(job_id, site)
        service.release(job_id, site)
    # When the next claim ends in an error
    op = service.claim(job_id, A).operation
    service.update_operation(op.id, A, report(done=True, result={"code": "exit_1", "message": "x"}))
    # Then that was its first failed attempt: the job is pending again, not failed
    job = jobs.jobs[job_id]
    assert (job["status"], job["attempts"]) == ("pending", 1)
    assert job["last_error"] == {"code": "exit_1", "message": "x"}


def test_an_expired_lease_is_a_failed_attempt_and_the_last_one_fails_the_job(
    service: ClaimService, jobs: FakeJobs, clock: Clock
) -> None:
    # Given a job of a workflow with max_attempts 2 and a 60 s lease, whose holders keep dying
    job_id = add_job(jobs, "wf", "o")
    first = service.claim(job_id, A).operation
    clock.advance(61)
    # When site B claims it after the first lease ended
    second = service.claim(job_id, B).operation
    # Then the first attempt counted as failed with lease_expired, and B holds attempt 2
    assert second.metadata["attempt"] == 2
    assert jobs.operations.ops[first.id]["result"]["code"] == "lease_expired"
    assert jobs.jobs[job_id]["last_error"]["code"] == "lease_expired"
    # When B's lease ends too and a site tries to take the job over
    clock.advance(61)
    with pytest.raises(ConflictError, match=r"failed.*lease_expired"):
        service.claim(job_id, A)
    # Then the job failed for good, with lease_expired as its result and last error
    job = jobs.jobs[job_id]
    assert job["status"] == "failed" and job["attempts"] == 2
    assert job["result"]["code"] == job["last_error"]["code"] == "lease_expired"
    assert jobs.operations.ops[second.id]["done"] is True
    assert service.claim_next(A) is None


def test_the_reaper_expires_ended_leases_without_any_claim(
    service: ClaimService, jobs: FakeJobs, clock: Clock
) -> None:
    # Given three claimed jobs (max_attempts 2): one on its first attempt, one on its last, one live
    first, last, live = add_job(jobs, "wf", "a"), add_job(jobs, "wf", "b"), add_job(jobs, "wf", "c")
    service.claim(first, A)
    service.claim(last, A)
    jobs.jobs[last]["attempts"] = 2
    clock.advance(61)
    service.claim(live, A)
    # When the reaper runs
    report = service.expire_ended_leases()
    # Then the first is pending again, the last failed with lease_expired, the live one untouched
    assert (report.seen, report.pending, report.failed, report.skipped) == (2, 1, 1, 0)
    assert jobs.jobs[first]["status"] == "pending" and jobs.jobs[first]["attempts"] == 1
    assert jobs.jobs[last]["status"] == "failed" and jobs.jobs[last]["result"]["code"] == "lease_expired"
    assert jobs.jobs[live]["status"] == "claimed"
    # And a second run finds nothing to do
    assert service.expire_ended_leases().seen == 0


def test_the_reaper_is_bounded_per_run(service: ClaimService, jobs: FakeJobs, clock: Clock) -> None:
    # Given 7 ended leases
    ids = [add_job(jobs, "wf", f"o{i}") for i in range(7)]
    for job_id in ids:
        service.claim(job_id, A)
    clock.advance(61)
    # When the reaper may handle 5 per run, Then it handles 5 and says more are left; the next run the rest
    report = service.expire_ended_leases(max_jobs=5)
    assert (report.seen, report.pending, report.more) == (5, 5, True)
    report = service.expire_ended_leases(max_jobs=5)
    assert (report.seen, report.pending, report.more) == (2, 2, False)


def test_an_expiry_loses_to_a_heartbeat_that_came_first(
    service: ClaimService, jobs: FakeJobs, clock: Clock
) -> None:
    # Given an ended lease, as an (eventually consistent) index showed it to the reaper
    job_id = add_job(jobs, "wf", "o")
    op = service.claim(job_id, A).operation
    clock.advance(61)
    seen = jobs.get(job_id)
    # When the holder's late heartbeat lands before the expiry
    service.update_operation(op.id, A, report())
    # Then the expiry of what was seen changes nothing, and the holder keeps the job
    assert service.expire_lease(seen, clock.now) is None
    assert jobs.jobs[job_id]["status"] == "claimed" and jobs.jobs[job_id]["operation_id"] == op.id
    assert jobs.operations.ops[op.id]["done"] is False


# --------------------------------------------------------------------------- the claims shape


# The claims half of nmdc_automation's watcher filter (tests/unit/test_filters.py has all of it).
UNCLAIMED = parse_filter(
    json.dumps(
        {
            "$or": [
                {"claims": {"$size": 0}},
                {"claims": {"$not": {"$elemMatch": {"cancelled": {"$ne": True}}}}},
            ]
        }
    )
)


def _end_attempt(
    how: str, service: ClaimService, jobs: FakeJobs, clock: Clock, job_id: str, op_id: str
) -> None:
    """End the claim of `op_id` on `job_id` (site A's) the way `how` says."""
    if how == "released":
        service.release(job_id, A)
    elif how == "error retried":
        service.update_operation(op_id, A, report(done=True, result={"code": "exit_1", "message": "x"}))
    elif how == "lease expired":
        clock.advance(61)
        assert service.expire_ended_leases().seen == 1
    elif how == "cancelled":
        JobSteering(jobs, clock=clock).cancel(job_id, "operator:ada")
        service.update_operation(op_id, A, report(done=True, result={"code": "cancelled", "message": "stop"}))
    elif how == "succeeded":
        service.update_operation(op_id, A, report(done=True, result={"outputs": []}))
    else:
        raise AssertionError(how)


@pytest.mark.parametrize(
    ("how", "cancelled"),
    [
        ("released", True),
        ("error retried", True),
        ("lease expired", True),
        ("cancelled", True),
        ("succeeded", False),
    ],
)
def test_a_claim_that_ends_is_done_and_cancelled_unless_it_finished_the_job(
    service: ClaimService, jobs: FakeJobs, clock: Clock, how: str, cancelled: bool
) -> None:
    # Given a job claimed by site A: its claim is open
    job_id = add_job(jobs, "wf", "o")
    op = service.claim(job_id, A).operation
    assert jobs.get(job_id).claims[0].model_dump() == {
        "op_id": op.id,
        "site_id": "site-a",
        "done": False,
        "cancelled": False,
    }
    assert not UNCLAIMED.matches(jobs.get(job_id).model_dump(mode="json"))
    # When the claim ends (released, an error retried, its lease expired, the job cancelled, or done)
    _end_attempt(how, service, jobs, clock, job_id, op.id)
    # Then the claim is done; cancelled unless it finished the job
    [claim] = jobs.get(job_id).claims
    assert claim.model_dump() == {"op_id": op.id, "site_id": "site-a", "done": True, "cancelled": cancelled}
    # And so NMDC's watcher reads the job as unclaimed exactly when the claim did not finish it
    assert UNCLAIMED.matches(jobs.get(job_id).model_dump(mode="json")) is cancelled


def test_a_takeover_ends_the_old_claim_and_opens_a_new_one(
    service: ClaimService, jobs: FakeJobs, clock: Clock
) -> None:
    # Given site A's lease has ended
    job_id = add_job(jobs, "wf", "o")
    old = service.claim(job_id, A).operation
    clock.advance(61)
    # When site B takes the job over
    new = service.claim(job_id, B).operation
    # Then A's claim ended unfinished and B's is open, in claim order; B's operation knows its place
    assert [c.model_dump() for c in jobs.get(job_id).claims] == [
        {"op_id": old.id, "site_id": "site-a", "done": True, "cancelled": True},
        {"op_id": new.id, "site_id": "site-b", "done": False, "cancelled": False},
    ]
    assert (old.claim_index, new.claim_index) == (0, 1)
    # And the takeover was the expiry's transition and then the claim's
    assert jobs.events(job_id) == ["job.claimed", "job.lease_expired", "job.claimed"]
    # And when B finishes, its claim is done and not cancelled; A's stays as it was
    service.update_operation(new.id, B, report(done=True, result={}))
    assert [(c.done, c.cancelled) for c in jobs.get(job_id).claims] == [(True, True), (True, False)]


# --------------------------------------------------------------------------- claim-next reads


def test_claim_next_reads_only_the_queues_of_workflows_the_site_may_run(jobs: FakeJobs, clock: Clock) -> None:
    # Given 500 older jobs of a gpu workflow and of a workflow no longer in the registry, and one job
    # of a workflow the site may run
    for i in range(250):
        add_job(jobs, "gpu-wf", f"g{i}", created_at=T0 - timedelta(hours=2))
        add_job(jobs, "removed-wf", f"r{i}", created_at=T0 - timedelta(hours=1))
    job_id = add_job(jobs, "wf", "o")
    registry = FakeWorkflows(_workflow("wf"), _workflow("gpu-wf", capability_ids=["gpu"]))
    service = ClaimService(jobs, jobs.operations, registry, clock=clock, rng=random.Random(3))
    # When a site without gpu asks for the next job
    op = service.claim_next(A)
    # Then it gets the one it may run, having read only that workflow's queue
    assert op is not None and op.metadata["job"]["id"] == job_id
    assert {wf for wf, _ in jobs.queries} == {"wf"}
    # And the others stay pending: the removed workflow's jobs are claimed by nobody
    jobs.queries.clear()
    assert service.claim_next(SiteRef.of("gpu-site", ["gpu"])) is not None
    assert {wf for wf, _ in jobs.queries} <= {"wf", "gpu-wf"}
    assert all(j["status"] == "pending" for j in jobs.jobs.values() if j["workflow"]["id"] == "removed-wf")


def test_claim_next_rotates_over_the_workflows(jobs: FakeJobs, clock: Clock) -> None:
    # Given five workflows with one job each
    workflows = [_workflow(f"wf{i}") for i in range(5)]
    for wf in workflows:
        add_job(jobs, wf.id, "o")
    firsts = set()
    for seed in range(12):
        # When sites with their own random order ask for the next job (each on a copy of the queue)
        copied = copy.deepcopy(jobs)
        service = ClaimService(
            copied, copied.operations, FakeWorkflows(*workflows), clock=clock, rng=random.Random(seed)
        )
        op = service.claim_next(A)
        assert op is not None
        firsts.add(op.metadata["job"]["workflow"]["id"])
    # Then they do not all take the same workflow's job (no workflow starves the others)
    assert len(firsts) >= 3


def test_a_transactions_request_token_is_its_items_and_attempt() -> None:
    # Given the items of one write
    items = [{"Update": {"TableName": "jobs", "Key": {"job_key": {"S": "wf#o"}}}}]
    # When its token is derived twice, and for a send after a conflict
    first, again, after_conflict = request_token(items), request_token(items), request_token(items, 1)
    # Then the same write has the same token (DynamoDB answers its repeat with success), a new send
    # a new one, and every token fits DynamoDB's 36 characters
    assert first == again != after_conflict
    assert request_token([{"Update": {"TableName": "jobs", "Key": {"job_key": {"S": "wf#p"}}}}]) != first
    assert all(1 <= len(t) <= 36 for t in (first, after_conflict))
