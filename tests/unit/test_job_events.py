"""Job transitions -> events and count deltas (logic/job_events.py), from synthetic stream images.

Each case is a write the service makes under the transition contract (DESIGN-phase3.md): the job
item before and after, with `version` raised by one and `transition` set. The processor's store and
bus are in-memory fakes here; tests/integration/test_job_events_store.py runs it against moto.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from jobtriggers.dal.dynamo import to_item
from jobtriggers.logic.job_events import (
    ERROR_MESSAGE_MAX_CHARS,
    JobEventsProcessor,
    MalformedTransition,
    hour_of,
    transition_from_images,
    transition_from_stream_record,
)
from jobtriggers.models.job_events import JOB_EVENT_TYPES, JobEvent, JobTransition, Recorded

WF = "metag-1.0.0"
JOB = "bWV0YWctMS4wLjAjb2JqLTE"
AT = "2024-05-01T10:59:58.123Z"


def job(version: int, status: str, events: list[str] | None = None, **fields: Any) -> dict[str, Any]:
    """A job item as the service writes it (the fields the events read), at `version`."""
    item: dict[str, Any] = {
        "job_key": f"{WF}#obj-1",
        "id": JOB,
        "workflow_id": WF,
        "object_id": "obj-1",
        "config": {"object_id": "obj-1"},
        "status": status,
        "attempts": 0,
        "max_attempts": 3,
        "version": version,
    }
    if events is not None:
        item["transition"] = {"events": events, "at": AT, "by": "service"}
    item.update(fields)
    return item


def deltas(transition: JobTransition | None) -> set[tuple[str, str, int]]:
    assert transition is not None
    return {(d.scope, d.attribute, d.delta) for d in transition.deltas}


def types(transition: JobTransition | None) -> list[str]:
    assert transition is not None
    return [e.type for e in transition.events]


HOUR = "2024-05-01T10"


# --------------------------------------------------------------------------- every event type


def test_created_counts_the_new_job_in_its_status() -> None:
    t = transition_from_images(job(1, "pending", ["job.created"]), None)
    assert types(t) == ["job.created"]
    assert deltas(t) == {(f"workflow#{WF}", "pending", 1)}
    (event,) = t.events  # type: ignore[union-attr]
    assert event.event_id == f"{JOB}:1:0"
    assert (event.job_id, event.workflow_id, event.object_id, event.status) == (JOB, WF, "obj-1", "pending")
    assert (event.previous_status, event.occurred_at, event.by, event.version) == (None, AT, "service", 1)


def test_claimed_moves_the_count_and_counts_a_claim_for_the_site_in_that_hour() -> None:
    old = job(1, "pending")
    new = job(2, "claimed", ["job.claimed"], site_id="site-a", operation_id="op-1", attempts=1)
    new["transition"]["by"] = "site-a"
    t = transition_from_images(new, old)
    assert types(t) == ["job.claimed"]
    assert deltas(t) == {
        (f"workflow#{WF}", "pending", -1),
        (f"workflow#{WF}", "claimed", 1),
        (f"site#site-a#{HOUR}", "claims", 1),
        ("held#site-a", "jobs", 1),
    }
    (event,) = t.events  # type: ignore[union-attr]
    assert (event.site_id, event.operation_id, event.attempt, event.max_attempts, event.by) == (
        "site-a",
        "op-1",
        1,
        3,
        "site-a",
    )
    assert event.previous_status == "pending"


@pytest.mark.parametrize(
    ("event_type", "before", "after", "extra"),
    [
        # the reaper: the holder stopped renewing, the attempt counts as failed
        (
            "job.lease_expired",
            "claimed",
            "pending",
            {"last_error": {"code": "lease_expired", "message": "the lease ended"}},
        ),
        ("job.released", "claimed", "pending", {}),
        ("job.attempt_failed", "claimed", "pending", {"last_error": {"code": "exit_1", "message": "boom"}}),
        ("job.done", "claimed", "done", {"result": {"outputs": ["x"]}}),
        ("job.failed", "claimed", "failed", {"last_error": {"code": "exit_1", "message": "boom"}}),
        ("job.cancelled", "pending", "cancelled", {}),
        ("job.cancelled", "claimed", "cancelled", {}),
        ("job.rerun", "failed", "pending", {"run": 2}),
        ("job.rerun", "done", "pending", {"run": 2}),
    ],
)
def test_a_status_change_moves_one_job_from_the_old_status_to_the_new(
    event_type: str, before: str, after: str, extra: dict[str, Any]
) -> None:
    old = job(4, before, site_id="site-a", attempts=1)
    new = job(5, after, [event_type], site_id="site-a", attempts=1, **extra)
    t = transition_from_images(new, old)
    assert types(t) == [event_type]
    # (and a job that leaves `claimed` is one less that its site holds)
    released = {("held#site-a", "jobs", -1)} if before == "claimed" else set()
    assert deltas(t) == {(f"workflow#{WF}", before, -1), (f"workflow#{WF}", after, 1), *released}
    (event,) = t.events  # type: ignore[union-attr]
    assert (event.event_id, event.status, event.previous_status) == (f"{JOB}:5:0", after, before)
    assert event.last_error == extra.get("last_error")
    assert event.run == extra.get("run")


def test_cancel_requested_keeps_the_job_claimed_and_moves_no_count() -> None:
    old = job(2, "claimed", site_id="site-a", attempts=1)
    new = job(3, "claimed", ["job.cancel_requested"], site_id="site-a", attempts=1, cancel_requested=True)
    new["transition"]["by"] = "operator:alice"
    t = transition_from_images(new, old)
    assert types(t) == ["job.cancel_requested"]
    assert deltas(t) == set()
    assert t.events[0].cancel_requested is True and t.events[0].by == "operator:alice"  # type: ignore[union-attr]


def test_a_takeover_is_two_events_in_one_transition_and_one_claim_for_the_new_holder() -> None:
    # Given a claim that took over a job whose lease had ended
    old = job(2, "claimed", site_id="site-a", operation_id="op-1", attempts=1)
    new = job(
        3,
        "claimed",
        ["job.lease_expired", "job.claimed"],
        site_id="site-b",
        operation_id="op-2",
        attempts=2,
        last_error={"code": "lease_expired", "message": "site-a stopped renewing"},
    )
    t = transition_from_images(new, old)
    # Then its events are the expiry and the claim, in order, with ids n = 0 and 1
    assert types(t) == ["job.lease_expired", "job.claimed"]
    assert [e.event_id for e in t.events] == [f"{JOB}:3:0", f"{JOB}:3:1"]  # type: ignore[union-attr]
    # And each names the old holder and the new
    assert {(e.previous_site_id, e.site_id) for e in t.events} == {("site-a", "site-b")}  # type: ignore[union-attr]
    # And the job is claimed before and after (no status count moves); site-b made a claim, and
    # holds the job site-a held
    assert deltas(t) == {
        (f"site#site-b#{HOUR}", "claims", 1),
        ("held#site-a", "jobs", -1),
        ("held#site-b", "jobs", 1),
    }


def test_what_a_site_holds_follows_its_jobs_in_and_out_of_claimed() -> None:
    # A life: claimed by a, cancel asked (a still holds it), a stops (cancelled); rerun; claimed by b
    images = [
        job(1, "pending", ["job.created"]),
        job(2, "claimed", ["job.claimed"], site_id="site-a", attempts=1),
        job(3, "claimed", ["job.cancel_requested"], site_id="site-a", attempts=1, cancel_requested=True),
        job(4, "cancelled", ["job.cancelled"], site_id="site-a", attempts=1),
        job(5, "pending", ["job.rerun"], site_id="site-a", run=2),
        job(6, "claimed", ["job.claimed"], site_id="site-b", attempts=1, run=2),
    ]
    held: dict[str, int] = {}
    for old, new in zip([None, *images], images, strict=False):
        for d in transition_from_images(new, old).deltas:  # type: ignore[union-attr]
            if d.scope.startswith("held#"):
                held[d.scope] = held.get(d.scope, 0) + d.delta
    assert held == {"held#site-a": 0, "held#site-b": 1}
    # A job made claimed (a site's own POST /jobs that claims at once) counts for its holder
    t = transition_from_images(job(1, "claimed", ["job.created"], site_id="site-c"), None)
    assert ("held#site-c", "jobs", 1) in deltas(t)


def test_every_event_type_of_the_contract_is_covered_here() -> None:
    covered = {
        "job.created",
        "job.claimed",
        "job.lease_expired",
        "job.released",
        "job.attempt_failed",
        "job.done",
        "job.failed",
        "job.cancel_requested",
        "job.cancelled",
        "job.rerun",
    }
    assert covered == set(JOB_EVENT_TYPES)


# --------------------------------------------------------------------------- writes that are no transition


def test_a_heartbeat_renews_the_lease_without_a_new_version_and_makes_nothing() -> None:
    old = job(2, "claimed", ["job.claimed"], site_id="site-a", lease_expires_at="2024-05-01T11:00:00.000Z")
    new = dict(old, lease_expires_at="2024-05-01T11:20:00.000Z")
    assert transition_from_images(new, old) is None


def test_a_remove_and_a_write_without_version_make_nothing() -> None:
    image = to_item(job(3, "done", ["job.done"]))
    remove = {"eventName": "REMOVE", "dynamodb": {"OldImage": image, "Keys": {}}}
    assert transition_from_stream_record(remove) is None
    legacy = {k: v for k, v in job(1, "pending").items() if k != "version"}
    assert transition_from_images(legacy, None) is None


def test_a_new_version_without_a_usable_transition_is_malformed() -> None:
    with pytest.raises(MalformedTransition, match="has no transition"):
        transition_from_images(job(2, "claimed"), job(1, "pending"))
    bad = job(2, "claimed", ["claimed"])
    with pytest.raises(MalformedTransition, match=r"job\.\* types"):
        transition_from_images(bad, job(1, "pending"))
    no_zone = job(2, "claimed", ["job.claimed"])
    no_zone["transition"]["at"] = "2024-05-01T10:00:00"
    with pytest.raises(MalformedTransition, match="zone"):
        transition_from_images(no_zone, job(1, "pending"))


def test_a_stream_record_is_read_from_dynamodb_json_images() -> None:
    record = {
        "eventName": "MODIFY",
        "dynamodb": {
            "OldImage": to_item(job(1, "pending")),
            "NewImage": to_item(job(2, "claimed", ["job.claimed"], site_id="site-a", attempts=1)),
        },
    }
    t = transition_from_stream_record(record)
    assert t is not None and (t.version, t.status, t.previous_status) == (2, "claimed", "pending")
    assert types(t) == ["job.claimed"]


def test_a_long_error_message_is_cut_so_an_event_stays_small() -> None:
    new = job(
        2, "failed", ["job.failed"], last_error={"code": "x", "message": "e" * 50_000, "details": [1] * 999}
    )
    t = transition_from_images(new, job(1, "claimed"))
    error = t.events[0].last_error  # type: ignore[union-attr]
    assert error is not None and set(error) == {"code", "message"}
    assert len(error["message"]) == ERROR_MESSAGE_MAX_CHARS and error["message"].endswith("…")


def test_the_hour_of_a_claim_is_utc() -> None:
    assert hour_of("2024-05-01T23:30:00.000Z") == "2024-05-01T23"
    assert hour_of("2024-05-02T01:30:00+02:00") == "2024-05-01T23"


# --------------------------------------------------------------------------- the processor, on fakes


class FakeStore:
    def __init__(self, fail_mark: bool = False) -> None:
        self.items: dict[tuple[str, int], dict[str, Any]] = {}
        self.counts: dict[tuple[str, str], int] = {}
        self.fail_mark = fail_mark

    def record(self, transition: JobTransition) -> Recorded:
        key = (transition.job_id, transition.version)
        if key in self.items:
            return Recorded(applied=False, published=bool(self.items[key].get("published")))
        self.items[key] = {}
        for d in transition.deltas:
            self.counts[(d.scope, d.attribute)] = self.counts.get((d.scope, d.attribute), 0) + d.delta
        return Recorded(applied=True)

    def mark_published(self, transition: JobTransition) -> None:
        if self.fail_mark:
            raise RuntimeError("the store is busy")
        self.items[(transition.job_id, transition.version)]["published"] = True


class FakeBus:
    def __init__(self, fail: bool = False) -> None:
        self.events: list[JobEvent] = []
        self.fail = fail

    def publish(self, events: Sequence[JobEvent]) -> None:
        if self.fail:
            raise RuntimeError("EventBridge refused 1 of 1 events")
        self.events.extend(events)


def _record(new: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
    ddb: dict[str, Any] = {"NewImage": to_item(new), "SequenceNumber": "1"}
    if old is not None:
        ddb["OldImage"] = to_item(old)
    return {"eventName": "MODIFY" if old else "INSERT", "dynamodb": ddb}


CLAIM = _record(job(2, "claimed", ["job.claimed"], site_id="site-a", attempts=1), job(1, "pending"))


def test_a_record_seen_twice_is_counted_once_and_published_once() -> None:
    store, bus = FakeStore(), FakeBus()
    processor = JobEventsProcessor(store, bus)
    first = processor.handle_stream_record(CLAIM)
    again = processor.handle_stream_record(CLAIM)
    assert (first.applied, first.published) == (True, 1)
    assert (again.applied, again.published) == (False, 0)
    assert [e.event_id for e in bus.events] == [f"{JOB}:2:0"]
    assert store.counts[(f"workflow#{WF}", "claimed")] == 1


def test_a_publish_failure_fails_the_record_and_leaves_it_unmarked_for_the_retry() -> None:
    store = FakeStore()
    with pytest.raises(RuntimeError, match="refused"):
        JobEventsProcessor(store, FakeBus(fail=True)).handle_stream_record(CLAIM)
    assert store.items[(JOB, 2)] == {}
    # The retry finds it recorded (not counted again) and not published: it publishes
    bus = FakeBus()
    retry = JobEventsProcessor(store, bus).handle_stream_record(CLAIM)
    assert (retry.applied, retry.published) == (False, 1)
    assert store.counts[(f"workflow#{WF}", "claimed")] == 1 and len(bus.events) == 1


def test_a_failure_to_mark_published_is_logged_and_the_record_succeeds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = FakeBus()
    outcome = JobEventsProcessor(FakeStore(fail_mark=True), bus).handle_stream_record(CLAIM)
    assert outcome.published == 1 and len(bus.events) == 1
    assert any("could not mark" in r.getMessage() for r in caplog.records)


def test_a_malformed_transition_is_skipped_loudly_rather_than_blocking_the_shard(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, bus = FakeStore(), FakeBus()
    outcome = JobEventsProcessor(store, bus).handle_stream_record(
        _record(job(2, "claimed"), job(1, "pending"))
    )
    assert outcome.skipped == "malformed" and store.items == {} and bus.events == []
    assert any(
        r.levelname == "ERROR" and "without a usable transition" in r.getMessage() for r in caplog.records
    )
