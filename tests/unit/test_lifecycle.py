"""Steering jobs (logic/lifecycle.py: cancel, rerun, operator release) and the transition contract of
every change of a job's state (DESIGN-phase3.md), against the in-memory stores and a fake clock."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta

import pytest

from jobtriggers.errors import ConflictError
from jobtriggers.logic.claims import ClaimService, SiteRef
from jobtriggers.logic.lifecycle import JobSteering
from jobtriggers.logic.triggering import TriggerEngine
from jobtriggers.models import Job, JobStatus, Trigger, iso
from tests.fakes import FakeJobs, FakeWorkflows
from tests.jobs import report
from tests.unit.test_claims import T0, Clock, _workflow, add_job

A, B = SiteRef.of("site-a"), SiteRef.of("site-b")
OPERATOR = "operator:ada"
ERROR = {"code": "exit_1", "message": "boom"}
CANCELLED = {"code": "cancelled", "message": "stopped on a cancel request"}


@dataclass
class World:
    jobs: FakeJobs
    clock: Clock
    claims: ClaimService
    steering: JobSteering

    def job(self, job_id: str) -> Job:
        return self.jobs.get(job_id)

    def claim(self, job_id: str, site: SiteRef = A) -> str:
        """Claim the job as `site`; the operation's id."""
        return self.claims.claim(job_id, site).operation.id

    def claims_of(self, job_id: str) -> list[dict[str, object]]:
        return [c.model_dump() for c in self.job(job_id).claims]


@pytest.fixture
def world() -> World:
    jobs, clock = FakeJobs(), Clock()
    workflows = FakeWorkflows(_workflow("wf", lease_seconds=60, max_attempts=2))
    claims = ClaimService(jobs, jobs.operations, workflows, clock=clock, rng=random.Random(1))
    return World(jobs, clock, claims, JobSteering(jobs, clock=clock))


def claim_of(
    op_id: str, site: SiteRef = A, *, done: bool = False, cancelled: bool = False
) -> dict[str, object]:
    return {"op_id": op_id, "site_id": site.id, "done": done, "cancelled": cancelled}


# --------------------------------------------------------------------------- transitions


def test_a_job_life_is_one_transition_per_change_with_its_events_in_order(world: World) -> None:
    # Given a job the trigger engine created
    engine = TriggerEngine(FakeTriggers(), world.jobs, clock=world.clock)
    job_id, created = engine.put_job(FakeTriggers.TRIGGER, "o", tagged_at=None)
    assert created and world.job(job_id).version == 1 and world.jobs.events(job_id) == ["job.created"]
    # When it is claimed, heartbeats, fails an attempt, is claimed again and finishes
    op1 = world.claim(job_id)
    world.clock.advance(10)
    world.claims.update_operation(op1, A, report(metadata={"progress": 0.5}))
    world.claims.update_operation(op1, A, report(done=True, result=ERROR))
    op2 = world.claim(job_id, B)
    world.claims.update_operation(op2, B, report(done=True, result={"outputs": ["x"]}))
    # And an operator reruns it, and it is claimed and released
    world.steering.rerun(job_id, OPERATOR)
    world.claim(job_id)
    world.claims.release(job_id, A)
    # Then each change of state was one transition with its events, in order; the heartbeat none
    assert world.jobs.events(job_id) == [
        "job.created",
        "job.claimed",
        "job.attempt_failed",
        "job.claimed",
        "job.done",
        "job.rerun",
        "job.claimed",
        "job.released",
    ]
    transitions = world.jobs.transitions[job_id]
    assert world.job(job_id).version == len(transitions) == 8
    # And each says who made it: the service, the site, or the operator
    assert [t.by for t in transitions] == [
        "service",
        "site-a",
        "site-a",
        "site-b",
        "site-b",
        OPERATOR,
        "site-a",
        "site-a",
    ]
    assert transitions[1].details == {"operation_id": op1, "attempt": 1}
    assert transitions[5].details == {"run": 2}
    assert all(t.at == iso(world.clock.now) for t in transitions[2:])


def test_a_heartbeat_moves_the_lease_without_a_transition(world: World) -> None:
    # Given a claimed job
    job_id = add_job(world.jobs, "wf", "o")
    op = world.claim(job_id)
    before = world.job(job_id)
    # When its holder heartbeats, twice
    for _ in range(2):
        world.clock.advance(30)
        world.claims.update_operation(op, A, report(metadata={"progress": 1}))
    # Then the lease moved, and the version and the events did not
    after = world.job(job_id)
    assert after.lease_expires_at == iso(world.clock.now + timedelta(seconds=60)) != before.lease_expires_at
    assert after.version == before.version
    assert world.jobs.events(job_id) == ["job.claimed"]


