"""Workflow outputs through the seed commands: check draws the chains and names a cycle; diff and load
carry outputs through the registry table (the moto server) unchanged."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from jobtriggers.cli import app
from jobtriggers.dal.dynamo import dynamodb, from_item, to_item
from jobtriggers.dal.registry import RegistryRepository
from jobtriggers.logic.seed import load_seed_dir
from tests.conftest import SEED_DIR

runner = CliRunner()

CYCLE = (
    "mags-1.0.4 → mags_activity_set → readqc-1.0.6 → read_qc_analysis_activity_set → mgasm-1.0.3 → "
    "metagenome_assembly_set → mgann-1.0.0 → metagenome_annotation_activity_set → mags-1.0.4"
)


@pytest.fixture
def seed_copy(tmp_path: Path) -> Path:
    target = tmp_path / "seed"
    shutil.copytree(SEED_DIR, target)
    return target


def _edit(path: Path, fn: Any) -> None:
    path.write_text(json.dumps(fn(json.loads(path.read_text()))))


def _edit_workflow(seed: Path, workflow_id: str, fn: Any) -> None:
    _edit(seed / "workflows.json", lambda ws: [fn(w) if w["id"] == workflow_id else w for w in ws])


def _invoke(*args: str) -> Any:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result


def test_check_draws_the_chain_the_seed_declares(seed_copy: Path) -> None:
    out = _invoke("seed", "check", str(seed_copy)).stdout
    # the tree, one workflow a line, with what its outputs do
    for line in (
        "└── metagenome_sequencing_activity_set",
        "├── metag-1.0.0 (no outputs declared)",
        "└── readqc-1.0.6 (4 outputs)",
        "└── read_qc_analysis_activity_set",
        "├── mgasm-1.0.3 (8 outputs)",
        "└── mgann-1.0.0 (26 outputs)",
        "└── mags-1.0.4 (9 outputs; they trigger nothing)",
        "└── mgrba-1.0.2 (11 outputs; they trigger nothing)",
    ):
        assert line in out
    assert "58 outputs, no trigger/output cycle" in " ".join(out.split())
    as_json = json.loads(_invoke("seed", "check", str(seed_copy), "--json").stdout)
    assert as_json["workflow_outputs"] == 58 and as_json["counts"]["workflow"] == 19


def test_check_refuses_a_cycle_naming_it_and_an_unknown_output_type(seed_copy: Path) -> None:
    # Given a trigger that makes the MAGs record start reads QC again, and an output of a type nobody defined
    _edit(
        seed_copy / "triggers.json",
        lambda ts: [
            *ts,
            {
                "id": "mags_activity_set--readqc-1.0.6",
                "object_type_id": "mags_activity_set",
                "workflow_id": "readqc-1.0.6",
                "created_at": "2024-01-01T00:00:00Z",
            },
        ],
    )
    _edit_workflow(
        seed_copy,
        "mgrba-1.0.2",
        lambda w: {**w, "outputs": [*w["outputs"], {"name": "krona", "object_types": ["krona_set"]}]},
    )
    # When it is checked
    bad = runner.invoke(app, ["seed", "check", str(seed_copy)])
    # Then it fails, naming the whole cycle once and the unknown type
    assert bad.exit_code == 1
    text = " ".join(bad.output.split())
    assert f"trigger/output cycle {CYCLE}: each job's outputs would start the next job" in text
    assert text.count("trigger/output cycle") == 1
    assert "workflow 'mgrba-1.0.2' output 'krona' has object type 'krona_set', which is not defined" in text
    as_json = runner.invoke(app, ["seed", "check", str(seed_copy), "--json"])
    assert as_json.exit_code == 1
    assert len(json.loads(as_json.stdout)["problems"]) == 2


def test_load_and_diff_carry_outputs_through_the_registry_table_unchanged(
    tables: dict[str, str], seed_copy: Path
) -> None:
    # Given the seed loaded into the tables
    _invoke("seed", "load", str(seed_copy), "--json")
    wanted = {w.id: w for w in load_seed_dir(seed_copy).workflows}
    # Then every workflow reads back equal, its outputs included
    stored = {w.id: w for w in RegistryRepository().list_all("workflow")}
    assert stored == wanted
    assert stored["mgann-1.0.0"].output_names() == wanted["mgann-1.0.0"].output_names()
    # and the item holds the outputs as seed/ writes them: a list of maps, in seed order
    item = dynamodb().get_item(
        TableName=tables["REGISTRY_TABLE"], Key=to_item({"kind": "workflow", "id": "mgasm-1.0.3"})
    )["Item"]
    seed_entry = next(
        w for w in json.loads((seed_copy / "workflows.json").read_text()) if w["id"] == "mgasm-1.0.3"
    )
    assert from_item(item)["outputs"] == seed_entry["outputs"]
    # And a diff against what was loaded changes nothing
    same = json.loads(_invoke("seed", "diff", str(seed_copy), "--json").stdout)
    assert not any(same["changed"].values()) and same["unchanged"]["workflow"] == 19

    # When an output is dropped from seed/
    _edit_workflow(
        seed_copy,
        "mgasm-1.0.3",
        lambda w: {**w, "outputs": [o for o in w["outputs"] if o["name"] != "sr_agp"]},
    )
    # Then diff names the workflow and the field that changed, for scripts and for people
    changed = json.loads(_invoke("seed", "diff", str(seed_copy), "--json").stdout)
    assert changed["changed"]["workflow"] == ["mgasm-1.0.3"]
    assert changed["changed_fields"]["workflow"] == {"mgasm-1.0.3": ["outputs"]}
    assert "mgasm-1.0.3 (outputs)" in _invoke("seed", "diff", str(seed_copy)).stdout
    # And load writes the new outputs
    _invoke("seed", "load", str(seed_copy), "--json")
    mgasm = RegistryRepository().get("workflow", "mgasm-1.0.3")
    assert "sr_agp" not in mgasm.output_names() and len(mgasm.outputs) == 7
