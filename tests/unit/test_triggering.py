"""TriggerEngine rules with in-memory fakes (no network): what creates a job and what does not."""

from __future__ import annotations

from typing import Any

import pytest

from jobtriggers.logic.triggering import Resolution, TriggerEngine, assignment_from_stream_record
from jobtriggers.models import ObjectTypeAssignment, Trigger, job_id_for, job_key, job_key_from_id
from tests.fakes import FakeJobs


class FakeRegistry:
    def __init__(self, triggers: list[Trigger]) -> None:
        self.triggers = triggers
        self.queries: list[str] = []

    def triggers_for_object_type(self, object_type_id: str) -> list[Trigger]:
        self.queries.append(object_type_id)
        return [t for t in self.triggers if t.object_type_id == object_type_id]


class FakeObjects:
    def __init__(
        self, by_type: dict[str, list[str]], assignments: dict[str, ObjectTypeAssignment] | None = None
    ) -> None:
        self.by_type = by_type
        self.assignments = assignments or {}

    def assignments_of(self, object_type_id: str, object_ids: list[str]) -> dict[str, ObjectTypeAssignment]:
        return {
            o: a
            for o, a in self.assignments.items()
            if o in object_ids and a.object_type_id == object_type_id
        }

    def objects_with_type(
        self, object_type_id: str, limit: int, page_token: str | None
    ) -> tuple[list[str], str | None]:
        ids = self.by_type.get(object_type_id, [])
        start = int(page_token or 0)
        nxt = start + limit
        return ids[start:nxt], (str(nxt) if nxt < len(ids) else None)


def _trigger(t: str, w: str) -> Trigger:
    return Trigger(id=f"{t}--{w}", object_type_id=t, workflow_id=w, created_at="2024-01-01T00:00:00Z")


def _record(event: str, object_id: str = "o1", type_id: str = "t1") -> dict[str, Any]:
    image = {
        "object_id": {"S": object_id},
        "object_type_id": {"S": type_id},
        "assigned_at": {"S": "2024-01-01T00:00:00.000Z"},
    }
    body: dict[str, Any] = {"Keys": {"object_id": {"S": object_id}, "object_type_id": {"S": type_id}}}
    if event != "REMOVE":
        body["NewImage"] = image
    if event != "INSERT":
        body["OldImage"] = image
    return {"eventName": event, "eventID": "1", "dynamodb": body}


@pytest.fixture
def resolver() -> tuple[TriggerEngine, FakeJobs]:
    jobs = FakeJobs()
    return TriggerEngine(
        FakeRegistry([_trigger("t1", "w1"), _trigger("t1", "w2"), _trigger("t2", "w1")]), jobs
    ), jobs


def test_insert_makes_one_job_per_triggered_workflow(resolver: tuple[TriggerEngine, FakeJobs]) -> None:
    # Given a type that triggers two workflows
    r, jobs = resolver
    # When its INSERT record is handled
    out = r.handle_stream_record(_record("INSERT"))
    # Then one pending job per workflow exists, with the NMDC shape's fields
    assert sorted(out.created) == sorted([job_id_for("w1", "o1"), job_id_for("w2", "o1")])
    job = jobs.get(job_id_for("w1", "o1"))
    # and the lineage of a plain tag: no parent, its own root, its object its only input
    assert job.status == "pending" and job.config.model_dump() == {
        "object_id": "o1",
        "parent_job_id": None,
        "root_object_id": "o1",
        "inputs": [
            {"object_id": "o1", "types": ["t1"], "output_name": None, "workflow_id": None, "job_id": None}
        ],
    }
    assert job.trigger_id == "t1--w1" and job.tagged_at == "2024-01-01T00:00:00.000Z"
    # And each was created by one transition: version 1, the event job.created, by the service
    assert job.version == 1 and jobs.events(job.id) == ["job.created"]
    [created] = jobs.transitions[job.id]
    assert created.by == "service" and created.details == {"trigger_id": "t1--w1"}


@pytest.mark.parametrize("event", ["MODIFY", "REMOVE"])
def test_modify_and_remove_create_nothing(resolver: tuple[TriggerEngine, FakeJobs], event: str) -> None:
    r, jobs = resolver
    assert r.handle_stream_record(_record(event)) == Resolution()
    assert jobs.jobs == {}


def test_redelivery_and_second_type_make_nothing_new(resolver: tuple[TriggerEngine, FakeJobs]) -> None:
    r, jobs = resolver
    r.handle_stream_record(_record("INSERT"))
    # When the same record comes again, and a second type triggering w1 arrives
    again = r.handle_stream_record(_record("INSERT"))
    other = r.handle_stream_record(_record("INSERT", type_id="t2"))
    # Then nothing new was created; both were counted as already present
    assert again.created == [] and len(again.already_present) == 2
    assert other.created == [] and other.already_present == [job_id_for("w1", "o1")]
    assert len(jobs.jobs) == 2


def test_untriggered_type_makes_no_job(resolver: tuple[TriggerEngine, FakeJobs]) -> None:
    r, jobs = resolver
    assert r.handle_stream_record(_record("INSERT", type_id="nothing-triggers-this")).created == []
    assert jobs.jobs == {}


def test_insert_without_new_image_is_an_error_not_silence() -> None:
    with pytest.raises(ValueError, match="NEW_AND_OLD_IMAGES"):
        assignment_from_stream_record({"eventName": "INSERT", "dynamodb": {}})


def test_backfill_pages_through_every_tagged_object(resolver: tuple[TriggerEngine, FakeJobs]) -> None:
    r, _jobs = resolver
    objects = FakeObjects({"t1": [f"o{i}" for i in range(11)]})
    seen: list[int] = []
    out = r.backfill(_trigger("t1", "w9"), objects, page_size=4, progress=lambda s, c: seen.append(s))
    assert len(out.created) == 11
    assert seen == [4, 8, 11]
    assert r.backfill(_trigger("t1", "w9"), objects, page_size=4).created == []


@pytest.mark.parametrize(
    ("workflow", "obj"),
    [("metag-1.0.0", "nmdc:dobj-11-abc"), ("w", "sha256:0f/../#x?y"), ("a", "c#d"), ("ü", "é")],
)
def test_job_id_is_url_safe_deterministic_and_reversible(workflow: str, obj: str) -> None:
    job_id = job_id_for(workflow, obj)
    assert job_id == job_id_for(workflow, obj)
    assert all(c.isalnum() or c in "-_" for c in job_id)
    assert job_key_from_id(job_id) == job_key(workflow, obj)


@pytest.mark.parametrize("bad", ["", "not base64!", "Zm9v", "a" * 800, "%2F"])
def test_foreign_job_ids_decode_to_nothing(bad: str) -> None:
    assert job_key_from_id(bad) is None


def test_workflow_ids_cannot_hold_the_key_separator() -> None:
    # ("a#b", "c") and ("a", "b#c") would share the key "a#b#c": the registry refuses the first
    with pytest.raises(ValueError, match="workflow_id"):
        _trigger("t", "a#b")
