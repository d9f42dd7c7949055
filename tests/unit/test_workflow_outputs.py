"""A workflow's declared outputs: the model, its rules, and the helpers a completion checks against."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from jobtriggers.models import Workflow

T0 = "2024-01-01T00:00:00Z"


def _workflow(outputs: Any) -> Workflow:
    return Workflow.model_validate({"id": "wf", "name": "wf", "created_at": T0, "outputs": outputs})


def test_outputs_are_optional_and_a_workflow_without_them_declares_nothing() -> None:
    wf = Workflow.model_validate({"id": "wf", "name": "wf", "created_at": T0})
    assert wf.outputs == []
    assert wf.output_names() == []
    assert wf.output_object_types() == frozenset()
    # so any type a completion names is undeclared
    assert wf.undeclared_output_types(["a"]) == ["a"]


def test_helpers_give_the_names_the_union_of_types_and_what_is_undeclared() -> None:
    wf = _workflow(
        [
            {"name": "workflow_execution", "object_types": ["record_set"], "description": "the record"},
            {"name": "contigs", "object_types": ["data_object_set", "contigs_set"]},
            {"name": "bam", "object_types": ["data_object_set"]},
        ]
    )
    assert wf.output_names() == ["workflow_execution", "contigs", "bam"]
    assert wf.output_object_types() == {"record_set", "data_object_set", "contigs_set"}
    assert wf.undeclared_output_types(["data_object_set", "zz", "record_set", "aa", "zz"]) == ["aa", "zz"]
    assert wf.undeclared_output_types(["contigs_set"]) == []


@pytest.mark.parametrize(
    ("outputs", "message"),
    [
        (
            [{"name": "a", "object_types": ["t"]}, {"name": "a", "object_types": ["u"]}],
            "'a' is declared twice",
        ),
        ([{"name": "a", "object_types": []}], "at least 1 item"),
        ([{"name": "a", "object_types": ["t", "u", "t"]}], "'t' is listed twice"),
        ([{"name": "has space", "object_types": ["t"]}], "should match pattern"),
        ([{"name": "a#b", "object_types": ["t"]}], "should match pattern"),
        ([{"name": "a", "object_types": ["t"], "kind": "file"}], "Extra inputs are not permitted"),
        ([{"object_types": ["t"]}], "Field required"),
    ],
)
def test_invalid_outputs_are_refused_with_a_reason(outputs: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _workflow(outputs)


def test_outputs_survive_a_json_round_trip_unchanged() -> None:
    wf = _workflow(
        [{"name": "a", "object_types": ["t", "u"], "description": "d"}, {"name": "b", "object_types": ["t"]}]
    )
    again = Workflow.model_validate(wf.model_dump(mode="json"))
    assert again == wf
    assert again.outputs[1].description is None
