"""A job's life on the local runtime's event bus: every transition once, in order (issue 9, item 4).

The job items are written into the runtime's jobs table as the service writes them under the
transition contract (tests/job_life.py: `version` + 1 and `transition` on each state change). From
there it is all the runtime's: the stream poller reads the jobs stream, JobEventsFunction (in its
own worker processes, through the runtime's proxy) records and counts each transition and puts its
events on the template's JobEventsBus (moto), and `GET /local/events` lists what a rule on that bus
received.

Under 20 % injected DynamoDB faults the events are still exactly the life, once each: a failed
record is retried from where it failed, a transition is recorded and counted once (a conditional
transaction), and an event is put once unless the invocation itself dies after its put. With faults
on EventBridge as well, a lost PutEvents answer puts an event twice (as on AWS: at-least-once), and
deduplicating on `event_id` gives the life back, in order.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest

from jobtriggers.dal.job_events import JobEventsStore
from jobtriggers.local.runtime import LocalRuntime
from tests.faults import FaultInjector, fast_backoff
from tests.job_life import JobLife

LIFE = ["job.created", "job.claimed", "job.failed", "job.rerun", "job.claimed", "job.done"]
# Every DynamoDB operation (and none of EventBridge's): "DynamoDB faults", wherever they land.
DYNAMODB_OPERATIONS = set(
    boto3.client("dynamodb", region_name="us-east-1").meta.service_model.operation_names
)


@pytest.fixture(autouse=True)
def _compressed_backoff() -> Iterator[None]:
    with fast_backoff():
        yield


def _wait_for_events(
    runtime: LocalRuntime, job_id: str, count: int, timeout: float = 60
) -> list[dict[str, Any]]:
    """The job's events once at least `count` are there and the stream is idle (so any extra would
    be there too)."""
    deadline = time.monotonic() + timeout
    while len(runtime.events(job_id)) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    runtime.wait_for_stream(timeout=max(1.0, deadline - time.monotonic()))
    return runtime.events(job_id)


def _lives(runtime: LocalRuntime, count: int = 1) -> list[JobLife]:
    """Full lives of `count` jobs of a fresh workflow, by two fresh sites, with heartbeats in
    between. The jobs move a step at a time together, and the stream is let through between steps:
    many batches, each with a record of every job."""
    workflow_id = f"e2e-events-{uuid.uuid4().hex[:8]}"
    first, second = (f"site-{uuid.uuid4().hex[:8]}" for _ in range(2))
    lives = [JobLife(runtime.tables["JOBS_TABLE"], workflow_id) for _ in range(count)]
    steps = [
        lambda life: life.create(),
        lambda life: life.claim(first),
        lambda life: life.heartbeat(),
        lambda life: life.fail(),
        lambda life: life.rerun(),
        lambda life: life.claim(second),
        lambda life: life.heartbeat(),
        lambda life: life.done(),
    ]
    for step in steps:
        for life in lives:
            step(life)
        if count > 1:
            runtime.wait_for_stream(timeout=30)
    assert all(life.expected_types == LIFE for life in lives)
    return lives


def _assert_counted_once(runtime: LocalRuntime, life: JobLife) -> None:
    _assert_all_counted_once(runtime, [life])


def _assert_all_counted_once(runtime: LocalRuntime, lives: list[JobLife]) -> None:
    """The lives' workflow counts all of its jobs done, once; each site's claims are its claims."""
    store = JobEventsStore(runtime.tables["JOB_EVENTS_TABLE"], runtime.tables["COUNTS_TABLE"])
    (workflow_id,) = {life.workflow_id for life in lives}
    counts = store.workflow_counts([workflow_id])[workflow_id]
    assert counts.model_dump(exclude={"workflow_id"}) == {
        "pending": 0,
        "claimed": 0,
        "done": len(lives),
        "failed": 0,
        "cancelled": 0,
    }
    expected: dict[tuple[str, str], int] = {}
    for life in lives:
        for claim in life.claim_hours:
            expected[claim] = expected.get(claim, 0) + 1
    sites = sorted({site for site, _ in expected})
    hours = sorted({hour for _, hour in expected})
    claims = {(c.site_id, c.hour): c.claims for c in store.site_claims(sites, hours) if c.claims}
    assert claims == expected
    for life in lives:
        assert [t.version for t in store.transitions(life.job_id)] == [1, 2, 3, 4, 5, 6]


def test_a_full_life_shows_on_the_bus_exactly_once_in_order(
    local_runtime: LocalRuntime, api: httpx.Client
) -> None:
    # Given a job's life written into the jobs table (heartbeats in between)
    (life,) = _lives(local_runtime)
    # When the runtime has streamed it through JobEventsFunction
    events = _wait_for_events(local_runtime, life.job_id, len(LIFE))
    # Then the bus received exactly the life's transitions, in order, once each
    assert [e["detail-type"] for e in events] == LIFE
    assert [e["detail"]["event_id"] for e in events] == [f"{life.job_id}:{v}:0" for v in range(1, 7)]
    assert {(e["source"], e["detail"]["job_id"], e["detail"]["workflow_id"]) for e in events} == {
        ("jobtriggers", life.job_id, life.workflow_id)
    }
    # And GET /local/events says the same, for this job and among all
    r = api.get("/local/events", params={"job_id": life.job_id})
    assert r.status_code == 200 and r.json() == events
    everything = api.get("/local/events").json()
    assert [e for e in everything if e["detail"].get("job_id") == life.job_id] == events
    # And the counts hold the job once, done, and each site's claim
    _assert_counted_once(local_runtime, life)
    # And PutEvents went through the functions' proxy, like their DynamoDB calls
    assert local_runtime.stats()["dynamodb"]["requests"].get("PutEvents", 0) >= len(LIFE)


def test_local_events_refuses_what_it_does_not_take(api: httpx.Client) -> None:
    r = api.get("/local/events", params={"job": "x"})
    assert r.status_code == 400 and "takes only job_id" in r.json()["detail"]
    r = api.get("/local/events?job_id=a&job_id=b")
    assert r.status_code == 400 and "one job_id" in r.json()["detail"]
    assert api.get("/local/events", params={"job_id": "no-such-job"}).json() == []


def _assert_exactly_the_lives(runtime: LocalRuntime, lives: list[JobLife], timeout: float) -> None:
    for life in lives:
        events = _wait_for_events(runtime, life.job_id, len(LIFE), timeout=timeout)
        assert [e["detail-type"] for e in events] == LIFE, life.job_id
        assert [e["detail"]["event_id"] for e in events] == [f"{life.job_id}:{v}:0" for v in range(1, 7)]


def test_full_lives_show_exactly_once_in_order_under_dynamodb_faults(local_runtime: LocalRuntime) -> None:
    # Given 20 % of the functions' DynamoDB calls failing (throttles, 500s, timeouts, lost answers)
    faults = FaultInjector(rate=0.2, seed=9, operations=DYNAMODB_OPERATIONS)
    with faults.attached(local_runtime.proxy):
        # When five jobs live their lives, and the runtime streams them through JobEventsFunction
        lives = _lives(local_runtime, count=5)
        _assert_exactly_the_lives(local_runtime, lives, timeout=120)
    stats = local_runtime.stats()
    print(
        f"\nfaults: {faults.summary()}; stream: {stats['function_errors']} function errors, "
        f"{stats['partial_failures']} partial failures"
    )
    # Then the bus received exactly each life's transitions, in order, once each (asserted above)
    # And each was counted once
    _assert_all_counted_once(local_runtime, lives)
    # And the faults reached JobEvents' transactions and marks, and never EventBridge
    assert faults.by_operation["TransactWriteItems"] > 0 and faults.by_operation["UpdateItem"] > 0
    assert "PutEvents" not in faults.by_operation


def test_with_eventbridge_faults_too_every_event_arrives_and_deduplicates_to_the_life(
    local_runtime: LocalRuntime,
) -> None:
    # Given 20 % of the functions' calls failing, PutEvents included (a lost answer puts twice)
    faults = FaultInjector(rate=0.2, seed=17)
    with faults.attached(local_runtime.proxy):
        lives = _lives(local_runtime, count=5)
        arrived = {
            life.job_id: _wait_for_events(local_runtime, life.job_id, len(LIFE), 120) for life in lives
        }
    # Then every transition arrived at least once, in order of first arrival; on event_id, exactly the life
    for life in lives:
        first: dict[str, str] = {}
        for e in arrived[life.job_id]:
            first.setdefault(e["detail"]["event_id"], e["detail-type"])
        assert list(first) == [f"{life.job_id}:{v}:0" for v in range(1, 7)]
        assert list(first.values()) == LIFE
    # And each was counted once all the same
    _assert_all_counted_once(local_runtime, lives)
    assert faults.by_operation["PutEvents"] > 0
    duplicates = sum(len(a) for a in arrived.values()) - len(LIFE) * len(lives)
    print(f"\nfaults: {faults.summary()}; {duplicates} duplicate puts")
