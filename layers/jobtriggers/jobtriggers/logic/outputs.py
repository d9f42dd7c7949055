"""A completion's outputs: the objects `PATCH /operations/{id}` with `{"done": true, "result":
{"outputs": [...]}}` registers together with finishing the job.

Each output is a DRS object as POST /objects takes it, plus `types` (object type ids) and optionally
`output_name` (which declared output of the workflow it is). The rules, all checked before anything
is written (a broken one is a 422 naming every problem, and nothing is written):

- `result.outputs` registers objects when it is a list of objects. A list of ids (NMDC's old way:
  the site registered and tagged its objects itself) stays a plain result, as before.
- Every type of an output must be one the job's workflow declares for its outputs; with an
  `output_name`, one that output declares. Without one, the name is inferred when exactly one
  declared output takes those types (the record types of NMDC's chain); files that share
  `data_object_set` need their name to be told apart downstream.
- Ids and checksums are unique within the completion (the store would refuse the transaction).
- The job, its operation and every output's items (the object, one guard per checksum, one
  assignment per type) go in one transaction of at most 100 items (`MAX_TRANSACTION_ITEMS`).

An output without an id gets one derived from the operation and its position, so the same
completion, sent again, names the same objects. Each object records `was_generated_by` (the job),
and each assignment of its types carries the chain's lineage: `generated_by` and `root_object_id`
always, and `inputs` (the chain's objects so far, this completion's included) when its type
triggers a workflow: the stream record that makes the next job carries them, so the trigger engine
reads nothing more per job. The inputs are left off the other assignments (NMDC's annotation
registers 26 outputs, one of which starts the next link: 26 copies of 39 inputs would make the
transaction six times larger); should a trigger name such a type later, the job made from it
rebuilds them from its parent job, which keeps its outputs (`Job.outputs`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from typing import Any

from pydantic import ValidationError

from jobtriggers.dal.jobs import MAX_TRANSACTION_ITEMS, NewOutput
from jobtriggers.errors import ValidationFailed
from jobtriggers.logic.objects import drs_uri
from jobtriggers.models import (
    DrsObject,
    InputRef,
    Job,
    Lineage,
    ObjectTypeAssignment,
    OutputObjectIn,
    Workflow,
)

# What the job and its operation take of the transaction; every output adds its own items.
OWN_ITEMS = 2
_LOC = ("body", "result", "outputs")
# Crockford's base32, lower case, as minted object ids (logic/objects.py).
_ID_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def _problem(loc: tuple[Any, ...], msg: str, kind: str = "value_error") -> dict[str, Any]:
    return {"loc": [*_LOC, *loc], "msg": msg, "type": kind}


def outputs_in(result: Any) -> list[dict[str, Any]] | None:
    """The outputs a completion's result registers, still unparsed; None when it registers none
    (no `outputs`, an empty list, or NMDC's list of object ids)."""
    if not isinstance(result, dict) or "outputs" not in result:
        return None
    outputs = result["outputs"]
    if not isinstance(outputs, list) or not outputs or all(isinstance(o, str) for o in outputs):
        return None
    if not all(isinstance(o, dict) for o in outputs):
        raise ValidationFailed(
            [
                _problem(
                    (),
                    "outputs is either a list of objects to register (each a DRS object with its "
                    "types) or a list of ids of objects registered with POST /objects, not both",
                )
            ]
        )
    return outputs


def parse_outputs(raw: list[dict[str, Any]]) -> list[OutputObjectIn]:
    """Each output as an OutputObjectIn; every field that is wrong, in every output, is named."""
    parsed: list[OutputObjectIn] = []
    problems: list[dict[str, Any]] = []
    for index, item in enumerate(raw):
        try:
            parsed.append(OutputObjectIn.model_validate(item))
        except ValidationError as exc:
            problems += [
                _problem((index, *e["loc"]), str(e["msg"]), str(e["type"]))
                for e in exc.errors(include_url=False, include_input=False)
            ]
    if problems:
        raise ValidationFailed(problems)
    return parsed


def derived_object_id(operation_id: str, index: int) -> str:
    """An output's id when the site gave none: `sys0` and 12 characters derived from the operation
    and the output's position, so a completion sent again names the same objects."""
    digest = hashlib.sha256(f"{operation_id}#{index}".encode()).digest()
    return "sys0" + "".join(_ID_ALPHABET[b % 32] for b in digest[:12])


def _output_name(out: OutputObjectIn, workflow: Workflow) -> tuple[str | None, str | None]:
    """(the output's declared name, or None; a problem with its types, or None)."""
    if out.output_name is not None:
        declared = next((o for o in workflow.outputs if o.name == out.output_name), None)
        if declared is None:
            names = ", ".join(workflow.output_names()) or "none"
            return (
                None,
                f"'{out.output_name}' is not an output of workflow '{workflow.id}' (its outputs: {names})",
            )
        wrong = sorted(set(out.types) - set(declared.object_types))
        if wrong:
            return None, (
                f"output '{out.output_name}' of workflow '{workflow.id}' gets the object types "
                f"{', '.join(declared.object_types)}, not {', '.join(wrong)}"
            )
        return out.output_name, None
    undeclared = workflow.undeclared_output_types(out.types)
    if undeclared:
        allowed = ", ".join(sorted(workflow.output_object_types())) or "none: it declares no outputs"
        return None, (
            f"object types {', '.join(undeclared)} are not among the outputs workflow '{workflow.id}' "
            f"declares (its output types: {allowed})"
        )
    fits = [o.name for o in workflow.outputs if set(out.types) <= set(o.object_types)]
    return (fits[0] if len(fits) == 1 else None), None


def plan_outputs(
    job: Job,
    workflow: Workflow,
    outputs: list[OutputObjectIn],
    *,
    site_id: str,
    operation_id: str,
    now: str,
    host: str,
    triggered_types: Collection[str] | None = None,
) -> tuple[tuple[NewOutput, ...], list[InputRef]]:
    """The objects and assignments a completion writes, checked against the workflow's declared
    outputs, and the outputs as the next jobs see them (the job keeps them); ValidationFailed names
    every output that breaks a rule (and nothing is planned). The chain's inputs ride on the
    assignments of `triggered_types` only (None: on every assignment)."""
    problems: list[dict[str, Any]] = []
    planned: list[tuple[DrsObject, list[str], str | None]] = []
    ids: dict[str, int] = {}
    checksums: dict[tuple[str, str], int] = {}
    for index, out in enumerate(outputs):
        name, problem = _output_name(out, workflow)
        if problem:
            problems.append(_problem((index, "output_name" if out.output_name else "types"), problem))
        object_id = out.id or derived_object_id(operation_id, index)
        if object_id in ids:
            problems.append(_problem((index, "id"), f"output {ids[object_id]} has the id '{object_id}' too"))
        ids.setdefault(object_id, index)
        for c in out.checksums:
            first = checksums.setdefault((c.type, c.checksum), index)
            if first != index:
                problems.append(
                    _problem(
                        (index, "checksums"), f"output {first} has the checksum {c.type}:{c.checksum} too"
                    )
                )
        obj = DrsObject.model_validate(
            {
                **out.model_dump(exclude={"types", "output_name"}),
                "id": object_id,
                "self_uri": drs_uri(host, object_id),
                "created_by": site_id,
                "was_generated_by": job.id,
            }
        )
        planned.append((obj, list(out.types), name))
    if problems:
        raise ValidationFailed(problems)
    lineage = output_lineage(job, [(obj.id, types, name) for obj, types, name in planned])
    writes = tuple(
        NewOutput(
            obj=obj,
            assignments=tuple(
                ObjectTypeAssignment(
                    object_id=obj.id,
                    object_type_id=type_id,
                    assigned_at=now,
                    assigned_by=site_id,
                    generated_by=lineage.generated_by,
                    root_object_id=lineage.root_object_id,
                    inputs=lineage.inputs if triggered_types is None or type_id in triggered_types else None,
                )
                for type_id in types
            ),
        )
        for obj, types, _ in planned
    )
    return writes, lineage.inputs[len(lineage.inputs) - len(planned) :]


def output_lineage(job: Job, outputs: list[tuple[str, list[str], str | None]]) -> Lineage:
    """The lineage `job`'s outputs (id, types, declared name) carry: made by `job`, in its chain,
    and the inputs of the jobs they start: the job's own inputs and all of its outputs (so a job
    two links down still sees the contigs beside the annotation)."""
    made = [
        InputRef(
            object_id=object_id, types=types, output_name=name, workflow_id=job.workflow_id, job_id=job.id
        )
        for object_id, types, name in outputs
    ]
    return Lineage(generated_by=job.id, root_object_id=job.root_object_id, inputs=[*job.inputs, *made])


def check_transaction_size(item_count: int, outputs: tuple[NewOutput, ...]) -> None:
    """A completion whose transaction would pass DynamoDB's bound is refused, saying the bound."""
    if item_count <= MAX_TRANSACTION_ITEMS:
        return
    per_output = ", ".join(str(o.item_count) for o in outputs)
    raise ValidationFailed(
        [
            _problem(
                (),
                f"registering these {len(outputs)} outputs would write {item_count} items in one "
                f"transaction; DynamoDB takes at most {MAX_TRANSACTION_ITEMS}: the job and its operation "
                f"({OWN_ITEMS}), and per output 1 + its checksums + its types ({per_output}). Send fewer "
                "checksums per output, or register some outputs with POST /objects first and list the "
                "rest here",
            )
        ]
    )
