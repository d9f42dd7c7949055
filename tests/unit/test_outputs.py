"""A completion's outputs without a network: the transaction's item count and its bound, output names,
ids, lineage merging, and the completion rules of ClaimService against the in-memory fakes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from jobtriggers.dal.jobs import MAX_TRANSACTION_ITEMS, JobChange, NewOutput
from jobtriggers.errors import ConflictError, ValidationFailed
from jobtriggers.local.chain_step import plausible_outputs
from jobtriggers.logic.claims import ClaimService, SiteRef
from jobtriggers.logic.outputs import (
    OWN_ITEMS,
    check_transaction_size,
    derived_object_id,
    output_lineage,
    outputs_in,
    parse_outputs,
    plan_outputs,
)
from jobtriggers.models import (
    InputRef,
    Job,
    JobStatus,
    Lineage,
    ObjectTypeAssignment,
    OperationRecord,
    Workflow,
    WorkflowOutput,
)
from tests.fakes import FakeJobs, FakeOperations, FakeWorkflows
from tests.jobs import report

T0 = datetime(2025, 1, 1, tzinfo=UTC)
ASSEMBLY = Workflow(
    id="mgasm-1.0.3",
    name="assembly",
    created_at=T0,
    outputs=[
        WorkflowOutput(name="workflow_execution", object_types=["metagenome_assembly_set"]),
        WorkflowOutput(name="sr_contig", object_types=["data_object_set"]),
        WorkflowOutput(name="sr_bam", object_types=["data_object_set"]),
    ],
)


def chained_job() -> Job:
    """An assembly job made from reads QC's record: its lineage as the trigger engine gives it."""
    lineage = Lineage(
        generated_by="rqc-job",
        root_object_id="seq-1",
        inputs=[
            InputRef(object_id="seq-1", types=["metagenome_sequencing_activity_set"]),
            InputRef(
                object_id="rqc-rec",
                types=["read_qc_analysis_activity_set"],
                output_name="workflow_execution",
                workflow_id="readqc-1.0.6",
                job_id="rqc-job",
            ),
        ],
    )
    return Job.new("mgasm-1.0.3", "rqc-rec", "2025-01-01T00:00:00.000Z", lineage=lineage)


def output(
    name: str | None, types: list[str], checksums: int | list[dict[str, str]] = 1, **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": f"{name or 'x'}.dat",
        "size": 1,
        "created_time": "2025-01-01T00:00:00Z",
        "checksums": checksums
        if isinstance(checksums, list)
        else [{"type": "sha256", "checksum": uuid.uuid4().hex} for _ in range(checksums)],
        "access_methods": [{"access_url": {"url": "https://data.example.org/x"}}],
        "types": types,
        **extra,
    }
    if name is not None:
        body["output_name"] = name
    return body


def plan(
    outputs: list[dict[str, Any]], job: Job | None = None, triggered: set[str] | None = None
) -> tuple[NewOutput, ...]:
    writes, _ = plan_outputs(
        job or chained_job(),
        ASSEMBLY,
        parse_outputs(outputs),
        site_id="site-a",
        operation_id="op-1",
        now="2025-01-01T01:00:00.000Z",
        host="api.example.org",
        triggered_types=triggered,
    )
    return writes


# --------------------------------------------------------------------------- item count and bound


@pytest.mark.parametrize(("checksums", "types"), [(1, 1), (2, 1), (3, 2)])
def test_the_item_count_is_the_job_its_operation_and_per_output_one_plus_checksums_plus_types(
    checksums: int, types: int
) -> None:
    # Given outputs with `checksums` checksums and `types` types each
    workflow = Workflow(
        id="w",
        name="w",
        created_at=T0,
        outputs=[WorkflowOutput(name="o", object_types=[f"t{i}" for i in range(types)])],
    )
    outs = [output(None, [f"t{i}" for i in range(types)], checksums, id=f"id-{n}") for n in range(5)]
    planned, _ = plan_outputs(
        chained_job(), workflow, parse_outputs(outs), site_id="s", operation_id="op", now="n", host="h"
    )
    # Then each output counts 1 + its checksums + its types, and the change adds the job and its operation
    assert [o.item_count for o in planned] == [1 + checksums + types] * 5
    from jobtriggers.dal.jobs import OperationUpdate

    change = JobChange(
        job=chained_job(),
        expect={},
        operation=OperationUpdate(op_id="op", site_id="s", set={}),
        outputs=planned,
    )
    assert change.item_count == OWN_ITEMS + 5 * (1 + checksums + types)


def test_the_bound_is_dynamodbs_100_items_and_the_refusal_says_so() -> None:
    # mgann: 26 outputs with one checksum and one type each fit (80); with two checksums they do not (106)
    assert MAX_TRANSACTION_ITEMS == 100
    check_transaction_size(OWN_ITEMS + 26 * 3, ())
    check_transaction_size(100, ())
    with pytest.raises(ValidationFailed) as refused:
        check_transaction_size(OWN_ITEMS + 26 * 4, ())
    [problem] = refused.value.detail
    assert "106 items" in problem["msg"] and "at most 100" in problem["msg"]
    assert problem["loc"] == ["body", "result", "outputs"]
    with pytest.raises(ValidationFailed):
        check_transaction_size(101, ())


