"""Figure 7: chain overhead. How long after a job's completion the next job of its chain exists (is
claimable), next to how long after a tag a job exists, in the same run.

A fresh LocalRuntime (the stream poller at the template's settings and 4 polls a second, the HTTP
gateway, each function in worker processes of its own). N sequencing objects are tagged
(`PUT /objects/{id}/types`) and each runs NMDC's metagenome chain (reads QC, then assembly and
read-based analysis, then annotation, then MAGs), `concurrency` chains at a time. The driver is a
site over HTTP: it claims each job by id (`POST /jobs/{id}:claim`) as soon as the job exists and
completes it with all of its workflow's declared outputs (`PATCH /operations/{id}`, result.outputs).
It watches for the next job with consistent reads of the jobs table; that watching is the driver's,
not the service's, and does not enter the figures, which are taken from the service's own stamps:

- tag -> job: the first job's `created_at` minus its `tagged_at` (its assignment's `assigned_at`);
- completion -> next job: the next job's `created_at` minus its parent's `finished_at` (the
  completion's transaction stamps `finished_at` and its outputs' `assigned_at` alike).

Both go the same way (an assignment's stream record -> TriggerResolver -> a conditional put): the
chain adds no polling of its own, only the completion's outputs in that transaction. A job exists
claimable once put: a claim by id reads the table (on AWS, claim-next's index may add its lag).
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bench.common import percentile, progress, step

ROOT_TYPE = "metagenome_sequencing_activity_set"
FIRST = "readqc-1.0.6"
CHAIN = ("readqc-1.0.6", "mgasm-1.0.3", "mgrba-1.0.2", "mgann-1.0.0", "mags-1.0.4")
QS = ("p50", "p95", "p99")


@dataclass(frozen=True)
class ChainConfig:
    chains: int = 50
    concurrency: int = 4
    poll_interval: float = 0.25
    watch_interval: float = 0.01  # the driver's reads of the jobs table while it waits for a job
    repetitions: int = 1


def _epoch(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def _quantiles(values: list[float]) -> dict[str, float]:
    return {q: percentile(values, float(q[1:])) for q in QS}


class Driver:
    """Runs chains over HTTP as a site would, and notes the service's stamps of each link."""

    def __init__(self, runtime: Any, creds: dict[str, str], config: ChainConfig) -> None:
        from jobtriggers.client import SiteClient
        from jobtriggers.dal.jobs import JobRepository
        from jobtriggers.dal.registry import RegistryRepository
        from jobtriggers.logic.chains import chain_links

        self.runtime = runtime
        self.config = config
        self.jobs = JobRepository(runtime.tables["JOBS_TABLE"], runtime.tables["OPERATIONS_TABLE"])
        registry = RegistryRepository(runtime.tables["REGISTRY_TABLE"])
        self.workflows = {wf: registry.workflow(wf) for wf in CHAIN}
        links = chain_links(self.workflows.values(), registry.all_triggers())
        # per workflow: (position of the output whose type starts the next workflow, that workflow)
        self.next: dict[str, list[tuple[int, str]]] = {}
        for wf, pairs in links.items():
            positions: dict[str, int] = {}
            for i, out in enumerate(self.workflows[wf].outputs):
                for t in out.object_types:
                    positions.setdefault(t, i)
            self.next[wf] = [(positions[t], nxt) for t, nxt in pairs if nxt in self.workflows]
        self._local = threading.local()
        self._creds = creds
        self._client_cls = SiteClient
        self.lock = threading.Lock()
        self.tag_to_job_ms: list[float] = []
        self.completion_to_job_ms: dict[str, list[float]] = defaultdict(list)
        # As a site sees it: from the answer to its request (the tag, the completion) to the job
        # being there to claim, watched every `watch_interval`.
        self.tag_seen_ms: list[float] = []
        self.completion_seen_ms: list[float] = []
        self.outputs = 0
        self.jobs_run = 0

    def client(self) -> Any:
        if not hasattr(self._local, "client"):
            self._local.client = self._client_cls(
                self.runtime.base_url, self._creds["client_id"], self._creds["client_secret"], timeout=60
            )
        return self._local.client

    def wait_for_all(self, job_ids: list[str], timeout: float = 60.0) -> dict[str, tuple[Any, float]]:
        """Each job once it exists, and when the driver first saw it (time.time())."""
        deadline = time.monotonic() + timeout
        seen: dict[str, tuple[Any, float]] = {}
        while len(seen) < len(job_ids):
            for job_id in job_ids:
                if job_id not in seen:
                    job = self.jobs.find(job_id)
                    if job is not None:
                        seen[job_id] = (job, time.time())
            if len(seen) < len(job_ids):
                if time.monotonic() > deadline:
                    missing = sorted(set(job_ids) - set(seen))
                    raise RuntimeError(
                        f"jobs {missing} did not appear within {timeout:.0f}s: {self.runtime.stats()}"
                    )
                time.sleep(self.config.watch_interval)
        return seen

    def run_chain(self, root: str) -> None:
        """Tag `root`, then run each job as soon as it exists: claim it, complete it with all its
        declared outputs, and wait for the jobs its outputs start (all of them at once, so that
        each is seen as soon as it exists)."""
        from jobtriggers.local.chain_step import plausible_outputs
        from jobtriggers.logic.outputs import derived_object_id
        from jobtriggers.models import job_id_for

        api = self.client()
        r = api.request("PUT", f"/objects/{root}/types", json=[ROOT_TYPE])
        assert r.status_code == 200, r.text
        answered = time.time()
        first = job_id_for(FIRST, root)
        [(job, seen)] = self.wait_for_all([first]).values()
        with self.lock:
            self.tag_to_job_ms.append((_epoch(job.created_at) - _epoch(job.tagged_at)) * 1000)
            self.tag_seen_ms.append((seen - answered) * 1000)
        todo = [job]
        while todo:
            job = todo.pop(0)
            op = api.claim(job.id)
            outputs = plausible_outputs(self.workflows[job.workflow_id], op.metadata["job"])
            api.complete(op.id, {"outputs": outputs})
            answered = time.time()
            nxt = [
                job_id_for(wf, derived_object_id(op.id, position))
                for position, wf in self.next[job.workflow_id]
            ]
            children = self.wait_for_all(nxt) if nxt else {}
            done = self.jobs.get(job.id)
            assert done.finished_at, f"job {job.id} is {done.status}, not done"
            with self.lock:
                self.outputs += len(outputs)
                self.jobs_run += 1
                for child, child_seen in children.values():
                    link = f"{job.workflow_id} -> {child.workflow_id}"
                    delay = (_epoch(child.created_at) - _epoch(done.finished_at)) * 1000
                    self.completion_to_job_ms[link].append(delay)
                    self.completion_seen_ms.append((child_seen - answered) * 1000)
            todo += [child for child, _ in children.values()]

    def run(self, roots: list[str]) -> float:
        queue = list(roots)
        errors: list[BaseException] = []

        def work() -> None:
            try:
                while True:
                    with self.lock:
                        if not queue or errors:
                            return
                        root = queue.pop(0)
                    self.run_chain(root)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(self.config.concurrency)]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return time.perf_counter() - started


