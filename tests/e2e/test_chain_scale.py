"""Many chains at once: CHAIN_ROOTS (50) sequencing objects tagged together, each running NMDC's
chain to a finished MAGs job, with 4 workers per workflow. Every job runs exactly once and every
output object exists exactly once; and so under 20 % injected DynamoDB faults (tests/faults.py), on
the functions' calls (the trigger resolver's job puts, the job events) at the runtime's proxy and
on the workers' own calls (their claims and completion transactions) in this process.

The workers are service-level (ClaimService in threads, each its own site, as `site work` would
be; HTTP would make the run minutes longer on 2 shared cores without testing anything more of the
chain, which tests/e2e/test_chain.py runs through `site work`). A worker acts as a careful site:
a claim that failed past the store's retries may have been applied with its answer lost, so it
asks which jobs it holds and resumes them (a holder claiming again gets its operation back); a
completion that failed is sent again until answered (the same completion, repeated, is answered
as the first). To keep the store small (moto copies the tables a transaction touches), each job
registers two of its workflow's declared outputs: its record (the type that starts the next link)
and one file.
"""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from jobtriggers import wiring
from jobtriggers.dal.dynamo import dynamodb
from jobtriggers.errors import ConflictError, JobTriggersError
from jobtriggers.local.chain_step import plausible_outputs
from jobtriggers.local.runtime import LocalRuntime
from jobtriggers.logic.claims import Report, SiteRef
from jobtriggers.models import DrsObjectIn, Job, OperationRecord, Workflow, job_id_for
from tests.faults import FaultInjector, fast_backoff

# About three and a half minutes each on 2 shared cores (the embedded DynamoDB serves one request
# at a time).
pytestmark = pytest.mark.slow

ROOTS = int(os.environ.get("CHAIN_ROOTS", "50"))
WORKERS_PER_WORKFLOW = 4
CHAIN = ("readqc-1.0.6", "mgasm-1.0.3", "mgrba-1.0.2", "mgann-1.0.0", "mags-1.0.4")
# What each job registers: its record (which starts the next link) and one file
REGISTERED = {
    "readqc-1.0.6": ("workflow_execution", "filtered_final"),
    "mgasm-1.0.3": ("workflow_execution", "sr_contig"),
    "mgrba-1.0.2": ("workflow_execution", "final_gottcha2_report_tsv"),
    "mgann-1.0.0": ("workflow_execution", "functional_gff"),
    "mags-1.0.4": ("workflow_execution", "final_hqmq_bins_zip"),
}
ROOT_TYPE = "metagenome_sequencing_activity_set"
IDLE_PAUSE_MAX = 2.0


@pytest.fixture(scope="module")
def local_runtime(local_runtime: LocalRuntime) -> Iterator[LocalRuntime]:
    """A runtime of this module's own (its own tables on the session's DynamoDB), stopped after it:
    a hundred chains leave thousands of job transitions on the jobs stream, and the session's
    runtime would still be publishing their events minutes into the tests after this one."""
    from jobtriggers.local.runtime import LocalConfig

    runtime = LocalRuntime(
        LocalConfig(
            host="127.0.0.1",
            port=0,
            dynamodb_endpoint=local_runtime.dynamodb_endpoint,
            table_prefix=f"chn{uuid.uuid4().hex[:8]}",
            echo_function_logs=False,  # thousands of lines; the runtime keeps them (runtime.logs)
        )
    )
    runtime.start(restore_environment=True)  # the session runtime's environment comes back after
    yield runtime
    runtime.stop()


@pytest.fixture(autouse=True)
def _compressed_backoff() -> Iterator[None]:
    with fast_backoff():
        yield


@dataclass
class Fleet:
    """The workers' shared notes: which operations ran each job, and what went wrong where."""

    runs: dict[str, set[str]] = field(default_factory=dict)
    completions: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def ran(self, job_id: str, op_id: str) -> None:
        with self.lock:
            self.runs.setdefault(job_id, set()).add(op_id)

    def note(self, counter: Counter[str], key: str) -> None:
        with self.lock:
            counter[key] += 1


def _next_operation(site: SiteRef, workflow: Workflow, fleet: Fleet) -> OperationRecord | None:
    """The next job's operation: a claim, or a job this site holds already (a claim whose answer
    was lost past the retries went through all the same)."""
    claims = wiring.claim_service()
    try:
        return claims.claim_next(site, workflow.id)
    except JobTriggersError as exc:
        fleet.note(fleet.errors, f"claim {type(exc).__name__}")
    try:
        held, _ = wiring.jobs().list_page(site_id=site.id, status="claimed", limit=10)
        return claims.claim(held[0].id, site).operation if held else None
    except JobTriggersError as exc:
        fleet.note(fleet.errors, f"resume {type(exc).__name__}")
        return None


def _complete(site: SiteRef, op: OperationRecord, result: dict[str, Any], fleet: Fleet) -> None:
    """The same completion until it is answered."""
    report = Report(done=True, result=result, result_sent=True, host="localhost")
    while True:
        try:
            wiring.claim_service().update_operation(op.id, site, report)
            fleet.note(fleet.completions, op.job_id)
            return
        except ConflictError as exc:
            fleet.note(fleet.errors, f"complete 409 {exc.detail}")
            return
        except JobTriggersError as exc:
            fleet.note(fleet.errors, f"complete {type(exc).__name__}")
            time.sleep(0.05)


