"""GET /jobs/{id}/lineage and GET /objects/{id}/triggers through ApiFunction against moto: the jobs'
by_root index answers a chain, and an object's triggers say what made (or did not make) its jobs."""

from __future__ import annotations

import pytest

from jobtriggers import wiring
from jobtriggers.dal.jobs import JobRepository
from jobtriggers.logic.outputs import output_lineage
from jobtriggers.models import Job, JobEventType, ObjectTypeAssignment, Transition, iso, job_id_for, utcnow
from tests.api_events import ApiCaller, drs_object_body, load_function, module_tables, unique, use_tables


@pytest.fixture(scope="module")
def api() -> ApiCaller:
    return ApiCaller(load_function("api"))


@pytest.fixture(scope="module")
def seeded(dynamo_endpoint: str) -> dict[str, str]:
    return module_tables(seed=True)


@pytest.fixture(autouse=True)
def _tables(seeded: dict[str, str]) -> None:
    use_tables(seeded)


def put(job: Job) -> Job:
    at = job.created_at
    assert JobRepository().create(job, Transition(events=[JobEventType.created], at=at, by="service"))
    return job


def test_a_jobs_lineage_comes_from_its_chain(api: ApiCaller) -> None:
    # Given a chain: readqc on a root, assembly on readqc's record, annotation on assembly's
    root = unique("seq")
    assignment = ObjectTypeAssignment(
        object_id=root, object_type_id="metagenome_sequencing_activity_set", assigned_at=iso(utcnow())
    )
    readqc = put(Job.new("readqc-1.0.6", root, "2025-01-01T00:00:00.000Z", lineage=assignment.lineage()))
    metag = put(Job.new("metag-1.0.0", root, "2025-01-01T00:00:00.001Z", lineage=assignment.lineage()))
    rec = unique("rqc")
    asm = put(
        Job.new(
            "mgasm-1.0.3",
            rec,
            "2025-01-01T00:01:00.000Z",
            lineage=output_lineage(readqc, [(rec, ["t"], None)]),
        )
    )
    asm_rec = unique("asm")
    ann = put(
        Job.new(
            "mgann-1.0.0",
            asm_rec,
            "2025-01-01T00:02:00.000Z",
            lineage=output_lineage(asm, [(asm_rec, ["t"], None)]),
        )
    )
    # When a site asks for the assembly job's lineage
    status, body = api("GET", "/jobs/{job_id}/lineage", {"job_id": asm.id})
    # Then its ancestor is reads QC, its descendant the annotation, each with status and duration
    assert status == 200, body
    assert body["root_object_id"] == root and body["job"]["id"] == asm.id
    assert [a["id"] for a in body["ancestors"]] == [readqc.id]
    assert [d["id"] for d in body["descendants"]] == [ann.id]
    assert body["descendants"][0]["parent_job_id"] == asm.id and body["descendants"][0]["status"] == "pending"
    assert body["job"]["duration_seconds"] > 0
    # And the whole chain, the root's other job included, is one by_root Query
    chain = wiring.lineage().chain(root)
    assert [j.id for j in chain.jobs] == [readqc.id, metag.id, asm.id, ann.id]
    # And an unknown job is 404; without a site, 401
    assert api("GET", "/jobs/{job_id}/lineage", {"job_id": job_id_for("nope", "nope")})[0] == 404
    assert api("GET", "/jobs/{job_id}/lineage", {"job_id": asm.id}, site_id=None)[0] == 401


def test_an_objects_triggers_say_which_jobs_there_are_and_why_not(api: ApiCaller) -> None:
    # Given an object tagged with the sequencing type and with a type that triggers nothing
    object_id = unique("seq")
    status, _ = api("POST", "/objects", body=drs_object_body(checksum=unique("c"), id=object_id))
    assert status == 201
    types = ["metagenome_sequencing_activity_set", "data_object_set"]
    assert api("PUT", "/objects/{object_id}/types", {"object_id": object_id}, body=types)[0] == 200
    # When its triggers are asked for before the trigger resolver ran
    status, body = api("GET", "/objects/{object_id}/triggers", {"object_id": object_id})
    assert status == 200, body
    by_type = {t["object_type_id"]: t for t in body["types"]}
    assert by_type["data_object_set"]["triggers"] == []
    assert "no trigger names object type 'data_object_set'" in by_type["data_object_set"]["explanation"]
    seq = {e["workflow_id"]: e for e in by_type["metagenome_sequencing_activity_set"]["triggers"]}
    assert set(seq) == {"readqc-1.0.6", "metag-1.0.0"}
    assert all(e["job"] is None and "no job yet" in e["explanation"] for e in seq.values())
    # Then once the stream's record is handled, each trigger names its job and status
    wiring.backfill_engine().resolve(
        next(a for a in wiring.assignments().types_of(object_id) if a.object_type_id == types[0])
    )
    status, body = api("GET", "/objects/{object_id}/triggers", {"object_id": object_id})
    seq = {e["workflow_id"]: e for e in body["types"][1]["triggers"]}
    assert seq["readqc-1.0.6"]["job"] == {
        "id": job_id_for("readqc-1.0.6", object_id),
        "workflow_id": "readqc-1.0.6",
        "status": "pending",
        "workflow_missing": False,
    }
    assert body["other_jobs"] == [] and "2 types, 2 triggers, 2 jobs" in body["summary"]
    # And an unknown object is 404
    assert api("GET", "/objects/{object_id}/triggers", {"object_id": unique("none")})[0] == 404
