"""NMDC's metagenome chain end to end: one tag, and `jobtriggers site work` workers (the real CLI, one
per workflow) running a stand-in step (jobtriggers.local.chain_step) that registers every declared
output of its workflow. Each finished job's outputs start the next jobs by themselves, down to a
finished MAGs job; every job knows where it came from, every output which job made it.

Along the way: the reads QC completion's transaction loses its answer once (tests/faults.py
LOST_RESPONSE at the runtime's DynamoDB proxy) and is retried, creating nothing twice; afterwards a
completion with an undeclared output type is refused (422) with nothing written, and the worker
says why and fails the attempt.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from jobtriggers.local.runtime import LocalRuntime
from jobtriggers.logic.outputs import derived_object_id
from jobtriggers.models import job_id_for
from tests.e2e.conftest import SiteSession
from tests.e2e.test_worker import JOBTRIGGERS, site_env
from tests.faults import LOST_RESPONSE, FaultInjector

ROOT_TYPE = "metagenome_sequencing_activity_set"
CHAIN = ("readqc-1.0.6", "mgasm-1.0.3", "mgrba-1.0.2", "mgann-1.0.0", "mags-1.0.4")
# (workflow, its parent's workflow, the type of the parent's output that triggers it)
LINKS = {
    "readqc-1.0.6": (None, ROOT_TYPE),
    "mgasm-1.0.3": ("readqc-1.0.6", "read_qc_analysis_activity_set"),
    "mgrba-1.0.2": ("readqc-1.0.6", "read_qc_analysis_activity_set"),
    "mgann-1.0.0": ("mgasm-1.0.3", "metagenome_assembly_set"),
    "mags-1.0.4": ("mgann-1.0.0", "metagenome_annotation_activity_set"),
}
DECLARED_OUTPUTS = {
    "readqc-1.0.6": 4,
    "mgasm-1.0.3": 8,
    "mgrba-1.0.2": 11,
    "mgann-1.0.0": 26,
    "mags-1.0.4": 9,
}


def root_object(api: httpx.Client, site: SiteSession) -> str:
    body = {
        "name": "reads.fastq.gz",
        "size": 10_000,
        "checksums": [{"type": "sha256", "checksum": uuid.uuid4().hex}],
        "created_time": "2025-01-01T00:00:00Z",
        "access_methods": [{"access_url": {"url": "https://data.example.org/reads.fastq.gz"}}],
    }
    r = api.post("/objects", json=body, headers=site.headers)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def start_worker(env: dict[str, str], workflow_id: str, *command: str) -> subprocess.Popen[str]:
    step = command or (sys.executable, "-m", "jobtriggers.local.chain_step")
    return subprocess.Popen(
        [JOBTRIGGERS, "site", "work", "--workflow", workflow_id, "--wait", "0.3", "--json", "--", *step],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop(workers: dict[str, subprocess.Popen[str]]) -> dict[str, tuple[str, str]]:
    for w in workers.values():
        w.terminate()  # SIGTERM: the worker stops as on Ctrl-C (it is idle, polling)
    return {wf: w.communicate(timeout=60) for wf, w in workers.items()}


def lineage(api: httpx.Client, site: SiteSession, job_id: str) -> dict[str, Any]:
    r = api.get(f"/jobs/{job_id}/lineage", headers=site.headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


def wait_for_chain(api: httpx.Client, site: SiteSession, first_job: str, timeout: float) -> dict[str, Any]:
    """The first job's lineage once every job of the chain is done (or the timeout passed)."""
    deadline = time.monotonic() + timeout
    while True:
        r = api.get(f"/jobs/{first_job}/lineage", headers=site.headers)
        if r.status_code == 200:
            seen = {d["workflow_id"]: d["status"] for d in [r.json()["job"], *r.json()["descendants"]]}
            if all(seen.get(wf) == "done" for wf in CHAIN) or time.monotonic() > deadline:
                return dict(r.json())
        elif time.monotonic() > deadline:
            raise AssertionError(f"no lineage for {first_job}: {r.status_code} {r.text}")
        time.sleep(0.3)