# --------------------------------------------------------------------------- parsing and planning


def test_outputs_in_tells_objects_from_nmdcs_list_of_ids() -> None:
    assert outputs_in({"outputs": ["a", "b"]}) is None
    assert outputs_in({"outputs": []}) is None
    assert outputs_in({"reads": 1}) is None and outputs_in(None) is None and outputs_in([1]) is None
    assert outputs_in({"outputs": [{"name": "x"}]}) == [{"name": "x"}]
    with pytest.raises(ValidationFailed):
        outputs_in({"outputs": ["a", {"name": "x"}]})


def test_names_are_checked_or_inferred_when_one_declared_output_takes_the_types() -> None:
    planned = plan(
        [
            output(None, ["metagenome_assembly_set"]),  # only workflow_execution takes it: inferred
            output("sr_contig", ["data_object_set"]),
            output(None, ["data_object_set"]),  # sr_contig or sr_bam: left unnamed
        ]
    )
    [first, *_] = planned
    names = [i.output_name for i in first.assignments[0].inputs or []][2:]
    assert names == ["workflow_execution", "sr_contig", None]


def test_ids_are_derived_from_the_operation_and_position_when_not_given() -> None:
    planned = plan(
        [output("sr_contig", ["data_object_set"]), output("sr_bam", ["data_object_set"], id="bam-1")]
    )
    assert [o.obj.id for o in planned] == [derived_object_id("op-1", 0), "bam-1"]
    assert derived_object_id("op-1", 0) == derived_object_id("op-1", 0) != derived_object_id("op-2", 0)
    assert derived_object_id("op-1", 0).startswith("sys0") and len(derived_object_id("op-1", 0)) == 16
    obj = planned[0].obj
    assert obj.was_generated_by == chained_job().id and obj.created_by == "site-a"
    assert obj.self_uri == f"drs://api.example.org/{obj.id}"


def test_every_broken_rule_is_named_and_nothing_is_planned() -> None:
    with pytest.raises(ValidationFailed) as refused:
        plan(
            [
                output("sr_contig", ["metagenome_assembly_set"]),  # not sr_contig's type
                output(None, ["mags_activity_set"]),  # not declared at all
                output("final_checkm", ["data_object_set"]),  # another workflow's output
                output("sr_bam", ["data_object_set"], id="dup"),
                output("sr_bam", ["data_object_set"], id="dup"),  # same id twice
            ]
        )
    problems = {p["loc"][3]: p["msg"] for p in refused.value.detail}
    assert set(problems) == {0, 1, 2, 4}
    assert "gets the object types data_object_set, not metagenome_assembly_set" in problems[0]
    assert "mags_activity_set are not among the outputs workflow 'mgasm-1.0.3' declares" in problems[1]
    assert "'final_checkm' is not an output of workflow 'mgasm-1.0.3'" in problems[2]
    assert "output 3 has the id 'dup' too" in problems[4]
    same = [{"type": "md5", "checksum": "abc"}]
    with pytest.raises(ValidationFailed) as twice:
        plan([output("sr_bam", ["data_object_set"], same), output("sr_contig", ["data_object_set"], same)])
    [problem] = twice.value.detail
    assert (
        problem["loc"][3:] == [1, "checksums"] and problem["msg"] == "output 0 has the checksum md5:abc too"
    )


# --------------------------------------------------------------------------- lineage merging


def test_outputs_carry_the_jobs_inputs_and_all_of_its_outputs() -> None:
    job = chained_job()
    lineage = output_lineage(job, [("contig", ["data_object_set"], "sr_contig"), ("rec", ["x"], None)])
    assert lineage.generated_by == job.id and lineage.root_object_id == "seq-1"
    assert [i.object_id for i in lineage.inputs] == ["seq-1", "rqc-rec", "contig", "rec"]
    assert lineage.inputs[2] == InputRef(
        object_id="contig",
        types=["data_object_set"],
        output_name="sr_contig",
        workflow_id="mgasm-1.0.3",
        job_id=job.id,
    )
    # A job made before lineage existed (its config only an object id) is its own root and input
    legacy = Job.new("mgasm-1.0.3", "old", "2025-01-01T00:00:00.000Z")
    assert legacy.root_object_id == "old" and legacy.parent_job_id is None
    assert [i.object_id for i in output_lineage(legacy, [("o", ["t"], None)]).inputs] == ["old", "o"]


def test_an_assignments_lineage_is_its_own_or_makes_its_object_a_root() -> None:
    plain = ObjectTypeAssignment(object_id="seq", object_type_id="t", assigned_at="now")
    assert plain.lineage() == Lineage(
        generated_by=None, root_object_id="seq", inputs=[InputRef(object_id="seq", types=["t"])]
    )
    [out] = plan([output(None, ["metagenome_assembly_set"])])
    [assignment] = out.assignments
    carried = assignment.lineage()
    assert carried.generated_by == chained_job().id and carried.root_object_id == "seq-1"
    assert [i.object_id for i in carried.inputs] == ["seq-1", "rqc-rec", out.obj.id]
    # and the job the trigger engine makes from it
    nxt = Job.new("mgann-1.0.0", out.obj.id, "later", lineage=carried)
    assert nxt.parent_job_id == chained_job().id and nxt.root_object_id == "seq-1"
    assert [i.object_id for i in nxt.inputs] == ["seq-1", "rqc-rec", out.obj.id]