def _root_objects(runtime: Any, n: int, run_no: int) -> list[str]:
    from bench.common import backend_put
    from jobtriggers.dal.objects import object_pk
    from jobtriggers.logic.objects import object_from_request
    from jobtriggers.models import DrsObjectIn

    ids = [f"chain{run_no}-{i:04d}" for i in range(n)]
    items = []
    for object_id in ids:
        body = DrsObjectIn.model_validate(
            {
                "id": object_id,
                "name": f"{object_id}.fastq.gz",
                "size": 1024,
                "created_time": "2025-01-01T00:00:00Z",
                "checksums": [{"type": "sha256", "checksum": uuid.uuid4().hex}],
                "access_methods": [{"access_url": {"url": f"https://data.example.org/{object_id}.fastq.gz"}}],
            }
        )
        obj = object_from_request(body, "bench-chain", "localhost")
        items.append({"pk": object_pk(obj.id), **obj.model_dump(mode="json", exclude={"types"})})
    backend_put(runtime.tables["OBJECTS_TABLE"], items)
    return ids


def one_run(config: ChainConfig, run_no: int) -> dict[str, Any]:
    from jobtriggers.local.runtime import LocalConfig, LocalRuntime

    runtime = LocalRuntime(
        LocalConfig(
            port=0,
            dynamodb_port=0,
            poll_interval=config.poll_interval,
            table_prefix=f"chain{run_no}",
            echo_function_logs=False,  # the functions' log lines would bury the run's progress
        )
    )
    runtime.start(restore_environment=True)
    try:
        creds = runtime.create_site(f"bench-chain-{run_no}")
        roots = _root_objects(runtime, config.chains, run_no)
        driver = Driver(runtime, creds, config)
        # Warm-up: a warm API and authorizer worker per driver thread, as Lambda's would be.
        from jobtriggers.local.template import authorizer_function

        for function in ("ApiFunction", authorizer_function(runtime.template)):
            if function and runtime.pool:
                runtime.pool.provision(function, config.concurrency)
        with step(f"chain run {run_no}: {config.chains} chains, {config.concurrency} at a time"):
            seconds = driver.run(roots)
        runtime.wait_for_stream(timeout=30)
        dlq = len(runtime.dlq)
    finally:
        runtime.stop()
    links = [v for values in driver.completion_to_job_ms.values() for v in values]
    tag = _quantiles(driver.tag_to_job_ms)
    chain = _quantiles(links)
    out = {
        "seconds": seconds,
        "jobs_run": driver.jobs_run,
        "outputs_registered": driver.outputs,
        "tag_to_job_ms": tag,
        "completion_to_job_ms": chain,
        "overhead_ms": {q: chain[q] - tag[q] for q in QS},
        "site_view": {
            "tag_to_claimable_ms": _quantiles(driver.tag_seen_ms),
            "completion_to_claimable_ms": _quantiles(driver.completion_seen_ms),
        },
        "by_link_p50_ms": {k: percentile(v, 50) for k, v in sorted(driver.completion_to_job_ms.items())},
        "samples": {"tag_to_job": len(driver.tag_to_job_ms), "completion_to_job": len(links)},
        "dlq": dlq,
    }
    progress(
        f"  run {run_no}: tag->job p50/p99 {tag['p50']:.0f}/{tag['p99']:.0f} ms, completion->next job "
        f"p50/p99 {chain['p50']:.0f}/{chain['p99']:.0f} ms ({len(links)} links, {driver.outputs} outputs)"
    )
    return out


