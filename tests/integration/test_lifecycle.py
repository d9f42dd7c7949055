"""The transition contract on the jobs table, against the moto server over HTTP: every change of a
job's state is one transaction that adds one to the item's `version` and stores its `transition`
(what the jobs stream turns into events), and claims end `done` / `cancelled` on the item.
Cancel, rerun and operator release (logic/lifecycle.py) write what the unit tests say they decide."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jobtriggers.dal.dynamo import dynamodb, to_item
from jobtriggers.dal.jobs import JobChange, JobRepository
from jobtriggers.dal.operations import OperationRepository
from jobtriggers.dal.registry import RegistryRepository
from jobtriggers.errors import ConflictError
from jobtriggers.logic.claims import ClaimService, SiteRef
from jobtriggers.logic.lifecycle import JobSteering
from jobtriggers.models import JobStatus, Workflow, iso, job_id_for, job_key
from jobtriggers.settings import table_names
from tests.jobs import put_new_job, report, stored_job, stored_operation

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
A, B = SiteRef.of("site-a"), SiteRef.of("site-b")
OPERATOR = "operator:ada"
ERROR = {"code": "exit_1", "message": "boom"}
CANCELLED = {"code": "cancelled", "message": "stopped on a cancel request"}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class HookedJobs(JobRepository):
    """The jobs table, with a hook that runs once just before the next change is written."""

    before_apply: Callable[[], None] | None = None

    def apply(self, change: JobChange) -> bool:
        hook, self.before_apply = self.before_apply, None
        if hook is not None:
            hook()
        return super().apply(change)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def jobs(tables: dict[str, str]) -> HookedJobs:
    registry = RegistryRepository()
    registry.put("workflow", Workflow(id="wf", name="wf", created_at=T0, lease_seconds=60, max_attempts=2))
    return HookedJobs()


@pytest.fixture
def claims(jobs: HookedJobs, clock: Clock) -> ClaimService:
    return ClaimService(jobs, OperationRepository(), RegistryRepository(), clock=clock)


@pytest.fixture
def steering(jobs: HookedJobs, clock: Clock) -> JobSteering:
    return JobSteering(jobs, clock=clock)


def new_job(name: str = "o") -> str:
    return put_new_job("wf", name, iso(T0)).id


def transition(job_id: str) -> dict[str, Any]:
    """The item's stored transition, and its version beside it."""
    item = stored_job(job_id)
    return {**item["transition"], "version": item["version"]}


def claim_of(op_id: str, site: SiteRef = A, *, done: bool = False, cancelled: bool = False) -> dict[str, Any]:
    return {"op_id": op_id, "site_id": site.id, "done": done, "cancelled": cancelled}


def test_each_change_of_a_jobs_life_writes_its_version_and_transition_on_the_item(
    claims: ClaimService, steering: JobSteering, clock: Clock
) -> None:
    # Given a job created as the trigger engine creates it
    job_id = new_job()
    assert transition(job_id) == {
        "events": ["job.created"],
        "at": iso(T0),
        "by": "service",
        "details": {},
        "version": 1,
    }
    # When site A claims it
    op1 = claims.claim(job_id, A).operation.id
    # Then the item says so: version 2, who claimed, which operation and attempt, the open claim
    assert transition(job_id) == {
        "events": ["job.claimed"],
        "at": iso(T0),
        "by": "site-a",
        "details": {"operation_id": op1, "attempt": 1},
        "version": 2,
    }
    assert stored_job(job_id)["claims"] == [claim_of(op1)]
    # When A heartbeats, Then the lease moves and nothing else: same version, same transition
    clock.advance(30)
    claims.update_operation(op1, A, report(metadata={"progress": 0.5}))
    item = stored_job(job_id)
    assert item["lease_expires_at"] == item["queue_at"] == iso(clock.now + timedelta(seconds=60))
    assert transition(job_id)["version"] == 2 and transition(job_id)["events"] == ["job.claimed"]
    # When A's attempt ends in an error, Then version 3 says so, and the claim ended unfinished
    claims.update_operation(op1, A, report(done=True, result=ERROR))
    assert transition(job_id) == {
        "events": ["job.attempt_failed"],
        "at": iso(clock.now),
        "by": "site-a",
        "details": {"operation_id": op1, "attempt": 1},
        "version": 3,
    }
    item = stored_job(job_id)
    assert item["claims"] == [claim_of(op1, done=True, cancelled=True)]
    assert (item["status"], item["workflow_status"], item["queue_at"]) == (
        "pending",
        "wf#pending",
        iso(clock.now),
    )
    # When B claims it and finishes it
    op2 = claims.claim(job_id, B).operation.id
    claims.update_operation(op2, B, report(done=True, result={"outputs": ["x"]}))
    # Then two more versions; the finishing claim is done and not cancelled
    assert transition(job_id)["events"] == ["job.done"] and transition(job_id)["version"] == 5
    item = stored_job(job_id)
    assert item["claims"] == [claim_of(op1, done=True, cancelled=True), claim_of(op2, B, done=True)]
    assert (item["status"], item["workflow_status"], item["finished_at"]) == (
        "done",
        "wf#done",
        iso(clock.now),
    )
    # When an operator reruns it
    clock.advance(60)
    steering.rerun(job_id, OPERATOR)
    # Then version 6 is the rerun, by the operator; the item holds run 2 with a fresh budget, the
    # earlier claims as history, and no result, last error or end of the run before
    assert transition(job_id) == {
        "events": ["job.rerun"],
        "at": iso(clock.now),
        "by": OPERATOR,
        "details": {"run": 2},
        "version": 6,
    }
    item = stored_job(job_id)
    assert (item["status"], item["workflow_status"], item["attempts"], item["run"]) == (
        "pending",
        "wf#pending",
        0,
        2,
    )
    assert item["claims"] == []
    assert item["previous_claims"] == [claim_of(op1, done=True, cancelled=True), claim_of(op2, B, done=True)]
    assert not {"result", "last_error", "finished_at", "lease_expires_at"} & set(item)
    # And both operations are still there, as history
    assert stored_operation(op1)["done"] is stored_operation(op2)["done"] is True
    # And the pending queue has the job again
    page, _ = JobRepository().queue_page("wf", "pending", iso(clock.now), 10)
    assert [j.id for j in page] == [job_id]


