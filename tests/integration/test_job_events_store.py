"""The job events consumer against moto over HTTP: the jobs table's real stream records, the
transaction on the job events and counts tables, PutEvents on a real (moto) bus observed by a rule.

Jobs are written as the service writes them under the transition contract (tests/job_life.py).
What a subscriber sees is read as a subscriber would: a catch-all rule on the bus sends every event
to a queue (jobtriggers.local.events.EventBuses, the local runtime's observer).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse, HTTPHeaders

from jobtriggers.dal.dynamo import dynamodb
from jobtriggers.dal.job_events import JobEventsBus, JobEventsStore, PublishFailed
from jobtriggers.local.events import EventBuses
from jobtriggers.logic.job_events import JobEventsProcessor, record_batch_metrics
from jobtriggers.logic.stream_batch import process_in_order
from jobtriggers.settings import reset_settings_cache
from tests.api_events import LambdaContextStub, load_function
from tests.faults import LOST_RESPONSE, SERVER_ERROR, FaultInjector, fast_backoff
from tests.job_life import JobLife
from tests.stream_records import stream_records

WF = "metag-1.0.0"
LIFE = ["job.created", "job.claimed", "job.failed", "job.rerun", "job.claimed", "job.done"]


@pytest.fixture
def bus(
    tables: dict[str, str], dynamo_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[EventBuses]:
    """A fresh job events bus with an observer, named in JOB_EVENTS_BUS as the template sets it."""
    buses = EventBuses(dynamo_endpoint, {"JobEventsBus": f"jobs-{uuid.uuid4().hex[:10]}"}).create()
    monkeypatch.setenv("JOB_EVENTS_BUS", buses.names["JobEventsBus"])
    reset_settings_cache()
    yield buses
    reset_settings_cache()


@pytest.fixture(autouse=True)
def _compressed_backoff() -> Iterator[None]:
    with fast_backoff():
        yield


def _batch(tables: dict[str, str], after: str | None = None) -> tuple[dict[str, Any], list[str]]:
    """The jobs stream's records (those after sequence number `after`) as one Lambda batch."""
    records = stream_records(tables["JOBS_TABLE"])
    if after is not None:
        records = [r for r in records if int(r["dynamodb"]["SequenceNumber"]) > int(after)]
    for r in records:
        r.update(eventSource="aws:dynamodb", awsRegion="us-east-1", eventSourceARN="arn:jobs-stream")
        r["dynamodb"].pop("ApproximateCreationDateTime", None)
    return {"Records": records}, [r["dynamodb"]["SequenceNumber"] for r in records]


def _processor(bus_client: Any = None) -> JobEventsProcessor:
    events_bus = JobEventsBus()
    if bus_client is not None:
        events_bus._client = bus_client
    return JobEventsProcessor(JobEventsStore(), events_bus)


def _run(processor: JobEventsProcessor, event: dict[str, Any]) -> dict[str, Any]:
    """What the handler does (functions/job_events/app.py), with a processor of the test's own."""
    result = process_in_order(event["Records"], processor.handle_stream_record)
    record_batch_metrics(result)
    return dict(result.response_or_raise())


def _published(bus: EventBuses, job_id: str) -> list[tuple[str, str]]:
    return [(e["detail-type"], e["detail"]["event_id"]) for e in bus.events(job_id=job_id)]


def _counts(workflow_id: str) -> dict[str, int]:
    counts = JobEventsStore().workflow_counts([workflow_id])[workflow_id]
    return counts.model_dump(exclude={"workflow_id"})


# --------------------------------------------------------------------------- the handler