def run(config: ChainConfig) -> dict[str, Any]:
    from bench.common import summarize

    runs = [one_run(config, i + 1) for i in range(config.repetitions)]
    return {
        "measured": True,
        "config": dataclasses.asdict(config),
        "tag_to_job_ms": {q: summarize([r["tag_to_job_ms"][q] for r in runs]) for q in QS},
        "completion_to_job_ms": {q: summarize([r["completion_to_job_ms"][q] for r in runs]) for q in QS},
        "overhead_ms": {q: summarize([r["overhead_ms"][q] for r in runs]) for q in QS},
        "site_view": {
            name: {q: summarize([r["site_view"][name][q] for r in runs]) for q in QS}
            for name in ("tag_to_claimable_ms", "completion_to_claimable_ms")
        },
        "jobs_run": sum(r["jobs_run"] for r in runs),
        "outputs_registered": sum(r["outputs_registered"] for r in runs),
        "dead_letters": sum(r["dlq"] for r in runs),
        "notes": [
            "Completion -> next job and tag -> job take the same path (an assignment's stream record, "
            "TriggerResolver, a conditional put): the next job is made by the stream record of the "
            "output's assignment, which the completion's transaction wrote. No scheduler and no "
            "polling of the service's own is involved; the driver's reads only watch for the job.",
            "Each completion registers every declared output of its workflow (4 to 26 objects, one "
            "checksum each: up to 80 items in one transaction for annotation).",
            f"{config.concurrency} chains run at a time (the driver claims and completes each job as "
            "soon as it exists), so both figures are taken under the same load.",
            "The service's stamps: a completion stamps `finished_at` when it starts its work, before "
            "its transaction (up to 80 items) is written, so completion -> next job includes that "
            "write; a tag stamps `assigned_at` just before its one-item transaction. The site's view "
            "measures from the answer to the request (the tag, the completion) to the job being "
            f"readable, the driver looking every {config.watch_interval * 1000:.0f} ms.",
        ],
        "runs": runs,
    }