@pytest.mark.parametrize(
    ("attempts_before", "events", "status"),
    [
        (0, ["job.lease_expired"], "pending"),
        (1, ["job.lease_expired", "job.failed"], "failed"),
    ],
)
def test_a_lease_expiry_is_one_transition_on_the_item(
    claims: ClaimService, clock: Clock, attempts_before: int, events: list[str], status: str
) -> None:
    # Given a claimed job on its first attempt, or on its last (max_attempts 2), whose lease ended
    job_id = new_job()
    if attempts_before:
        claims.update_operation(claims.claim(job_id, A).operation.id, A, report(done=True, result=ERROR))
    op = claims.claim(job_id, A).operation.id
    version = stored_job(job_id)["version"]
    clock.advance(61)
    # When the reaper runs
    claims.expire_ended_leases()
    # Then the item holds one more version, by the service, and the claim ended unfinished
    assert transition(job_id) == {
        "events": events,
        "at": iso(clock.now),
        "by": "service",
        "details": {"operation_id": op, "site_id": "site-a", "attempt": attempts_before + 1},
        "version": version + 1,
    }
    item = stored_job(job_id)
    assert (item["status"], item["workflow_status"]) == (status, f"wf#{status}")
    assert item["claims"][-1] == claim_of(op, done=True, cancelled=True)
    assert stored_operation(op)["result"]["code"] == "lease_expired"


def test_cancel_of_a_pending_job_is_written_and_listed_as_cancelled(steering: JobSteering) -> None:
    # Given a pending job
    job_id = new_job()
    # When an operator cancels it
    steering.cancel(job_id, OPERATOR)
    # Then the item is cancelled in version 2, and the status index lists it so
    assert transition(job_id) == {
        "events": ["job.cancelled"],
        "at": iso(T0),
        "by": OPERATOR,
        "details": {},
        "version": 2,
    }
    item = stored_job(job_id)
    assert (item["status"], item["workflow_status"], item["finished_at"]) == (
        "cancelled",
        "wf#cancelled",
        iso(T0),
    )
    listed, _ = JobRepository().list_page(status="cancelled")
    assert [j.id for j in listed] == [job_id]
    listed, _ = JobRepository().list_page(workflow_id="wf", status="cancelled")
    assert [j.id for j in listed] == [job_id]


def test_cancel_of_a_claimed_job_reaches_the_holder_and_its_stop_cancels_the_job(
    claims: ClaimService, steering: JobSteering, clock: Clock
) -> None:
    # Given a job claimed by site A
    job_id = new_job()
    op = claims.claim(job_id, A).operation.id
    # When an operator cancels it
    clock.advance(5)
    steering.cancel(job_id, OPERATOR)
    # Then job and operation items are marked cancel-requested, the job still claimed by A
    item = stored_job(job_id)
    assert (item["status"], item["site_id"], item["cancel_requested"]) == ("claimed", "site-a", True)
    assert transition(job_id)["events"] == ["job.cancel_requested"] and transition(job_id)["by"] == OPERATOR
    assert stored_operation(op)["metadata"]["cancel_requested"] is True
    # And A's next heartbeat answers that the job was cancelled
    beat = claims.update_operation(op, A, report(metadata={"progress": 0.7}))
    assert beat.metadata["cancel_requested"] is True and beat.done is False
    # When A stops and reports done with the error {code: cancelled}
    claims.update_operation(op, A, report(done=True, result=CANCELLED))
    # Then the job is cancelled, its claim ended unfinished, the operation done
    assert transition(job_id)["events"] == ["job.cancelled"] and transition(job_id)["by"] == "site-a"
    item = stored_job(job_id)
    assert (item["status"], item["last_error"], item["claims"]) == (
        "cancelled",
        CANCELLED,
        [claim_of(op, done=True, cancelled=True)],
    )
    assert stored_operation(op)["done"] is True and stored_operation(op)["site_done"] == "site-a#true"
    assert claims.claim_next(B) is None