def test_a_full_life_is_published_in_order_once_each_and_counted(
    tables: dict[str, str], bus: EventBuses
) -> None:
    # Given a job's whole life in the jobs table, with a heartbeat (no new version) in between
    life = JobLife(tables["JOBS_TABLE"], WF)
    life.create()
    life.claim("site-a")
    life.heartbeat()
    life.fail()
    life.rerun()
    life.claim("site-b")
    life.done()
    event, sequence = _batch(tables)
    assert len(sequence) == 7
    # When JobEvents handles the stream's batch
    response = load_function("job_events")(event, LambdaContextStub())
    # Then every transition was published once, in order, and nothing for the heartbeat
    assert response == {"batchItemFailures": []}
    published = bus.events(job_id=life.job_id)
    assert [e["detail-type"] for e in published] == LIFE
    assert [e["detail"]["event_id"] for e in published] == [f"{life.job_id}:{v}:0" for v in range(1, 7)]
    assert {e["source"] for e in published} == {"jobtriggers"}
    # And each carries the job as the transition left it
    claimed_again = published[4]["detail"]
    assert (claimed_again["site_id"], claimed_again["previous_status"], claimed_again["status"]) == (
        "site-b",
        "pending",
        "claimed",
    )
    assert published[2]["detail"]["last_error"] == {"code": "exit_1", "message": "the command failed"}
    assert published[3]["detail"]["by"] == "operator:alice" and published[3]["detail"]["run"] == 2
    # And the counts hold the one job, done; each site made one claim in that hour
    assert _counts(WF) == {"pending": 0, "claimed": 0, "done": 1, "failed": 0, "cancelled": 0}
    hour = life.item["transition"]["at"][:13]  # type: ignore[index]
    claims = JobEventsStore().site_claims(["site-a", "site-b", "site-c"], [hour])
    assert [(c.site_id, c.claims) for c in claims] == [("site-a", 1), ("site-b", 1), ("site-c", 0)]
    # And the board reads the job's events back in order, each transition marked published
    transitions = JobEventsStore().transitions(life.job_id)
    assert [t.version for t in transitions] == [1, 2, 3, 4, 5, 6]
    assert all(t.published and t.published_at for t in transitions)
    assert [e.type for e in JobEventsStore().events(life.job_id)] == LIFE


def test_processing_the_same_records_twice_publishes_each_event_once_and_counts_once(
    tables: dict[str, str], bus: EventBuses
) -> None:
    # Given a life with a takeover (two events in one transition), handled once
    life = JobLife(tables["JOBS_TABLE"], WF)
    life.create(max_attempts=3)
    life.claim("site-a")
    life.takeover("site-b")
    life.done()
    event, _ = _batch(tables)
    handler = load_function("job_events")
    assert handler(event, LambdaContextStub()) == {"batchItemFailures": []}
    once = _published(bus, life.job_id)
    counts = _counts(WF)
    # When the same batch is delivered again (Lambda retries after a crash), twice
    assert handler(event, LambdaContextStub()) == {"batchItemFailures": []}
    assert handler(event, LambdaContextStub()) == {"batchItemFailures": []}
    # Then nothing more was published, and nothing counted again
    assert _published(bus, life.job_id) == once
    takeover = ["job.lease_expired", "job.claimed"]
    assert [t for t, _ in once] == ["job.created", "job.claimed", *takeover, "job.done"]
    assert [i for _, i in once][2:4] == [f"{life.job_id}:3:0", f"{life.job_id}:3:1"]
    assert _counts(WF) == counts == {"pending": 0, "claimed": 0, "done": 1, "failed": 0, "cancelled": 0}


# --------------------------------------------------------------------------- failures


def _refuse_put_events(after: int) -> tuple[Any, list[int]]:
    """A botocore before-send hook: PutEvents calls after the first `after` are answered as
    EventBridge answers an entry it could not take (200, FailedEntryCount 1)."""
    calls = [0]

    def hook(request: Any, **_: Any) -> AWSResponse | None:
        calls[0] += 1
        if calls[0] <= after:
            return None
        entries = json.loads(request.body)["Entries"]
        body = {
            "FailedEntryCount": len(entries),
            "Entries": [{"ErrorCode": "InternalFailure", "ErrorMessage": "try again"} for _ in entries],
        }
        headers = HTTPHeaders()
        headers["Content-Type"] = "application/x-amz-json-1.1"
        return AWSResponse(request.url, 200, headers, _Raw(json.dumps(body).encode()))

    return hook, calls