def test_one_tag_runs_the_nmdc_chain_to_a_finished_mags_job_with_lineage(
    local_runtime: LocalRuntime, api: httpx.Client, new_site: Callable[..., SiteSession], tmp_path: Path
) -> None:
    # Given a site running one `site work` worker per workflow of the chain
    site = new_site()
    env = site_env(local_runtime, site, tmp_path)
    root = root_object(api, site)
    first_job = job_id_for("readqc-1.0.6", root)
    # And the reads QC completion's transaction set to lose its answer once
    lost_once = FaultInjector(
        rate=1.0,
        kinds=[LOST_RESPONSE],
        operations={"TransactWriteItems"},
        only_if_body_contains=["was_generated_by", first_job],
        max_faults=1,
    )
    with lost_once.attached(local_runtime.proxy):
        workers = {wf: start_worker(env, wf) for wf in CHAIN}
        try:
            # When the sequencing object is tagged
            r = api.put(f"/objects/{root}/types", json=[ROOT_TYPE], headers=site.headers)
            assert r.status_code == 200, r.text
            # Then the chain runs by itself to a finished MAGs job
            chain = wait_for_chain(api, site, first_job, timeout=180)
        finally:
            outcomes = stop(workers)
    reported = {
        wf: [json.loads(line) for line in out.splitlines() if line.strip()]
        for wf, (out, _) in outcomes.items()
    }
    jobs = {j["workflow_id"]: j for j in [chain["job"], *chain["descendants"]]}
    assert {wf: jobs[wf]["status"] for wf in CHAIN if wf in jobs} == dict.fromkeys(CHAIN, "done"), outcomes
    assert chain["ancestors"] == [] and chain["root_object_id"] == root

    # Every job's lineage: its parent, its object (an output of the parent, of the linking type), its root
    full: dict[str, dict[str, Any]] = {}
    for wf in CHAIN:
        r = api.get(f"/jobs/{jobs[wf]['id']}", headers=site.headers)
        assert r.status_code == 200
        full[wf] = r.json()
    for wf, (parent_wf, link_type) in LINKS.items():
        config = full[wf]["config"]
        assert config["root_object_id"] == root
        if parent_wf is None:
            assert config["parent_job_id"] is None and config["object_id"] == root
            continue
        parent = full[parent_wf]
        assert config["parent_job_id"] == parent["id"]
        assert config["object_id"] in [o["object_id"] for o in parent["outputs"]]
        r = api.get(f"/objects/{config['object_id']}", headers=site.headers)
        assert r.json()["types"] == [link_type]
        # inputs: the root, then every output of every ancestor, each with its workflow and name
        made_by = [i["job_id"] for i in config["inputs"]]
        assert made_by[0] is None and config["inputs"][0]["object_id"] == root
        assert config["object_id"] in [i["object_id"] for i in config["inputs"]]
    mags_inputs = full["mags-1.0.4"]["config"]["inputs"]
    assert Counter(i["workflow_id"] for i in mags_inputs) == {
        None: 1,
        "readqc-1.0.6": 4,
        "mgasm-1.0.3": 8,
        "mgann-1.0.0": 26,
    }
    named = {(i["workflow_id"], i["output_name"]): i for i in mags_inputs}
    assert named[("mgasm-1.0.3", "sr_contig")]["types"] == ["data_object_set"]
    assert named[("mgasm-1.0.3", "sr_bam")] in full["mgasm-1.0.3"]["outputs"]
    assert named[("mgann-1.0.0", "functional_gff")]["job_id"] == full["mgann-1.0.0"]["id"]

    # Every output exists once and records the job that made it; every job registered all of its
    for wf in CHAIN:
        outputs = [o["object_id"] for o in full[wf]["outputs"]]
        assert len(outputs) == len(set(outputs)) == DECLARED_OUTPUTS[wf]
        for object_id in outputs:
            r = api.get(f"/objects/{object_id}", headers=site.headers)
            assert r.status_code == 200 and r.json()["was_generated_by"] == full[wf]["id"]
    # And each worker ran its one job once; the root's other job (metag-1.0.0, no worker) waits
    assert {wf: [x["status"] for x in reported[wf]] for wf in CHAIN} == {wf: ["done"] for wf in CHAIN}
    r = api.get(f"/jobs/{job_id_for('metag-1.0.0', root)}", headers=site.headers)
    assert r.json()["status"] == "pending" and r.json()["config"]["root_object_id"] == root

    # The lost answer: the completion's transaction was applied once, its answer lost, and botocore's
    # retry (the same ClientRequestToken) was answered with success: one done, nothing twice
    assert lost_once.faults[LOST_RESPONSE] == 1
    events = [e["detail-type"] for e in local_runtime.events(first_job)]
    assert events == ["job.created", "job.claimed", "job.done"]

    # The tree, as an operator draws it
    tree = subprocess.run(
        [JOBTRIGGERS, "jobs", "tree", root, "--endpoint-url", local_runtime.dynamodb_endpoint, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, **local_runtime.tables},
    )
    assert tree.returncode == 0, tree.stderr
    drawn = json.loads(tree.stdout)
    by_id = {j["id"]: j for j in drawn["jobs"]}
    assert {j["workflow_id"] for j in drawn["jobs"]} == {*CHAIN, "metag-1.0.0"}
    for wf, (parent_wf, _) in LINKS.items():
        node = by_id[full[wf]["id"]]
        assert node["parent_job_id"] == (full[parent_wf]["id"] if parent_wf else None)
        assert node["status"] == "done" and node["duration_seconds"] is not None
    text = subprocess.run(
        [JOBTRIGGERS, "jobs", "tree", root, "--endpoint-url", local_runtime.dynamodb_endpoint],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, **local_runtime.tables, "COLUMNS": "200"},
    ).stdout
    lines = text.splitlines()
    position = {wf: next(i for i, line in enumerate(lines) if wf in line) for wf in (*CHAIN, "metag-1.0.0")}
    indent = {wf: lines[i].index(wf) for wf, i in position.items()}
    # readqc and metag hang from the root; assembly and read-based analysis from readqc; and so on
    assert indent["readqc-1.0.6"] == indent["metag-1.0.0"] < indent["mgasm-1.0.3"] == indent["mgrba-1.0.2"]
    assert indent["mgasm-1.0.3"] < indent["mgann-1.0.0"] < indent["mags-1.0.4"]
    assert (
        position["readqc-1.0.6"] < position["mgasm-1.0.3"] < position["mgann-1.0.0"] < position["mags-1.0.4"]
    )
    assert all("done" in lines[position[wf]] for wf in CHAIN) and "pending" in lines[position["metag-1.0.0"]]


