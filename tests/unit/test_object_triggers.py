"""`GET /objects/{id}/triggers` without a network: each case NMDC's troubleshooting guide checks by
hand ("scheduler not creating jobs"), answered for one object (ObjectTriggersReader over fakes)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from jobtriggers.errors import NotFoundError
from jobtriggers.logic.object_triggers import ObjectTriggersReader
from jobtriggers.models import (
    DrsObject,
    Job,
    JobStatus,
    ObjectTypeAssignment,
    Trigger,
    Workflow,
    job_id_for,
    trigger_id,
)

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def trigger(type_id: str, workflow_id: str) -> Trigger:
    return Trigger(
        id=trigger_id(type_id, workflow_id), object_type_id=type_id, workflow_id=workflow_id, created_at=T0
    )


class World:
    """The object, its assignments, the registry and the jobs, with the index as lagging as asked."""

    def __init__(self) -> None:
        self.object = DrsObject(
            id="obj-1",
            self_uri="drs://h/obj-1",
            size=1,
            checksums=[{"type": "md5", "checksum": "a"}],
            created_time=T0,
            access_methods=[{"access_url": {"url": "https://x"}}],
            was_generated_by="parent-job",
        )
        self.types = ["seq", "files", "gone-type"]
        self.known_types = {"seq", "files"}
        self.triggers = [trigger("seq", "readqc"), trigger("seq", "metag"), trigger("seq", "removed-wf")]
        self.workflow_ids = ["readqc", "metag", "old-wf"]
        self.jobs: dict[str, Job] = {}
        self.unindexed: set[str] = set()

    # ports
    def get(self, object_id: str) -> DrsObject:
        if object_id != self.object.id:
            raise NotFoundError(f"object '{object_id}' does not exist")
        return self.object

    def types_of(self, object_id: str) -> list[ObjectTypeAssignment]:
        return [
            ObjectTypeAssignment(
                object_id=object_id, object_type_id=t, assigned_at="2025-01-01T00:00:00.000Z"
            )
            for t in self.types
        ]

    def all_triggers(self) -> list[Trigger]:
        return self.triggers

    def workflows(self) -> list[Workflow]:
        return [Workflow(id=w, name=w, created_at=T0) for w in self.workflow_ids]

    def existing_ids(self, kind: str, ids: list[str]) -> set[str]:
        return {i for i in ids if i in self.known_types}

    def find(self, job_id: str, consistent: bool = True) -> Job | None:
        return self.jobs.get(job_id)

    def list_page(self, **criteria: object) -> tuple[list[Job], str | None]:
        return [j for j in self.jobs.values() if j.id not in self.unindexed], None

    def add_job(self, workflow: str, status: JobStatus = JobStatus.pending, **fields: object) -> Job:
        job = Job.new(workflow, "obj-1", "2025-01-01T00:00:01.000Z", trigger_id=trigger_id("seq", workflow))
        job = job.model_copy(update={"status": status, **fields})
        self.jobs[job.id] = job
        return job


@pytest.fixture
def world() -> World:
    return World()


def reader(world: World) -> ObjectTriggersReader:
    return ObjectTriggersReader(world, world, world, world)


def test_each_type_each_trigger_and_its_job_or_why_there_is_none(world: World) -> None:
    done = world.add_job("readqc", JobStatus.done, finished_at="2025-01-01T00:05:00.000Z", outputs=["a", "b"])
    world.add_job("metag", JobStatus.failed, attempts=3, last_error={"code": "exit_1", "message": "oom"})
    world.unindexed.add(done.id)  # made a moment ago: by_object does not show it yet
    report = reader(world).explain("obj-1")
    assert report.object_id == "obj-1" and report.was_generated_by == "parent-job"
    by_type = {t.object_type_id: t for t in report.types}
    assert list(by_type) == ["files", "gone-type", "seq"]
    seq = {e.workflow_id: e for e in by_type["seq"].triggers}
    # a done job (read on its own, though the index lags), a failed one with its error
    assert seq["readqc"].job is not None and seq["readqc"].job.status == JobStatus.done
    assert "is done" in seq["readqc"].explanation and "registering 2 outputs" in seq["readqc"].explanation
    assert seq["metag"].job is not None and "failed after 3 attempts: exit_1: oom" in seq["metag"].explanation
    # a trigger whose workflow left the registry makes no job, and says so
    assert seq["removed-wf"].workflow_missing and seq["removed-wf"].job is None
    assert "not in the registry: it makes no job" in seq["removed-wf"].explanation
    # types that trigger nothing, one of them gone from the registry too
    assert by_type["files"].triggers == [] and "no trigger names object type 'files'" in str(
        by_type["files"].explanation
    )
    assert not by_type["gone-type"].in_registry and "no longer in the registry" in str(
        by_type["gone-type"].explanation
    )
    assert "types that trigger nothing: files, gone-type" in report.summary
    assert "workflows no longer in the registry: removed-wf" in report.summary


def test_a_trigger_without_a_job_points_at_reconcile(world: World) -> None:
    world.triggers = [trigger("seq", "readqc")]
    [entry] = reader(world).explain("obj-1").types[2].triggers
    assert entry.job is None and not entry.workflow_missing
    assert (
        "no job yet" in entry.explanation
        and "jobtriggers reconcile --trigger seq--readqc" in entry.explanation
    )
    assert "no job yet for seq--readqc" in reader(world).explain("obj-1").summary


def test_jobs_no_current_trigger_explains_are_listed_with_the_reason(world: World) -> None:
    world.triggers = []
    world.add_job("old-wf")  # its trigger was removed, its workflow stays
    gone = world.add_job("vanished-wf")  # its workflow was removed from the registry
    api_job = Job.new("readqc", "obj-1", "2025-01-01T00:00:02.000Z")  # POST /jobs: no trigger
    world.jobs[api_job.id] = api_job
    others = {o.workflow_id: o for o in reader(world).explain("obj-1").other_jobs}
    assert set(others) == {"old-wf", "vanished-wf", "readqc"}
    assert "its trigger seq--old-wf is no longer in the registry" in others["old-wf"].explanation
    assert others["vanished-wf"].workflow_missing and others["vanished-wf"].job is not None
    assert others["vanished-wf"].job.id == gone.id
    assert "workflow vanished-wf was removed from the registry" in others["vanished-wf"].explanation
    assert others["readqc"].trigger_id is None and "made with POST /jobs" in others["readqc"].explanation


def test_a_job_of_a_removed_workflow_says_nobody_can_claim_it(world: World) -> None:
    world.triggers = [trigger("seq", "readqc")]
    world.add_job("readqc")
    world.workflow_ids = ["metag"]
    [entry] = reader(world).explain("obj-1").types[2].triggers
    assert entry.workflow_missing and entry.job is not None and entry.job.workflow_missing
    assert entry.job.id == job_id_for("readqc", "obj-1")
    assert "nobody can claim it until the workflow is back" in entry.explanation


def test_an_untagged_object_and_an_unknown_one(world: World) -> None:
    world.types = []
    report = reader(world).explain("obj-1")
    assert report.types == [] and "carries no object type" in report.summary
    with pytest.raises(NotFoundError):
        reader(world).explain("nope")
