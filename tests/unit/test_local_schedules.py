"""The local runtime's EventBridge schedules: enabled rate rules fire on time, disabled ones never by
themselves, and any can be fired on demand."""

from __future__ import annotations

import time
from typing import Any

import pytest

from jobtriggers.local.schedules import Scheduler, scheduled_event
from jobtriggers.local.template import ScheduleEvent

EVERY_MINUTE = ScheduleEvent("Reaper", "Reap", "rate(1 minute)", enabled=True)
DISABLED = ScheduleEvent("Reconciler", "Reconcile", "rate(6 hours)", enabled=False)
NOON = ScheduleEvent("Report", "Noon", "cron(0 12 * * ? *)", enabled=True, event_input='{"kind": "noon"}')


class Calls:
    def __init__(self, fail: bool = False) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.fail = fail

    def __call__(self, function: str, event: dict[str, Any]) -> Any:
        self.events.append((function, event))
        if self.fail:
            raise RuntimeError("boom")
        return {"ran": function}


def _wait_for(calls: Calls, n: int) -> None:
    deadline = time.monotonic() + 5
    while len(calls.events) < n and time.monotonic() < deadline:
        time.sleep(0.01)


def test_enabled_rate_schedules_fire_every_interval_and_no_others() -> None:
    # Given a clock at 1000 s and three schedules, one of them an enabled rate(1 minute)
    now = [1000.0]
    calls = Calls()
    scheduler = Scheduler([EVERY_MINUTE, DISABLED, NOON], calls, clock=lambda: now[0])
    scheduler.arm()
    # When time passes: 59 s, 60 s, 61 s, 120 s, and six hours
    fired = []
    for t in (1059.0, 1060.0, 1061.0, 1120.0, 1000.0 + 6 * 3600):
        now[0] = t
        fired.append([s.name for s in scheduler.tick()])
    _wait_for(calls, 3)
    # Then the minute rule fired one interval after the start, and again each interval after that
    # (once for a late tick, not once per missed minute); the disabled and cron rules never did
    assert fired == [[], ["Reap"], [], ["Reap"], ["Reap"]]
    assert [f for f, _ in calls.events] == ["Reaper"] * 3
    assert scheduler.stats()["Reaper.Reap"]["runs"] == 3
    assert scheduler.stats()["Reconciler.Reconcile"] == {
        "expression": "rate(6 hours)",
        "enabled": False,
        "runs": 0,
        "failures": 0,
    }


def test_any_schedule_can_be_fired_on_demand_and_returns_what_the_function_returned() -> None:
    calls = Calls()
    scheduler = Scheduler([EVERY_MINUTE, DISABLED, NOON], calls, region="eu-west-2", account="111122223333")
    # When the disabled one and the cron one are fired now
    assert scheduler.run("Reconciler") == {"ran": "Reconciler"}
    assert scheduler.run("Report", "Noon") == {"ran": "Report"}
    # Then the functions got EventBridge's Scheduled Event, or the rule's Input
    (_, event), (_, noon) = calls.events
    assert event["detail-type"] == "Scheduled Event" and event["source"] == "aws.events"
    assert (event["region"], event["account"], event["detail"]) == ("eu-west-2", "111122223333", {})
    assert event["resources"] == [
        "arn:aws:events:eu-west-2:111122223333:rule/jobtriggers-local-ReconcilerReconcile"
    ]
    assert noon == {"kind": "noon"}
    # And a function with no schedule is a clear error
    with pytest.raises(KeyError, match="Nobody has no schedule event"):
        scheduler.run("Nobody")


def test_a_failing_scheduled_run_is_counted_and_raised_only_on_demand() -> None:
    calls = Calls(fail=True)
    now = [0.0]
    scheduler = Scheduler([EVERY_MINUTE], calls, clock=lambda: now[0])
    scheduler.arm()
    now[0] = 60.0
    scheduler.tick()
    _wait_for(calls, 1)
    with pytest.raises(RuntimeError, match="boom"):
        scheduler.run("Reaper")
    deadline = time.monotonic() + 5
    while scheduler.stats()["Reaper.Reap"]["failures"] < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert scheduler.stats()["Reaper.Reap"]["failures"] == 2


def test_the_scheduler_thread_fires_a_due_schedule_by_itself() -> None:
    # Given a started scheduler whose clock is already past the first run
    now = [0.0]
    calls = Calls()
    scheduler = Scheduler([EVERY_MINUTE], calls, clock=lambda: now[0])
    scheduler.start()
    try:
        now[0] = 61.0
        # Then its thread fires the rule without being asked
        _wait_for(calls, 1)
    finally:
        scheduler.stop()
    assert [f for f, _ in calls.events] == ["Reaper"]


def test_the_scheduled_event_has_eventbridges_shape() -> None:
    event = scheduled_event(EVERY_MINUTE, "us-east-1", "123456789012", "rule-x", now=0.0)
    assert event["time"] == "1970-01-01T00:00:00Z"
    assert set(event) == {
        "version",
        "id",
        "detail-type",
        "source",
        "account",
        "time",
        "region",
        "resources",
        "detail",
    }
