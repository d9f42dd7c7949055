"""Chains in the registry: output types that trigger workflows, and the cycles `seed check` refuses."""

from __future__ import annotations

import json
from typing import Any

import pytest

from jobtriggers.errors import SeedError
from jobtriggers.logic.chains import chain_links, chain_roots, trigger_cycles
from jobtriggers.logic.seed import registry_from_document
from jobtriggers.models import Trigger, Workflow, trigger_id
from tests.conftest import REFERENCE_REGISTRY

T0 = "2024-01-01T00:00:00Z"


def _wf(wf_id: str, *outputs: list[str]) -> Workflow:
    return Workflow.model_validate(
        {
            "id": wf_id,
            "name": wf_id,
            "created_at": T0,
            "outputs": [{"name": f"out{n}", "object_types": types} for n, types in enumerate(outputs)],
        }
    )


def _tr(object_type: str, workflow: str) -> Trigger:
    return Trigger(
        id=trigger_id(object_type, workflow), object_type_id=object_type, workflow_id=workflow, created_at=T0
    )


def _doc(workflows: list[Workflow], triggers: list[Trigger], types: list[str]) -> dict[str, Any]:
    """A whole registry document (what seed/ holds), from models."""
    return {
        "object_types": [{"id": t, "name": t, "created_at": T0} for t in types],
        "workflows": [w.model_dump(mode="json") for w in workflows],
        "capabilities": [],
        "triggers": [t.model_dump(mode="json") for t in triggers],
    }


def _problems(workflows: list[Workflow], triggers: list[Trigger], types: list[str]) -> list[str]:
    with pytest.raises(SeedError) as err:
        registry_from_document(_doc(workflows, triggers, types), source="seed")
    return list(err.value.detail)


def test_links_follow_outputs_through_triggers() -> None:
    workflows = [_wf("qc", ["qc_set", "data"]), _wf("asm", ["asm_set"]), _wf("rba", ["rba_set"])]
    triggers = [_tr("reads", "qc"), _tr("qc_set", "asm"), _tr("qc_set", "rba")]
    assert chain_links(workflows, triggers) == {
        "qc": [("qc_set", "asm"), ("qc_set", "rba")],
        "asm": [],
        "rba": [],
    }
    # `reads` starts the chain (nothing outputs it); `qc_set` is made by qc, so it is no root
    assert chain_roots(workflows, triggers) == ["reads"]
    assert trigger_cycles(workflows, triggers) == ([], False)


def test_a_chain_of_workflows_without_outputs_has_no_root() -> None:
    assert chain_roots([_wf("a"), _wf("b")], [_tr("t", "a"), _tr("u", "b")]) == []


def test_an_unknown_output_type_is_refused_naming_workflow_output_and_type() -> None:
    problems = _problems(
        [_wf("qc", ["qc_set"], ["data", "nope"])], [_tr("reads", "qc")], ["reads", "qc_set", "data"]
    )
    assert problems == ["seed: workflow 'qc' output 'out1' has object type 'nope', which is not defined"]


def test_a_self_loop_is_named() -> None:
    problems = _problems([_wf("w", ["t"])], [_tr("t", "w")], ["t"])
    assert len(problems) == 1
    assert problems[0].startswith("seed: trigger/output cycle w → t → w: ")


def test_a_cycle_through_two_workflows_is_named_once_from_its_smallest_workflow() -> None:
    # b's outputs trigger a, and a's trigger b: one cycle, however it is entered
    workflows = [_wf("b", ["tb"]), _wf("a", ["ta"])]
    triggers = [_tr("ta", "b"), _tr("tb", "a")]
    assert trigger_cycles(workflows, triggers) == ([["a", "ta", "b", "tb", "a"]], False)
    problems = _problems(workflows, triggers, ["ta", "tb"])
    assert [p.split(": ")[1] for p in problems] == ["trigger/output cycle a → ta → b → tb → a"]


