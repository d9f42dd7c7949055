"""seed/: validation, loading with diff and backfill, the deploy-time seeder, and the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from jobtriggers.cli import app
from jobtriggers.dal.assignments import AssignmentRepository
from jobtriggers.dal.dynamo import dynamodb, to_item
from jobtriggers.dal.jobs import JobRepository
from jobtriggers.dal.registry import RegistryRepository
from jobtriggers.errors import SeedError
from jobtriggers.logic.deploy import handle_seed_event
from jobtriggers.logic.seed import load_seed_dir, registry_from_document, sync_registry
from jobtriggers.logic.triggering import TriggerEngine
from jobtriggers.models import job_id_for
from tests.conftest import REFERENCE_REGISTRY, SEED_DIR

runner = CliRunner()


@pytest.fixture
def seed_copy(tmp_path: Path) -> Path:
    target = tmp_path / "seed"
    shutil.copytree(SEED_DIR, target)
    return target


def _edit(path: Path, fn: Any) -> None:
    data = json.loads(path.read_text())
    path.write_text(json.dumps(fn(data)))


def test_seed_dir_is_the_reference_with_one_dangling_trigger_left_out_and_one_repaired() -> None:
    # Given seed/ as committed
    registry = load_seed_dir(SEED_DIR)
    # Then it holds the reference registry: 12 of its 14 triggers, and the 13th the repair of mgrc-1.0.6
    assert (len(registry.object_types), len(registry.workflows), len(registry.capabilities)) == (34, 19, 19)
    reference = json.loads(REFERENCE_REGISTRY.read_text())
    kept = {t["id"] for t in reference["triggers"] if t["workflow_defined"]}
    assert len(kept) == 12
    assert {t.id for t in registry.triggers} == kept | {"metagenome_sequencing_activity_set--readqc-1.0.6"}
    assert "schema#/definitions/Database" in {o.id for o in registry.object_types}


def test_raw_reference_is_rejected_naming_both_undefined_workflows() -> None:
    # Given the NMDC Runtime's boot registry as extracted
    doc = json.loads(REFERENCE_REGISTRY.read_text())
    # When it is validated
    with pytest.raises(SeedError) as err:
        registry_from_document(doc)
    # Then exactly the two dangling references are named
    problems = err.value.detail
    assert len(problems) == 2
    assert any(
        "'metat-1.0.0'" in p and "metatranscriptome_raw_paired_end_reads--metat-1.0.0" in p for p in problems
    )
    assert any("'mgrc-1.0.6'" in p for p in problems)


def test_validation_lists_every_problem(seed_copy: Path) -> None:
    # Given a seed with a duplicate id, a missing name, a dangling trigger and a wrong trigger id
    _edit(seed_copy / "workflows.json", lambda ws: [*ws, ws[0]])
    _edit(seed_copy / "object_types.json", lambda ts: [{**ts[0], "id": "new-type", "name": None}, *ts])
    _edit(
        seed_copy / "triggers.json",
        lambda ts: [
            *ts,
            {
                "id": "test--nope",
                "object_type_id": "test",
                "workflow_id": "nope",
                "created_at": "2024-01-01T00:00:00Z",
            },
            {
                "id": "wrong",
                "object_type_id": "test",
                "workflow_id": "test",
                "created_at": "2024-01-01T00:00:00Z",
            },
        ],
    )
    # When it is checked
    with pytest.raises(SeedError) as err:
        load_seed_dir(seed_copy)
    text = "\n".join(err.value.detail)
    # Then each problem is named where it is
    assert "duplicate id 'metag-1.0.0'" in text
    assert "object_types[0] (new-type): name" in text
    assert "names workflow 'nope', which is not defined" in text
    assert "trigger id must be 'test--test'" in text


def test_invalid_json_and_missing_file_are_reported(seed_copy: Path) -> None:
    (seed_copy / "triggers.json").write_text("[{")
    (seed_copy / "capabilities.json").unlink()
    with pytest.raises(SeedError) as err:
        load_seed_dir(seed_copy)
    text = "\n".join(err.value.detail)
    assert "triggers.json: not valid JSON" in text
    assert "capabilities.json: missing" in text


def _sync(path: Path) -> Any:
    # No TriggerEngine runs in these tests, so none can hold a trigger set older than a new
    # trigger: the backfill need not wait (tests/integration/test_trigger_consistency.py: it does).
    registry = RegistryRepository()
    return sync_registry(
        load_seed_dir(path),
        registry,
        TriggerEngine(registry, JobRepository()),
        AssignmentRepository(),
        backfill_delay_seconds=0,
    )


def test_load_is_an_upsert_with_deletes_and_backfills_new_triggers(
    tables: dict[str, str], seed_copy: Path
) -> None:
    # Given the seed loaded once, and an object tagged with a type no trigger names
    first = _sync(seed_copy)
    assert len(first.diff.added["trigger"]) == 13
    dynamodb().put_item(TableName=tables["OBJECTS_TABLE"], Item=to_item({"pk": "object#o1", "id": "o1"}))
    AssignmentRepository().apply("o1", ["gcms-metab-calibration"], [], by="s1")
    # When a trigger for that type is added, one removed, and the seed loaded again
    _edit(
        seed_copy / "triggers.json",
        lambda ts: [
            *[t for t in ts if t["id"] != "test--test"],
            {
                "id": "gcms-metab-calibration--gcms-metab-1.0.0",
                "object_type_id": "gcms-metab-calibration",
                "workflow_id": "gcms-metab-1.0.0",
                "created_at": "2024-01-01T00:00:00Z",
            },
        ],
    )
    second = _sync(seed_copy)
    # Then the registry follows seed/, and the tagged object got its job by backfill
    assert second.diff.added["trigger"] == ["gcms-metab-calibration--gcms-metab-1.0.0"]
    assert second.diff.removed["trigger"] == ["test--test"]
    assert second.backfilled == {"gcms-metab-calibration--gcms-metab-1.0.0": 1}
    assert JobRepository().get(job_id_for("gcms-metab-1.0.0", "o1")).status == "pending"
    assert "test--test" not in {t.id for t in RegistryRepository().list_all("trigger")}
    # And a third load changes nothing
    third = _sync(seed_copy)
    assert all(not v for v in third.diff.added.values())
    assert all(not v for v in third.diff.changed.values())
    assert third.backfilled == {}


def test_seeder_custom_resource_succeeds_and_fails_readably(tables: dict[str, str], seed_copy: Path) -> None:
    sent: list[tuple[str, dict[str, Any]]] = []
    registry = RegistryRepository()
    resolver = TriggerEngine(registry, JobRepository())
    event = {
        "RequestType": "Create",
        "ResponseURL": "https://example.invalid/r",
        "StackId": "s",
        "RequestId": "r",
    }
    # When CloudFormation creates the resource with a valid seed
    services = lambda: (registry, resolver, AssignmentRepository())  # noqa: E731
    body = handle_seed_event(event, seed_copy, services, lambda u, b: sent.append((u, dict(b))))
    # Then it answers SUCCESS with the counts
    assert body["Status"] == "SUCCESS"
    assert body["Data"]["Added"] == 34 + 19 + 19 + 13
    assert sent[0][0] == "https://example.invalid/r"
    # When an update carries an invalid seed
    _edit(
        seed_copy / "triggers.json",
        lambda ts: [*ts, {**ts[0], "id": "x--y", "object_type_id": "x", "workflow_id": "y"}],
    )
    before = len(registry.list_all("trigger"))
    body = handle_seed_event(
        {**event, "RequestType": "Update"},
        seed_copy,
        services,
        lambda u, b: None,
    )
    # Then the deploy fails naming the problem, and nothing was written
    assert body["Status"] == "FAILED"
    assert "object type 'x'" in body["Reason"] and "workflow 'y'" in body["Reason"]
    assert len(registry.list_all("trigger")) == before


def test_cli_seed_check_exit_codes_and_json(seed_copy: Path) -> None:
    ok = runner.invoke(app, ["seed", "check", str(seed_copy), "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["counts"]["trigger"] == 13
    _edit(
        seed_copy / "triggers.json",
        lambda ts: [*ts, {**ts[0], "id": "a--b", "object_type_id": "a", "workflow_id": "b"}],
    )
    bad = runner.invoke(app, ["seed", "check", str(seed_copy)])
    assert bad.exit_code == 1
    assert "names workflow 'b', which is not defined" in bad.output


def test_cli_load_and_reconcile_against_the_server(tables: dict[str, str], seed_copy: Path) -> None:
    # Given a loaded seed and an object tagged before anything could resolve it
    loaded = runner.invoke(app, ["seed", "load", str(seed_copy), "--json"])
    assert loaded.exit_code == 0, loaded.output
    dynamodb().put_item(TableName=tables["OBJECTS_TABLE"], Item=to_item({"pk": "object#o9", "id": "o9"}))
    AssignmentRepository().apply("o9", ["metagenome_sequencing_activity_set"], [], by="s1")
    # When reconcile runs for that type's trigger, twice
    args = ["reconcile", "--trigger", "metagenome_sequencing_activity_set--metag-1.0.0", "--json"]
    first = runner.invoke(app, args)
    second = runner.invoke(app, args)
    # Then the job was made once
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)[0]["jobs created"] == 1
    assert json.loads(second.stdout)[0]["jobs created"] == 0
    unknown = runner.invoke(app, ["reconcile", "--trigger", "nope"])
    assert unknown.exit_code == 1 and "no such trigger: nope" in unknown.output