def test_a_cancel_requested_job_whose_lease_ends_is_cancelled_by_the_reaper(
    claims: ClaimService, steering: JobSteering, clock: Clock
) -> None:
    # Given a claimed job whose cancel was asked, and whose holder then vanished
    job_id = new_job()
    op = claims.claim(job_id, A).operation.id
    steering.cancel(job_id, OPERATOR)
    clock.advance(61)
    # When the lease reaper runs
    claims.expire_ended_leases()
    # Then the job is cancelled in one transition: the lease expired, and that ends the cancel
    assert transition(job_id)["events"] == ["job.lease_expired", "job.cancelled"]
    item = stored_job(job_id)
    assert (item["status"], item["claims"]) == ("cancelled", [claim_of(op, done=True, cancelled=True)])


def test_an_operator_release_is_written_as_the_holders_would_be(
    claims: ClaimService, steering: JobSteering
) -> None:
    # Given a job claimed by site A
    job_id = new_job()
    op = claims.claim(job_id, A).operation.id
    # When an operator releases it
    steering.release(job_id, OPERATOR)
    # Then the item is pending with the attempt given back, the release by the operator
    assert transition(job_id) == {
        "events": ["job.released"],
        "at": iso(T0),
        "by": OPERATOR,
        "details": {"operation_id": op},
        "version": 3,
    }
    item = stored_job(job_id)
    assert (item["status"], item["attempts"], item["claims"]) == (
        "pending",
        0,
        [claim_of(op, done=True, cancelled=True)],
    )
    operation = stored_operation(op)
    assert operation["done"] is True and operation["metadata"]["cancelled"] is True
    # And A's next word is refused: its operation is finished
    with pytest.raises(ConflictError, match="released"):
        claims.update_operation(op, A, report(metadata={"progress": 1}))


def test_a_cancel_landing_between_the_holders_read_and_its_report_is_not_lost(
    jobs: HookedJobs, claims: ClaimService, steering: JobSteering
) -> None:
    # Given a claimed job, and a cancel that lands after its holder read its operation
    job_id = new_job()
    op = claims.claim(job_id, A).operation.id

    def cancel() -> None:
        steering.cancel(job_id, OPERATOR)

    jobs.before_apply = cancel
    # When the holder reports an error (as it would for any failure)
    claims.update_operation(op, A, report(done=True, result=ERROR))
    # Then the table's guard caught it, and the job is cancelled, not pending again
    assert [stored_job(job_id)["status"], transition(job_id)["events"]] == ["cancelled", ["job.cancelled"]]


def test_a_job_stored_before_versions_and_runs_goes_through_its_whole_life(
    claims: ClaimService, steering: JobSteering
) -> None:
    # Given a pending job as the service stored it before jobs had a version, a run, cancel_requested
    # and previous_claims (phase 2's item, written raw because no code writes it any more)
    job_id, created = job_id_for("wf", "old"), iso(T0 - timedelta(days=30))
    legacy = {
        "job_key": job_key("wf", "old"),
        "id": job_id,
        "workflow_id": "wf",
        "object_id": "old",
        "config": {"object_id": "old"},
        "status": "pending",
        "workflow_status": "wf#pending",
        "listing": "job",
        "created_at": created,
        "queue_at": created,
        "updated_at": created,
        "attempts": 0,
        "claims": [],
    }
    dynamodb().put_item(TableName=table_names().jobs_table, Item=to_item(legacy))
    assert JobRepository().get(job_id).version == 0
    # When it is claimed, fails an attempt, is claimed and finishes, is rerun and cancelled
    op = claims.claim(job_id, A).operation.id
    claims.update_operation(op, A, report(done=True, result=ERROR))
    op = claims.claim(job_id, B).operation.id
    claims.update_operation(op, B, report(done=True, result={}))
    steering.rerun(job_id, OPERATOR)
    steering.cancel(job_id, OPERATOR)
    # Then every step went through, counting from version 0 and run 1
    item = stored_job(job_id)
    assert (item["status"], item["version"], item["run"], len(item["previous_claims"])) == (
        "cancelled",
        6,
        2,
        2,
    )


def test_steering_refusals_write_nothing(claims: ClaimService, steering: JobSteering) -> None:
    # Given a pending job and a done one
    pending, done = new_job("p"), new_job("d")
    claims.update_operation(claims.claim(done, A).operation.id, A, report(done=True, result={}))
    before = {j: stored_job(j) for j in (pending, done)}
    # When an operator reruns the pending one, cancels the done one, releases either
    for attempt, job_id in (
        (steering.rerun, pending),
        (steering.cancel, done),
        (steering.release, pending),
        (steering.release, done),
    ):
        with pytest.raises(ConflictError):
            attempt(job_id, OPERATOR)
    # Then 409s, and the items are as they were
    assert {j: stored_job(j) for j in (pending, done)} == before
    assert JobRepository().get(done).status == JobStatus.done