def run_worker(site: SiteRef, workflow: Workflow, fleet: Fleet) -> None:
    """One worker: claim the next job of `workflow`, "run" it, complete it with its outputs."""
    idle = 0.1
    while not fleet.stop.is_set():
        op = _next_operation(site, workflow, fleet)
        if op is None:  # nothing to do: ask again, less often the longer it stays so
            time.sleep(random.uniform(idle / 2, idle))
            idle = min(idle * 2, IDLE_PAUSE_MAX)
            continue
        idle = 0.1
        job = op.metadata["job"]
        fleet.ran(job["id"], op.id)
        result = {"outputs": plausible_outputs(workflow, job, names=list(REGISTERED[workflow.id]))}
        _complete(site, op, result, fleet)


def tag_roots(n: int) -> list[str]:
    """`n` sequencing objects, registered and tagged as a site would (in this process, to the store)."""
    from jobtriggers.logic.objects import object_from_request

    roots = []
    for _ in range(n):
        body = DrsObjectIn.model_validate(
            {
                "name": "reads.fastq.gz",
                "size": 1,
                "checksums": [{"type": "sha256", "checksum": uuid.uuid4().hex}],
                "created_time": "2025-01-01T00:00:00Z",
                "access_methods": [{"access_url": {"url": "https://data.example.org/r"}}],
            }
        )
        obj = object_from_request(body, "scale-tagger", "localhost")
        wiring.objects().create(obj)
        roots.append(obj.id)
    for root in roots:
        wiring.object_tagger().replace(root, [ROOT_TYPE], by="scale-tagger")
    return roots


def chains_of(roots: list[str]) -> dict[str, list[Job]]:
    lineage = wiring.chains()
    return {root: lineage.jobs_of_root(root) for root in roots}


def run_chains(timeout: float) -> tuple[list[str], dict[str, list[Job]], Fleet, float]:
    workflows = {wf: wiring.registry().workflow(wf) for wf in CHAIN}
    fleet = Fleet()
    run = uuid.uuid4().hex[:6]
    threads = [
        threading.Thread(
            target=run_worker,
            args=(SiteRef.of(f"scale-{run}-{wf}-{i}"), workflows[wf], fleet),
            daemon=True,
        )
        for wf in CHAIN
        for i in range(WORKERS_PER_WORKFLOW)
    ]
    for t in threads:
        t.start()
    started = time.monotonic()
    try:
        roots = tag_roots(ROOTS)
        deadline = started + timeout
        # The workers count what they completed (reading the chains every few seconds would cost
        # the single-process store as much as the work); the tables are read once it adds up.
        expected = ROOTS * len(CHAIN)
        while sum(fleet.completions.values()) < expected and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        fleet.stop.set()
        for t in threads:
            t.join(timeout=60)
    seconds = time.monotonic() - started
    return roots, chains_of(roots), fleet, seconds


def check_every_job_and_output_once(roots: list[str], chains: dict[str, list[Job]], fleet: Fleet) -> None:
    chain_jobs = [j for jobs in chains.values() for j in jobs if j.workflow_id in CHAIN]
    # Every root has one job of each workflow of the chain, done, and its metag job waits (no worker)
    for root, jobs in chains.items():
        assert Counter(j.workflow_id for j in jobs) == {**dict.fromkeys(CHAIN, 1), "metag-1.0.0": 1}, root
        assert {j.workflow_id: j.status.value for j in jobs if j.workflow_id in CHAIN} == dict.fromkeys(
            CHAIN, "done"
        )
    # Each ran exactly once: one operation ran it, one claim, one attempt, one completion answered
    assert len(chain_jobs) == ROOTS * len(CHAIN)
    assert {j: len(ops) for j, ops in fleet.runs.items()} == {j.id: 1 for j in chain_jobs}, fleet.errors
    assert fleet.completions == Counter({j.id: 1 for j in chain_jobs}), fleet.errors
    assert all(j.attempts == 1 and len(j.claims) == 1 for j in chain_jobs)
    # Every output exists once, made by its job, and started exactly the jobs its record's type triggers
    objects, assignments = wiring.objects(), wiring.assignments()
    outputs = [(j, o.object_id) for j in chain_jobs for o in j.outputs]
    assert len(outputs) == len({o for _, o in outputs}) == ROOTS * len(CHAIN) * 2
    for job, object_id in outputs:
        assert objects.get(object_id).was_generated_by == job.id
        assert len(assignments.types_of(object_id)) == 1
    by_id = {j.id: j for j in chain_jobs}
    for job in chain_jobs:
        if job.parent_job_id is not None:
            assert job.object_id in [o.object_id for o in by_id[job.parent_job_id].outputs]
    for root in roots:
        assert by_id[job_id_for("readqc-1.0.6", root)].parent_job_id is None


@pytest.mark.timeout(900)
def test_many_chains_run_every_job_and_output_exactly_once(local_runtime: LocalRuntime) -> None:
    roots, chains, fleet, seconds = run_chains(timeout=600)
    local_runtime.wait_for_stream(30)
    print(
        f"\n{ROOTS} chains, {WORKERS_PER_WORKFLOW} workers per workflow: {seconds:.1f}s; {dict(fleet.errors)}"
    )
    check_every_job_and_output_once(roots, chains, fleet)
    assert local_runtime.dlq == []


@pytest.mark.timeout(900)
def test_many_chains_run_every_job_and_output_exactly_once_under_faults(local_runtime: LocalRuntime) -> None:
    with FaultInjector(rate=0.2, seed=12).attached(local_runtime.proxy, dynamodb()) as faults:
        roots, chains, fleet, seconds = run_chains(timeout=600)
        summary: dict[str, Any] = faults.summary()
    local_runtime.wait_for_stream(30)
    print(f"\n{ROOTS} chains under 20 % faults: {seconds:.1f}s; faults {summary}; {dict(fleet.errors)}")
    check_every_job_and_output_once(roots, chains, fleet)
    assert faults.by_operation["TransactWriteItems"] > 0 and faults.by_operation["PutItem"] > 0
    assert local_runtime.dlq == []