@pytest.mark.parametrize(
    ("attempts_used", "events", "status"),
    [
        (1, ["job.lease_expired"], JobStatus.pending),
        (2, ["job.lease_expired", "job.failed"], JobStatus.failed),
    ],
)
def test_an_expiry_is_one_transition_and_on_the_last_attempt_also_fails_the_job(
    world: World, attempts_used: int, events: list[str], status: JobStatus
) -> None:
    # Given a claimed job (max_attempts 2) on its first or its last attempt, whose lease ended
    job_id = add_job(world.jobs, "wf", "o")
    if attempts_used == 2:
        world.claims.update_operation(world.claim(job_id), A, report(done=True, result=ERROR))
    op = world.claim(job_id)
    before = world.job(job_id)
    world.clock.advance(61)
    # When the reaper expires it
    world.claims.expire_ended_leases()
    # Then one transition by the service says so, and the claim ended unfinished
    job = world.job(job_id)
    assert job.status == status and job.version == before.version + 1
    [expiry] = world.jobs.transitions[job_id][-1:]
    assert [e.value for e in expiry.events] == events and expiry.by == "service"
    assert expiry.details == {"operation_id": op, "site_id": "site-a", "attempt": attempts_used}
    assert world.claims_of(job_id)[-1] == claim_of(op, done=True, cancelled=True)
    assert (job.finished_at is not None) is (status == JobStatus.failed)


def test_the_last_error_result_fails_the_job_in_one_transition(world: World) -> None:
    # Given a job on its last attempt
    job_id = add_job(world.jobs, "wf", "o")
    world.claims.update_operation(world.claim(job_id), A, report(done=True, result=ERROR))
    op = world.claim(job_id, B)
    # When that attempt ends in an error too
    world.claims.update_operation(op, B, report(done=True, result=ERROR))
    # Then the job failed in one transition (job.failed), its claim ended unfinished
    job = world.job(job_id)
    assert (job.status, job.result, job.last_error) == ("failed", ERROR, ERROR)
    assert job.finished_at == iso(world.clock.now)
    assert world.jobs.events(job_id)[-2:] == ["job.claimed", "job.failed"]
    assert world.claims_of(job_id)[-1] == claim_of(op, B, done=True, cancelled=True)


# --------------------------------------------------------------------------- cancel


def test_cancel_of_a_pending_job_cancels_it_and_nobody_claims_it(world: World) -> None:
    # Given a pending job
    job_id = add_job(world.jobs, "wf", "o")
    # When an operator cancels it
    answered = world.steering.cancel(job_id, OPERATOR)
    # Then it is cancelled at once, in one transition by the operator
    job = world.job(job_id)
    assert answered.status == job.status == JobStatus.cancelled
    assert answered.version == job.version == 2
    assert job.finished_at == iso(world.clock.now) and job.cancel_requested is False
    [cancel] = world.jobs.transitions[job_id]
    assert [e.value for e in cancel.events] == ["job.cancelled"] and cancel.by == OPERATOR
    # And it is never claimable: not by id, not by claim-next
    with pytest.raises(ConflictError, match="cancelled"):
        world.claim(job_id)
    assert world.claims.claim_next(A) is None


def test_cancel_of_a_claimed_job_asks_its_holder_at_its_next_heartbeat(world: World) -> None:
    # Given a claimed job
    job_id = add_job(world.jobs, "wf", "o")
    op = world.claim(job_id)
    # When an operator cancels it
    answered = world.steering.cancel(job_id, OPERATOR)
    # Then the job stays claimed by its holder, marked cancel-requested, as is its operation
    job = world.job(job_id)
    assert (job.status, job.site_id, job.cancel_requested) == ("claimed", "site-a", True)
    assert answered.cancel_requested is True and answered.version == job.version
    assert world.jobs.operations.ops[op]["metadata"]["cancel_requested"] is True
    assert world.jobs.events(job_id)[-1] == "job.cancel_requested"
    # And the holder's next heartbeat answers so (and still renews the lease: it is stopping)
    beat = world.claims.update_operation(op, A, report(metadata={"progress": 0.9}))
    assert beat.metadata["cancel_requested"] is True and beat.done is False
    # And a heartbeat that sends the metadata back as read is not refused
    world.claims.update_operation(op, A, report(metadata=dict(beat.metadata)))
    # And a second cancel is a 409 that says it is already asked
    with pytest.raises(ConflictError, match="already asked"):
        world.steering.cancel(job_id, OPERATOR)