# --------------------------------------------------------------------------- the completion rules


@pytest.fixture
def claimed() -> tuple[ClaimService, FakeJobs, OperationRecord]:
    ops = FakeOperations()
    jobs = FakeJobs(ops)
    jobs.add(chained_job())
    service = ClaimService(jobs, ops, FakeWorkflows(ASSEMBLY), clock=lambda: T0)
    op = service.claim(chained_job().id, SiteRef.of("site-a")).operation
    return service, jobs, op


def test_a_completion_with_outputs_is_one_change_and_a_repeat_changes_nothing(
    claimed: tuple[ClaimService, FakeJobs, OperationRecord],
) -> None:
    service, jobs, op = claimed
    outs = plausible_outputs(ASSEMBLY, op.metadata["job"])
    result = {"outputs": outs}
    done = service.update_operation(op.id, SiteRef.of("site-a"), report(done=True, result=result))
    assert done.done and done.result == result
    job = jobs.get(chained_job().id)
    ids = [o.object_id for o in job.outputs]
    assert job.status == JobStatus.done and ids == [derived_object_id(op.id, i) for i in range(3)]
    assert [o.output_name for o in job.outputs] == ["workflow_execution", "sr_contig", "sr_bam"]
    assert sorted(jobs.objects) == sorted(ids)
    applied = jobs.applied
    again = service.update_operation(op.id, SiteRef.of("site-a"), report(done=True, result=result))
    assert again == done and jobs.applied == applied
    with pytest.raises(ConflictError):
        service.update_operation(op.id, SiteRef.of("site-a"), report(done=True, result={"outputs": []}))


def test_a_completion_refused_for_its_outputs_changes_nothing(
    claimed: tuple[ClaimService, FakeJobs, OperationRecord],
) -> None:
    service, jobs, op = claimed
    bad = {"outputs": [output(None, ["mags_activity_set"])]}
    with pytest.raises(ValidationFailed):
        service.update_operation(op.id, SiteRef.of("site-a"), report(done=True, result=bad))
    assert jobs.get(chained_job().id).status == JobStatus.claimed and jobs.objects == {}
    # An error result registers nothing, whatever it says
    service.update_operation(
        op.id, SiteRef.of("site-a"), report(done=True, result={"code": "boom", "message": "it broke"})
    )
    assert jobs.objects == {} and jobs.get(chained_job().id).status == JobStatus.pending


def test_the_chains_inputs_ride_only_on_assignments_whose_type_starts_a_job() -> None:
    # Given a completion whose record type triggers the next workflow and whose files trigger nothing
    record, contig = plan(
        [output(None, ["metagenome_assembly_set"]), output("sr_contig", ["data_object_set"])],
        triggered={"metagenome_assembly_set"},
    )
    # Then the record's assignment carries the inputs, the file's only where it comes from
    assert record.assignments[0].inputs is not None and not record.assignments[0].lacks_inputs
    [file_assignment] = contig.assignments
    assert file_assignment.inputs is None and file_assignment.lacks_inputs
    assert file_assignment.generated_by == chained_job().id and file_assignment.root_object_id == "seq-1"


def test_a_job_from_an_assignment_without_inputs_rebuilds_them_from_its_parent() -> None:
    # Given the assembly job done with its outputs, and one of its files' assignments without inputs
    from jobtriggers.logic.triggering import TriggerEngine
    from jobtriggers.models import Trigger

    parent = chained_job()
    refs = output_lineage(
        parent, [("rec", ["metagenome_assembly_set"], "workflow_execution"), ("c", ["f"], "sr_contig")]
    )
    jobs = FakeJobs()
    jobs.add(parent.model_copy(update={"status": JobStatus.done, "outputs": refs.inputs[2:]}))
    file_assignment = ObjectTypeAssignment(
        object_id="c", object_type_id="f", assigned_at="t", generated_by=parent.id, root_object_id="seq-1"
    )
    trigger = Trigger(id="f--new-wf", object_type_id="f", workflow_id="new-wf", created_at=T0)

    class Triggers:
        def triggers_for_object_type(self, object_type_id: str) -> list[Trigger]:
            return [trigger] if object_type_id == "f" else []

    # When a trigger now names its type and the record is handled
    TriggerEngine(Triggers(), jobs).resolve(file_assignment)
    # Then the new job's inputs are its parent's inputs and all of its parent's outputs
    from jobtriggers.models import job_id_for

    made = jobs.get(job_id_for("new-wf", "c"))
    assert made.parent_job_id == parent.id and made.root_object_id == "seq-1"
    assert [i.object_id for i in made.inputs] == ["seq-1", "rqc-rec", "rec", "c"]