def test_every_cycle_is_named_once_and_the_acyclic_rest_is_not() -> None:
    # start → x → y → x (a cycle of two), y → y (a self-loop), y → z (a dead end), and two types
    # from x to y: two different cycles through x and y
    workflows = [_wf("x", ["tx", "tx2"]), _wf("y", ["ty", "tyy", "tz"]), _wf("z", ["done"])]
    triggers = [
        _tr("start", "x"),
        _tr("tx", "y"),
        _tr("tx2", "y"),
        _tr("ty", "x"),
        _tr("tyy", "y"),
        _tr("tz", "z"),
    ]
    cycles, more = trigger_cycles(workflows, triggers)
    assert not more
    assert cycles == [["x", "tx", "y", "ty", "x"], ["x", "tx2", "y", "ty", "x"], ["y", "tyy", "y"]]


def test_a_type_that_is_also_a_workflow_id_does_not_confuse_the_walk() -> None:
    # upstream has the type `test` and the workflow `test`: a → test(type) → test(workflow) → a
    workflows = [_wf("a", ["test"]), _wf("test", ["ta"])]
    triggers = [_tr("test", "test"), _tr("ta", "a")]
    assert trigger_cycles(workflows, triggers) == ([["a", "test", "test", "ta", "a"]], False)


def test_many_cycles_are_named_up_to_a_bound_and_the_rest_is_said() -> None:
    # 30 workflows that each trigger themselves: 30 self-loops, 5 named
    workflows = [_wf(f"w{n:02d}", [f"t{n:02d}"]) for n in range(30)]
    triggers = [_tr(f"t{n:02d}", f"w{n:02d}") for n in range(30)]
    cycles, more = trigger_cycles(workflows, triggers, limit=5)
    assert more and [c[0] for c in cycles] == ["w00", "w01", "w02", "w03", "w04"]
    problems = _problems(workflows, triggers, [f"t{n:02d}" for n in range(30)])
    assert len(problems) == 21
    assert problems[-1] == "seed: more trigger/output cycles than the 20 named above"


def test_a_dense_registry_is_checked_quickly() -> None:
    # every workflow's output triggers every workflow: factorially many cycles, found up to the bound
    n = 12
    workflows = [_wf(f"w{i:02d}", [f"t{i:02d}"]) for i in range(n)]
    triggers = [_tr(f"t{i:02d}", f"w{j:02d}") for i in range(n) for j in range(n)]
    cycles, more = trigger_cycles(workflows, triggers)
    assert more and len(cycles) == 20


def test_every_problem_is_listed_together_and_a_reference_to_an_invalid_entry_says_so() -> None:
    doc = _doc([_wf("w", ["t"], ["ghost"])], [_tr("t", "w"), _tr("t", "broken")], ["t"])
    doc["workflows"].append({"id": "broken", "name": "broken", "created_at": T0, "outputs": [{"name": "x"}]})
    with pytest.raises(SeedError) as err:
        registry_from_document(doc, source="seed")
    assert err.value.detail == [
        "seed: workflows[1] (broken): outputs.0.object_types: Field required",
        "seed: trigger 't--broken' names workflow 'broken', which is invalid (see above)",
        "seed: workflow 'w' output 'out1' has object type 'ghost', which is not defined",
        "seed: trigger/output cycle w → t → w: each job's outputs would start the next job, without end; "
        "break it by removing one of its output types or one of its triggers",
    ]


def test_the_reference_registry_is_still_refused_for_its_two_dangling_triggers_alone() -> None:
    with pytest.raises(SeedError) as err:
        registry_from_document(json.loads(REFERENCE_REGISTRY.read_text()))
    assert err.value.detail == [
        "registry: trigger 'metatranscriptome_raw_paired_end_reads--metat-1.0.0' names workflow "
        "'metat-1.0.0', which is not defined",
        "registry: trigger 'metagenome_sequencing_activity_set--mgrc-1.0.6' names workflow 'mgrc-1.0.6', "
        "which is not defined",
    ]