def test_a_cancelled_holder_reporting_its_stop_makes_the_job_cancelled(world: World) -> None:
    # Given a claimed job whose cancel was asked
    job_id = add_job(world.jobs, "wf", "o")
    op = world.claim(job_id)
    world.steering.cancel(job_id, OPERATOR)
    # When the holder stops and reports done with the error {code: cancelled}
    world.claims.update_operation(op, A, report(done=True, result=CANCELLED))
    # Then the job is cancelled (not pending for another attempt), its claim ended unfinished
    job = world.job(job_id)
    assert (job.status, job.last_error, job.finished_at) == ("cancelled", CANCELLED, iso(world.clock.now))
    assert job.lease_expires_at is None and job.result is None
    assert world.jobs.events(job_id)[-2:] == ["job.cancel_requested", "job.cancelled"]
    assert world.claims_of(job_id) == [claim_of(op, done=True, cancelled=True)]
    assert world.claims.claim_next(A) is None


def test_a_success_reported_after_a_cancel_request_makes_the_job_done(world: World) -> None:
    # Given a claimed job whose cancel was asked
    job_id = add_job(world.jobs, "wf", "o")
    op = world.claim(job_id)
    world.steering.cancel(job_id, OPERATOR)
    # When the holder finished the work anyway and reports its result
    world.claims.update_operation(op, A, report(done=True, result={"outputs": ["x"]}))
    # Then the job is done with it (the work happened), the claim finished
    job = world.job(job_id)
    assert (job.status, job.result) == ("done", {"outputs": ["x"]})
    assert world.jobs.events(job_id)[-1] == "job.done"
    assert world.claims_of(job_id) == [claim_of(op, done=True)]


def test_a_cancel_requested_job_whose_lease_ends_is_cancelled(world: World) -> None:
    # Given a claimed job whose cancel was asked, and whose holder then vanished
    job_id = add_job(world.jobs, "wf", "o")
    op = world.claim(job_id)
    world.steering.cancel(job_id, OPERATOR)
    world.clock.advance(61)
    # When the lease reaper runs
    reaped = world.claims.expire_ended_leases()
    # Then the job is cancelled, not pending (nobody is to run it again), in one transition
    job = world.job(job_id)
    assert (reaped.seen, reaped.failed) == (1, 1)
    assert job.status == JobStatus.cancelled and job.last_error["code"] == "lease_expired"
    assert world.jobs.events(job_id)[-3:] == ["job.cancel_requested", "job.lease_expired", "job.cancelled"]
    assert [e.value for e in world.jobs.transitions[job_id][-1].events] == [
        "job.lease_expired",
        "job.cancelled",
    ]
    assert world.claims_of(job_id) == [claim_of(op, done=True, cancelled=True)]
    assert world.jobs.operations.ops[op]["done"] is True


def test_a_cancel_requested_job_released_by_its_holder_is_cancelled(world: World) -> None:
    # Given a claimed job whose cancel was asked
    job_id = add_job(world.jobs, "wf", "o")
    op = world.claim(job_id)
    world.steering.cancel(job_id, OPERATOR)
    # When the holder releases it rather than reporting
    world.claims.release(job_id, A)
    # Then it is cancelled, not pending
    assert world.job(job_id).status == JobStatus.cancelled
    assert [e.value for e in world.jobs.transitions[job_id][-1].events] == ["job.released", "job.cancelled"]
    assert world.claims_of(job_id) == [claim_of(op, done=True, cancelled=True)]


def test_cancel_of_a_failed_job_gives_it_up(world: World) -> None:
    # Given a failed job
    job_id = add_job(world.jobs, "wf", "o")
    for site in (A, B):
        world.claims.update_operation(world.claim(job_id, site), site, report(done=True, result=ERROR))
    assert world.job(job_id).status == JobStatus.failed
    # When an operator cancels it, Then it is cancelled (it keeps its last error)
    world.steering.cancel(job_id, OPERATOR)
    job = world.job(job_id)
    assert (job.status, job.last_error) == ("cancelled", ERROR)
    assert world.jobs.events(job_id)[-1] == "job.cancelled"