BAD_STEP = (
    "import json, sys\n"
    "job = json.load(sys.stdin)\n"
    "out = {'name': 'contigs.fna', 'size': 1, 'created_time': '2025-01-01T00:00:00Z',\n"
    "       'checksums': [{'type': 'sha256', 'checksum': job['id']}],\n"
    "       'access_methods': [{'access_url': {'url': 'https://data.example.org/c.fna'}}],\n"
    "       'types': ['metagenome_assembly_set']}\n"
    "print(json.dumps({'outputs': [out]}))\n"
)
BAD_COMMAND = (sys.executable, "-c", BAD_STEP)


def test_an_undeclared_output_type_is_refused_the_worker_says_why_and_nothing_is_written(
    local_runtime: LocalRuntime, api: httpx.Client, new_site: Callable[..., SiteSession], tmp_path: Path
) -> None:
    # Given a tagged sequencing object and a reads QC step that claims to have made an assembly
    site = new_site()
    env = site_env(local_runtime, site, tmp_path)
    root = root_object(api, site)
    assert api.put(f"/objects/{root}/types", json=[ROOT_TYPE], headers=site.headers).status_code == 200
    assert local_runtime.wait_for_stream(10)
    job_id = job_id_for("readqc-1.0.6", root)
    # When a worker runs it on the job (its only claimable reads QC job: others ran to done)
    proc = subprocess.run(
        [JOBTRIGGERS, "site", "work", "--workflow", "readqc-1.0.6", "--once", "--json", "--", *BAD_COMMAND],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    # Then the worker says, readably, that the API refused the result, and fails the attempt
    assert proc.returncode == 0, proc.stderr
    [outcome] = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert outcome["job_id"] == job_id and outcome["status"] == "error"
    assert outcome["result"]["code"] == "result_rejected"
    assert "outputs.0.types: object types metagenome_assembly_set are not among the outputs" in proc.stderr
    job = api.get(f"/jobs/{job_id}", headers=site.headers).json()
    assert job["status"] == "pending" and job["last_error"]["code"] == "result_rejected"
    assert "metagenome_assembly_set" in job["last_error"]["message"] and job["outputs"] == []
    # And nothing of it was written: no output object, no job of the next step
    op_id = outcome["operation_id"]
    assert api.get(f"/objects/{derived_object_id(op_id, 0)}", headers=site.headers).status_code == 404
    assert local_runtime.wait_for_stream(10)
    r = api.get(f"/jobs/{job_id}/lineage", headers=site.headers)
    assert r.status_code == 200 and r.json()["descendants"] == []