class _Raw:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._data


def test_a_put_events_failure_fails_the_record_and_the_rest_of_the_batch_unprocessed(
    tables: dict[str, str], bus: EventBuses
) -> None:
    # Given a life of four transitions, and EventBridge refusing entries from the second put on
    life = JobLife(tables["JOBS_TABLE"], WF)
    life.create()
    life.claim("site-a")
    life.fail()
    life.rerun()
    event, sequence = _batch(tables)
    events_bus = JobEventsBus()
    hook, _ = _refuse_put_events(after=1)
    events_bus.client.meta.events.register("before-send.eventbridge.PutEvents", hook, unique_id="refuse")
    # When the batch is handled
    response = _run(JobEventsProcessor(JobEventsStore(), events_bus), event)
    # Then the failed record and every one after it are handed back; only the first was published
    assert response == {"batchItemFailures": [{"itemIdentifier": s} for s in sequence[1:]]}
    assert [t for t, _ in _published(bus, life.job_id)] == ["job.created"]
    # And the failed record's transition is recorded (counted) but not marked published
    assert [(t.version, t.published) for t in JobEventsStore().transitions(life.job_id)] == [
        (1, True),
        (2, False),
    ]
    # When Lambda retries from the failed record and EventBridge takes them now
    events_bus.client.meta.events.unregister("before-send.eventbridge.PutEvents", unique_id="refuse")
    retry = {"Records": [r for r in event["Records"] if r["dynamodb"]["SequenceNumber"] in sequence[1:]]}
    assert _run(JobEventsProcessor(JobEventsStore(), events_bus), retry) == {"batchItemFailures": []}
    # Then every event is published once, in order, and the job is counted once
    assert [t for t, _ in _published(bus, life.job_id)] == LIFE[:4]
    assert _counts(WF) == {"pending": 1, "claimed": 0, "done": 0, "failed": 0, "cancelled": 0}


