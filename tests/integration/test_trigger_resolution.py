"""TriggerEngine against the moto server over HTTP: conditional puts, backfill, exactly-once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from jobtriggers.dal.assignments import AssignmentRepository
from jobtriggers.dal.dynamo import dynamodb, to_item
from jobtriggers.dal.jobs import JobRepository
from jobtriggers.dal.registry import RegistryRepository
from jobtriggers.logic.triggering import TriggerEngine
from jobtriggers.models import ObjectTypeAssignment, Trigger, job_id_for
from tests.stream_records import stream_records


def _register_object(tables: dict[str, str], object_id: str) -> None:
    dynamodb().put_item(
        TableName=tables["OBJECTS_TABLE"], Item=to_item({"pk": f"object#{object_id}", "id": object_id})
    )


def _resolver() -> TriggerEngine:
    return TriggerEngine(RegistryRepository(), JobRepository())


def test_metagenome_raw_reads_tag_makes_one_metag_job(seeded_tables: dict[str, str]) -> None:
    # Given an object tagged with a type that seed/ links to metag-1.0.0
    _register_object(seeded_tables, "obj-1")
    AssignmentRepository().apply("obj-1", ["metagenome_raw_paired_end_reads"], [], by="site-a")
    records = stream_records(seeded_tables["OBJECT_TYPES_TABLE"])
    # When the stream records are resolved twice (a redelivered batch)
    resolver = _resolver()
    first = [resolver.handle_stream_record(r) for r in records]
    second = [resolver.handle_stream_record(r) for r in records]
    # Then the first delivery made exactly one job and the second none
    assert [j for r in first for j in r.created] == [job_id_for("metag-1.0.0", "obj-1")]
    assert [j for r in second for j in r.created] == []
    assert [j for r in second for j in r.already_present] == [job_id_for("metag-1.0.0", "obj-1")]
    job = JobRepository().get(job_id_for("metag-1.0.0", "obj-1"))
    assert job.status == "pending"
    assert job.config.object_id == "obj-1"
    assert job.workflow.id == "metag-1.0.0"
    assert job.trigger_id == "metagenome_raw_paired_end_reads--metag-1.0.0"


def test_two_types_triggering_one_workflow_make_one_job(tables: dict[str, str]) -> None:
    # Given two triggers from different types to the same workflow
    registry = RegistryRepository()
    for t in ("type-a", "type-b"):
        registry.put(
            "trigger",
            Trigger(id=f"{t}--wf", object_type_id=t, workflow_id="wf", created_at="2024-01-01T00:00:00Z"),
        )
    resolver = _resolver()
    # When one object gets both types
    a = resolver.resolve(ObjectTypeAssignment(object_id="o", object_type_id="type-a", assigned_at="x"))
    b = resolver.resolve(ObjectTypeAssignment(object_id="o", object_type_id="type-b", assigned_at="x"))
    # Then one job exists
    assert len(a.created) + len(b.created) == 1
    assert len(a.already_present) + len(b.already_present) == 1


def test_eight_threads_tagging_fifty_objects_make_each_job_once(seeded_tables: dict[str, str]) -> None:
    # Given 50 objects, each resolved by 8 threads at once
    resolver = _resolver()
    assignments = [
        ObjectTypeAssignment(
            object_id=f"obj-{i}", object_type_id="read_qc_analysis_activity_set", assigned_at="x"
        )
        for i in range(50)
    ]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(resolver.resolve, [a for a in assignments for _ in range(8)]))
    # Then each (workflow, object) was created exactly once: 2 workflows x 50 objects
    created = [j for r in results for j in r.created]
    assert len(created) == 100
    assert len(set(created)) == 100
    items, _ = JobRepository().list_page(limit=1000)
    assert len(items) == 100


def test_backfill_creates_jobs_for_objects_tagged_before_the_trigger(tables: dict[str, str]) -> None:
    # Given objects tagged with a type no trigger names yet
    for i in range(7):
        _register_object(tables, f"o{i}")
        AssignmentRepository().apply(f"o{i}", ["late-type"], [], by="s")
    resolver = _resolver()
    trigger = Trigger(
        id="late-type--wf2", object_type_id="late-type", workflow_id="wf2", created_at="2024-01-01T00:00:00Z"
    )
    # When the trigger is added and backfilled twice
    RegistryRepository().put("trigger", trigger)
    first = resolver.backfill(trigger, AssignmentRepository(), page_size=3)
    again = resolver.backfill(trigger, AssignmentRepository(), page_size=3)
    # Then every object got its job once
    assert sorted(first.created) == sorted(job_id_for("wf2", f"o{i}") for i in range(7))
    assert again.created == []
    assert len(again.already_present) == 7
