"""Reconcile (the CLI's and the scheduled ReconcilerFunction's loop) with in-memory fakes."""

from __future__ import annotations

from typing import Any

import pytest

from jobtriggers.errors import NotFoundError
from jobtriggers.logic.reconcile import reconcile_everything, reconcile_triggers, select_triggers
from jobtriggers.logic.triggering import TriggerEngine
from jobtriggers.models import Job, JobEventType, Transition, Trigger
from tests.fakes import FakeJobs
from tests.unit.test_triggering import FakeObjects, FakeRegistry, _trigger


class FakeTriggerSource(FakeRegistry):
    def list_all(self, kind: str) -> list[Any]:
        assert kind == "trigger"
        return list(self.triggers)


TRIGGERS = [_trigger("t1", "wf-a"), _trigger("t1", "wf-b"), _trigger("t2", "wf-a")]


def test_select_triggers_all_or_the_named_ones_and_names_unknown_ones() -> None:
    source = FakeTriggerSource(TRIGGERS)
    assert select_triggers(source) == TRIGGERS
    assert [t.id for t in select_triggers(source, ["t2--wf-a"])] == ["t2--wf-a"]
    with pytest.raises(NotFoundError, match="nope, nope2"):
        select_triggers(source, ["t1--wf-a", "nope2", "nope"])


def test_reconcile_creates_only_what_is_missing_and_a_second_run_nothing() -> None:
    # Given objects tagged t1 and t2, and one of their jobs already made by the stream
    source = FakeTriggerSource(TRIGGERS)
    jobs = FakeJobs()
    resolver = TriggerEngine(source, jobs)
    objects = FakeObjects({"t1": ["o1", "o2", "o3"], "t2": ["o4"]})
    at = "2024-01-01T00:00:00.000Z"
    jobs.create(Job.new("wf-a", "o1", at), Transition(events=[JobEventType.created], at=at, by="service"))
    # When reconcile runs over every trigger, twice
    first = reconcile_everything(source, resolver, objects)
    again = reconcile_everything(source, resolver, objects)
    # Then the first run made the 6 missing jobs and counted the one present; the second made none
    assert first == {"triggers": 3, "jobs_created": 6, "already_present": 1}
    assert again == {"triggers": 3, "jobs_created": 0, "already_present": 7}
    assert len(jobs.jobs) == 7


def test_reconcile_reports_progress_per_trigger() -> None:
    source = FakeTriggerSource(TRIGGERS[:1])
    seen: list[tuple[str, int, int]] = []

    def per_trigger(t: Trigger) -> Any:
        return lambda n, created: seen.append((t.id, n, created))

    rows = reconcile_triggers(
        source.triggers, TriggerEngine(source, FakeJobs()), FakeObjects({"t1": ["a", "b"]}), per_trigger
    )
    assert [(r.trigger_id, r.created, r.already_present) for r in rows] == [("t1--wf-a", 2, 0)]
    assert seen == [("t1--wf-a", 2, 2)]