@pytest.mark.parametrize("status", [JobStatus.done, JobStatus.cancelled])
def test_cancel_of_a_done_or_cancelled_job_is_a_409_and_changes_nothing(
    world: World, status: JobStatus
) -> None:
    # Given a done job, or a cancelled one
    job_id = add_job(world.jobs, "wf", "o")
    if status == JobStatus.done:
        world.claims.update_operation(world.claim(job_id), A, report(done=True, result={}))
    else:
        world.steering.cancel(job_id, OPERATOR)
    before = world.jobs.jobs[job_id]
    # When an operator cancels it, Then 409 naming its status, and nothing is written
    with pytest.raises(ConflictError, match=f"is {status.value}"):
        world.steering.cancel(job_id, OPERATOR)
    assert world.jobs.jobs[job_id] == before


# --------------------------------------------------------------------------- rerun


@pytest.mark.parametrize("status", [JobStatus.done, JobStatus.failed, JobStatus.cancelled])
def test_rerun_makes_a_finished_job_pending_with_a_fresh_budget(world: World, status: JobStatus) -> None:
    # Given a job that finished one way or another, after two claims
    job_id = add_job(world.jobs, "wf", "o")
    first = world.claim(job_id)
    world.claims.update_operation(first, A, report(done=True, result=ERROR))
    second = world.claim(job_id, B)
    if status == JobStatus.done:
        world.claims.update_operation(second, B, report(done=True, result={"outputs": ["x"]}))
    elif status == JobStatus.failed:
        world.claims.update_operation(second, B, report(done=True, result=ERROR))
    else:
        world.steering.cancel(job_id, OPERATOR)
        world.claims.update_operation(second, B, report(done=True, result=CANCELLED))
    before = world.job(job_id)
    assert before.status == status
    # When an operator reruns it
    answered = world.steering.rerun(job_id, OPERATOR)
    # Then it is pending again with no attempts used, one run more, its claims kept as history
    job = world.job(job_id)
    assert answered.model_dump() == job.model_dump()
    assert (job.status, job.attempts, job.run, job.version) == ("pending", 0, 2, before.version + 1)
    assert job.claims == []
    assert [c.model_dump() for c in job.previous_claims] == [
        claim_of(first, done=True, cancelled=True),
        claim_of(second, B, done=True, cancelled=status != JobStatus.done),
    ]
    assert (job.result, job.last_error, job.finished_at, job.cancel_requested) == (None, None, None, False)
    assert world.jobs.events(job_id)[-1] == "job.rerun"
    # And its operations stay, as history
    assert {first, second} <= set(world.jobs.operations.ops)
    assert world.jobs.operations.ops[second]["done"] is True
    # And it runs again: claimed as attempt 1 of the new run, its claim the first of this run
    op = world.claims.claim(job_id, A).operation
    assert op.attempt == 1 and op.claim_index == 0
    world.claims.update_operation(op.id, A, report(done=True, result={"outputs": ["y"]}))
    again = world.job(job_id)
    assert (again.status, again.run, again.result) == ("done", 2, {"outputs": ["y"]})
    assert [c.model_dump() for c in again.claims] == [claim_of(op.id, done=True)]
    assert len(again.previous_claims) == 2


def test_a_second_rerun_keeps_every_earlier_runs_claims(world: World) -> None:
    # Given a job done in run 1, rerun and done in run 2
    job_id = add_job(world.jobs, "wf", "o")
    ops = []
    for _ in range(2):
        ops.append(world.claim(job_id))
        world.claims.update_operation(ops[-1], A, report(done=True, result={}))
        world.steering.rerun(job_id, OPERATOR)
    # Then run 3 is pending, and both earlier claims are in previous_claims, oldest first
    job = world.job(job_id)
    assert (job.run, job.status) == (3, "pending")
    assert [c.op_id for c in job.previous_claims] == ops


@pytest.mark.parametrize("status", [JobStatus.pending, JobStatus.claimed])
def test_rerun_of_a_pending_or_claimed_job_is_a_409(world: World, status: JobStatus) -> None:
    # Given a pending job, or a claimed one
    job_id = add_job(world.jobs, "wf", "o")
    if status == JobStatus.claimed:
        world.claim(job_id)
    before = world.jobs.jobs[job_id]
    # When an operator reruns it, Then 409 naming its status; nothing is written
    with pytest.raises(ConflictError, match=f"is {status.value}; only done, failed or cancelled"):
        world.steering.rerun(job_id, OPERATOR)
    assert world.jobs.jobs[job_id] == before


# --------------------------------------------------------------------------- release