def test_a_put_events_failure_on_the_first_record_is_a_function_error_counted_for_this_consumer(
    tables: dict[str, str],
    bus: EventBuses,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given EventBridge answering 500 to every PutEvents (botocore retries, then gives up)
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    life = JobLife(tables["JOBS_TABLE"], WF)
    life.create()
    event, _ = _batch(tables)
    events_bus = JobEventsBus()
    faults = FaultInjector(rate=1.0, kinds=[SERVER_ERROR], operations={"PutEvents"})
    # When the batch is handled
    with faults.attached(events_bus.client), pytest.raises(Exception, match="first record of a batch of 1"):
        _run(JobEventsProcessor(JobEventsStore(), events_bus), event)
    # Then nothing was published, and RecordsFailed was emitted with this consumer's dimension
    assert faults.faults[SERVER_ERROR] == 6  # botocore retried it (max_attempts 5: retries, in botocore)
    assert bus.events(job_id=life.job_id) == []
    (emf,) = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"RecordsFailed"' in line]
    assert emf["RecordsFailed"] == [1.0]
    assert (emf["consumer"], emf["service"]) == ("job-events", "jobtriggers")
    assert sorted(emf["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0]) == ["consumer", "service"]


def test_a_refused_entry_is_a_publish_failure_naming_the_event() -> None:
    events_bus = JobEventsBus(bus_name="no-such-bus-needed")
    hook, _ = _refuse_put_events(after=0)
    events_bus.client.meta.events.register("before-send.eventbridge.PutEvents", hook, unique_id="refuse")
    from jobtriggers.models.job_events import JobEvent

    event = JobEvent(
        event_id="j:1:0", type="job.created", job_id="j", version=1, workflow_id="w", status="pending",
        occurred_at="2024-05-01T10:00:00.000Z", by="service",
    )  # fmt: skip
    with pytest.raises(PublishFailed, match=r"refused 1 of 1 events .*j:1:0.*InternalFailure"):
        events_bus.publish([event])


def test_a_mark_published_failure_does_not_duplicate_on_the_next_delivery(
    tables: dict[str, str], bus: EventBuses
) -> None:
    # Given two transitions, and the store failing every UpdateItem (the `published` mark) meanwhile
    life = JobLife(tables["JOBS_TABLE"], WF)
    life.create()
    life.claim("site-a")
    event, sequence = _batch(tables)
    faults = FaultInjector(rate=1.0, kinds=[SERVER_ERROR], operations={"UpdateItem"})
    # When the batch is handled
    with faults.attached(dynamodb()):
        response = _run(_processor(), event)
    # Then the records succeeded anyway (the mark is logged and let go), and each event is out once
    assert response == {"batchItemFailures": []}
    assert faults.faults[SERVER_ERROR] >= 2
    marks = [(t.version, t.published) for t in JobEventsStore().transitions(life.job_id)]
    assert marks == [(1, False), (2, False)]
    # When the next delivery comes (the job's next transition: a batch after the checkpoint)
    life.done()
    later, _ = _batch(tables, after=sequence[-1])
    assert len(later["Records"]) == 1
    assert _run(_processor(), later) == {"batchItemFailures": []}
    # Then only the new event is published: nothing of the unmarked transitions is repeated
    assert [t for t, _ in _published(bus, life.job_id)] == ["job.created", "job.claimed", "job.done"]


def test_a_record_delivered_again_right_after_it_was_done_publishes_nothing(
    tables: dict[str, str], bus: EventBuses
) -> None:
    # Given a transition fully handled (recorded, published, marked)
    life = JobLife(tables["JOBS_TABLE"], WF)
    life.create()
    event, _ = _batch(tables)
    assert _run(_processor(), event) == {"batchItemFailures": []}
    # When Lambda delivers it again at once (its invocation crashed after the mark): no
    # ClientRequestToken, so DynamoDB does not answer the repeat with the first success
    assert _run(_processor(), event) == {"batchItemFailures": []}
    # Then the condition found it published, and it was not published again
    assert [t for t, _ in _published(bus, life.job_id)] == ["job.created"]


def test_a_lost_answer_to_the_transaction_counts_once_and_publishes_on_the_retry(
    tables: dict[str, str], bus: EventBuses
) -> None:
    # Given the store applying every TransactWriteItems and losing each answer (botocore retries
    # the same request: the first applies, the repeats find it recorded; all answers are lost)
    life = JobLife(tables["JOBS_TABLE"], WF)
    life.create()
    event, _ = _batch(tables)
    faults = FaultInjector(rate=1.0, kinds=[LOST_RESPONSE], operations={"TransactWriteItems"})
    with faults.attached(dynamodb()), pytest.raises(Exception, match="first record of a batch of 1"):
        _run(_processor(), event)
    assert bus.events(job_id=life.job_id) == []
    # When Lambda retries the record with the store answering again
    assert _run(_processor(), event) == {"batchItemFailures": []}
    # Then the job was counted once (not once per attempt), and its event published once
    assert _counts(WF)["pending"] == 1
    assert [t for t, _ in _published(bus, life.job_id)] == ["job.created"]


# --------------------------------------------------------------------------- the board's reads


def test_counts_of_several_workflows_are_one_read_and_unknown_ones_are_zero(
    tables: dict[str, str], bus: EventBuses
) -> None:
    # Given jobs of two workflows in several states
    jobs = tables["JOBS_TABLE"]
    for _ in range(3):
        JobLife(jobs, "wf-a").create()
    claimed = JobLife(jobs, "wf-a")
    claimed.create()
    claimed.claim("site-x")
    JobLife(jobs, "wf-b").full_life("site-x", "site-y")
    event, _ = _batch(tables)
    assert _run(_processor(), event) == {"batchItemFailures": []}
    # When the board reads the counts of those workflows and one with no jobs (with a repeat)
    counts = JobEventsStore().workflow_counts(["wf-a", "wf-b", "wf-none", "wf-a"])
    # Then each has its jobs by status
    assert {w: c.model_dump(exclude={"workflow_id"}) for w, c in counts.items()} == {
        "wf-a": {"pending": 3, "claimed": 1, "done": 0, "failed": 0, "cancelled": 0},
        "wf-b": {"pending": 0, "claimed": 0, "done": 1, "failed": 0, "cancelled": 0},
        "wf-none": {"pending": 0, "claimed": 0, "done": 0, "failed": 0, "cancelled": 0},
    }


def test_every_counted_workflow_is_listed_from_the_keys_only_index_and_site_hours_are_not(
    tables: dict[str, str], bus: EventBuses
) -> None:
    # Given jobs of two workflows (one not in any registry: these tables hold none), claims by a site
    jobs = tables["JOBS_TABLE"]
    JobLife(jobs, "wf-gone").create()
    life = JobLife(jobs, "wf-here")
    life.create()
    life.claim("site-x")
    event, _ = _batch(tables)
    assert _run(_processor(), event) == {"batchItemFailures": []}
    # When the board asks which workflows have counts
    store = JobEventsStore()
    # Then both are listed, sorted, and the site-hour items (which carry no `kind`) are not
    assert store.counted_workflow_ids() == ["wf-gone", "wf-here"]
    assert store.site_claims(["site-x"], [life.claim_hours[0][1]])[0].claims == 1
    # And a later count update keeps one index entry per workflow
    life.done()
    event, _ = _batch(tables, after=_batch(tables)[1][-2])
    assert _run(_processor(), event) == {"batchItemFailures": []}
    assert store.counted_workflow_ids() == ["wf-gone", "wf-here"]
    assert _counts("wf-here")["done"] == 1


def test_what_each_site_holds_is_counted_as_its_jobs_move(tables: dict[str, str], bus: EventBuses) -> None:
    # Given three jobs claimed by x, one of them taken over by y, one done, one heartbeating
    jobs = tables["JOBS_TABLE"]
    lives = [JobLife(jobs, "wf-a") for _ in range(3)]
    for life in lives:
        life.create()
        life.claim("site-x")
    lives[0].takeover("site-y")
    lives[1].done()
    lives[2].heartbeat()  # not a transition: counts nothing
    event, _ = _batch(tables)
    assert _run(_processor(), event) == {"batchItemFailures": []}
    # Then x holds one, y one, and a site that never claimed none
    assert JobEventsStore().site_holdings(["site-x", "site-y", "site-z"]) == {
        "site-x": 1,
        "site-y": 1,
        "site-z": 0,
    }


def test_many_counts_are_read_in_batches_of_a_hundred(tables: dict[str, str], bus: EventBuses) -> None:
    # Given 150 workflows with a job each
    jobs = tables["JOBS_TABLE"]
    names = [f"wf-{i:03d}" for i in range(150)]
    for name in names:
        JobLife(jobs, name).create()
    event, _ = _batch(tables)
    for start in range(0, len(event["Records"]), 100):  # Lambda's BatchSize
        batch = {"Records": event["Records"][start : start + 100]}
        assert _run(_processor(), batch) == {"batchItemFailures": []}
    # Then all 150 are read back (BatchGetItem takes 100 keys a call)
    counts = JobEventsStore().workflow_counts(names)
    assert [counts[n].pending for n in names] == [1] * 150


def test_the_job_events_of_another_job_are_not_its_own(tables: dict[str, str], bus: EventBuses) -> None:
    jobs = tables["JOBS_TABLE"]
    one, other = JobLife(jobs, WF), JobLife(jobs, WF)
    one.create()
    other.create()
    other.claim("site-a")
    event, _ = _batch(tables)
    assert _run(_processor(), event) == {"batchItemFailures": []}
    assert [e.event_id for e in JobEventsStore().events(one.job_id)] == [f"{one.job_id}:1:0"]
    assert [e.type for e in JobEventsStore().events(other.job_id)] == ["job.created", "job.claimed"]
    assert JobEventsStore().events("no-such-job") == []