def test_an_operator_release_hands_the_job_back_as_its_holder_would(world: World) -> None:
    # Given a job claimed by site A
    job_id = add_job(world.jobs, "wf", "o")
    op = world.claim(job_id)
    # When an operator releases it
    released = world.steering.release(job_id, OPERATOR)
    # Then it is pending with its attempt given back, in one transition by the operator
    assert released.model_dump() == world.job(job_id).model_dump()
    assert (released.status, released.attempts) == ("pending", 0)
    assert released.lease_expires_at is None
    [*_, release] = world.jobs.transitions[job_id]
    assert ([e.value for e in release.events], release.by) == (["job.released"], OPERATOR)
    assert release.details == {"operation_id": op}
    # And the claim and the operation ended cancelled, so the holder's next word is refused
    assert world.claims_of(job_id) == [claim_of(op, done=True, cancelled=True)]
    assert world.jobs.operations.ops[op]["done"] is True
    assert world.jobs.operations.ops[op]["metadata"]["cancelled"] is True
    with pytest.raises(ConflictError, match="released"):
        world.claims.update_operation(op, A, report(metadata={"progress": 1}))
    # And another site may claim it, as attempt 1
    assert world.claims.claim(job_id, B).operation.attempt == 1


@pytest.mark.parametrize("status", [JobStatus.pending, JobStatus.done])
def test_an_operator_release_of_an_unclaimed_job_is_a_409(world: World, status: JobStatus) -> None:
    job_id = add_job(world.jobs, "wf", "o")
    if status == JobStatus.done:
        world.claims.update_operation(world.claim(job_id), A, report(done=True, result={}))
    with pytest.raises(ConflictError, match="not claimed"):
        world.steering.release(job_id, OPERATOR)


# --------------------------------------------------------------------------- races


def test_a_steering_write_on_a_job_that_changed_since_it_was_read_is_a_409(world: World) -> None:
    # Given a pending job that a site claims between the operator's read and write
    job_id = add_job(world.jobs, "wf", "o")

    def claim_meanwhile() -> None:
        world.jobs.before_apply = None
        world.claim(job_id, B)

    world.jobs.before_apply = claim_meanwhile
    # When the operator's cancel is written, Then it is refused (the job is not as read) and says so
    with pytest.raises(ConflictError, match="changed meanwhile"):
        world.steering.cancel(job_id, OPERATOR)
    job = world.job(job_id)
    assert (job.status, job.cancel_requested) == ("claimed", False)


def cancel_before_the_next_write(world: World, job_id: str) -> None:
    """An operator's cancel lands just before the next write is checked (after its writer read)."""

    def cancel() -> None:
        world.jobs.before_apply = None
        world.steering.cancel(job_id, OPERATOR)

    world.jobs.before_apply = cancel


def test_a_cancel_landing_between_a_holders_read_and_its_error_report_still_cancels(world: World) -> None:
    # Given a claimed job (first attempt of 2), and a cancel that lands while its holder reports
    job_id = add_job(world.jobs, "wf", "o")
    op = world.claim(job_id)
    cancel_before_the_next_write(world, job_id)
    # When the holder reports an error (it read its operation before the cancel)
    answered = world.claims.update_operation(op, A, report(done=True, result=CANCELLED))
    # Then the job is cancelled, not pending for another attempt with a cancel still hanging on it
    job = world.job(job_id)
    assert answered.done is True
    assert (job.status, job.cancel_requested) == ("cancelled", True)
    assert world.jobs.events(job_id)[-2:] == ["job.cancel_requested", "job.cancelled"]
    assert world.claims.claim_next(B) is None


def test_a_cancel_landing_between_a_holders_read_and_its_release_still_cancels(world: World) -> None:
    # Given a claimed job, and a cancel that lands while its holder releases it
    job_id = add_job(world.jobs, "wf", "o")
    world.claim(job_id)
    cancel_before_the_next_write(world, job_id)
    # When the holder releases it (it read the job before the cancel)
    world.claims.release(job_id, A)
    # Then the job is cancelled, not pending with a cancel still hanging on it
    job = world.job(job_id)
    assert job.status == JobStatus.cancelled
    assert world.jobs.events(job_id)[-3:] == ["job.cancel_requested", "job.released", "job.cancelled"]
    assert world.claims.claim_next(B) is None


class FakeTriggers:
    """The one trigger the transition test's engine knows."""

    TRIGGER = Trigger(id="t--wf", object_type_id="t", workflow_id="wf", created_at=T0)

    def triggers_for_object_type(self, object_type_id: str) -> list[Trigger]:
        return [self.TRIGGER] if object_type_id == "t" else []
