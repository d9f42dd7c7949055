"""A realistic board: the NMDC registry's workflows from seed/, three sites, a day of the metagenome
chain's jobs (done, pending, claimed, failed, cancelled), one sample's whole chain with lineage, and
claims whose leases range from hours left to just ended. Times are relative to `now`."""

from __future__ import annotations

import base64
import hashlib
import json
import random
from datetime import datetime, timedelta
from pathlib import Path

from jobtriggers.board.port import JobError, JobEvent, OperationRow, Status
from tests.board.fake_board import FakeJob, InMemoryBoard

SEED = Path(__file__).resolve().parents[2] / "seed"
SITES = ["emsl", "jgi", "nersc"]

# workflow: (lease seconds, max attempts, {status: how many jobs, besides the ones written out below})
VOLUME: dict[str, tuple[int, int, dict[Status, int]]] = {
    "readqc-1.0.6": (3600, 3, {"done": 64, "pending": 7, "claimed": 2}),
    "mgasm-1.0.3": (4 * 3600, 3, {"done": 41, "pending": 12, "claimed": 1}),
    "mgrba-1.0.2": (2 * 3600, 3, {"done": 47, "pending": 3, "claimed": 1}),
    "mgann-1.0.0": (6 * 3600, 2, {"done": 22, "pending": 18, "claimed": 2, "cancelled": 1}),
    "mags-1.0.4": (2 * 3600, 2, {"done": 9, "pending": 4}),
    "metat-0.0.2": (3 * 3600, 3, {"done": 11, "cancelled": 2}),
}

CHAIN_ROOT = "nmdc:dobj-11-bn8jcq58"


def job_id(workflow_id: str, object_id: str) -> str:
    """Shaped like the service's ids: base64url of workflow#object."""
    return base64.urlsafe_b64encode(f"{workflow_id}#{object_id}".encode()).decode().rstrip("=")


def object_id(n: int, prefix: str = "dobj-11") -> str:
    digest = hashlib.sha256(f"{prefix}{n}".encode()).digest()
    alphabet = "0123456789abcdefghjkmnpqrstvwxyz"
    return f"nmdc:{prefix}-" + "".join(alphabet[b % 32] for b in digest[:8])


def registry_workflows() -> dict[str, str]:
    return {w["id"]: w["name"] for w in json.loads((SEED / "workflows.json").read_text())}


def nmdc_board(now: datetime, *, clock_now: bool = True) -> InMemoryBoard:
    """The board, whose clock is the real one (live pages tick) unless `clock_now` is False."""
    board = (
        InMemoryBoard(registry_workflows(), SITES)
        if clock_now
        else InMemoryBoard(registry_workflows(), SITES, clock=lambda: now)
    )
    rng = random.Random(11)
    n = 0

    def add(
        workflow_id: str,
        status: Status,
        *,
        age: timedelta,
        obj: str | None = None,
        site: str | None = None,
        attempts: int | None = None,
        parent_job_id: str | None = None,
        last_error: JobError | None = None,
    ) -> FakeJob:
        nonlocal n
        n += 1
        lease_seconds, max_attempts, _ = VOLUME.get(workflow_id, (3600, 3, {}))
        obj = obj or object_id(n)
        created = now - age
        job = FakeJob(
            id=job_id(workflow_id, obj),
            workflow_id=workflow_id,
            object_id=obj,
            status=status,
            created_at=created,
            updated_at=created,
            max_attempts=max_attempts,
            lease_seconds=lease_seconds,
            attempts=0,
            parent_job_id=parent_job_id,
            last_error=last_error,
        )
        job.events.append(JobEvent(type="created", at=created, detail={"trigger": f"{workflow_id} trigger"}))
        if status == "pending":
            return board.add(job)
        tries = attempts if attempts is not None else 1
        started = created + timedelta(minutes=rng.randint(1, 20))
        for attempt in range(1, tries + 1):
            site_id = site or rng.choice(SITES)
            last = attempt == tries
            op_start = started + timedelta(minutes=70 * (attempt - 1))
            run = timedelta(minutes=rng.randint(8, 55))
            live = last and status == "claimed"
            op = OperationRow(
                id=f"op-{hashlib.sha1(f'{job.id}{attempt}'.encode()).hexdigest()[:12]}",
                site_id=site_id,
                attempt=attempt,
                created_at=op_start,
                expires_at=op_start + timedelta(seconds=lease_seconds),
                done=not live,
                cancelled=last and status == "cancelled",
                result={"outputs": 3} if last and status == "done" else None,
                error=(job.last_error if last else JobError(code="lease_expired", message="no heartbeat"))
                if status == "failed"
                else None,
            )
            job.operations.append(op)
            job.events.append(
                JobEvent(type="claimed", at=op_start, detail={"site": site_id, "attempt": attempt})
            )
            job.site_id, job.attempts = site_id, attempt
            if live:
                job.lease_expires_at = op_start + timedelta(seconds=lease_seconds)
            elif status == "failed":
                job.events.append(
                    JobEvent(
                        type="failed",
                        at=op_start + run,
                        detail={"code": op.error.code if op.error else "", "attempt": attempt},
                    )
                )
            elif last and status == "done":
                job.duration_seconds = run.total_seconds()
                job.events.append(JobEvent(type="done", at=op_start + run, detail={"outputs": 3}))
            elif last and status == "cancelled":
                job.events.append(JobEvent(type="cancelled", at=op_start + run, detail={"by": "operator"}))
            job.updated_at = op_start + (run if not live else timedelta(0))
        return board.add(job)

    # one sample's whole chain, for the lineage tree: reads QC -> assembly and read-based analysis
    # -> annotation -> MAGs, whose last attempt failed
    qc = add("readqc-1.0.6", "done", age=timedelta(hours=20), obj=CHAIN_ROOT)
    asm = add(
        "mgasm-1.0.3", "done", age=timedelta(hours=19), obj=object_id(1, "dobj-13"), parent_job_id=qc.id
    )
    add("mgrba-1.0.2", "done", age=timedelta(hours=19), obj=object_id(2, "dobj-13"), parent_job_id=qc.id)
    ann = add(
        "mgann-1.0.0", "done", age=timedelta(hours=14), obj=object_id(3, "dobj-13"), parent_job_id=asm.id
    )
    add(
        "mags-1.0.4",
        "failed",
        age=timedelta(hours=9),
        obj=object_id(4, "dobj-13"),
        attempts=2,
        site="emsl",
        parent_job_id=ann.id,
        last_error=JobError(code="lease_expired", message="emsl sent no heartbeat for 2 h; the lease ended"),
    )

    # failures an operator would see overnight
    add(
        "mgasm-1.0.3",
        "failed",
        age=timedelta(hours=5),
        attempts=3,
        site="nersc",
        last_error=JobError(
            code="command_failed",
            message="metaSPAdes exited 137 (killed: out of memory, 118 GiB) after 3 h 12 m",
        ),
    )
    add(
        "readqc-1.0.6",
        "failed",
        age=timedelta(hours=4),
        attempts=3,
        site="jgi",
        last_error=JobError(
            code="input_unavailable",
            message="HTTP 404 for https://data.microbiomedata.org/data/nmdc:omprc-11-9q8e3t42/raw.fastq.gz",
        ),
    )

    # live claims: a lease with hours left, one about to end, one that just ended
    def set_lease(job: FakeJob, expires: datetime) -> None:
        op = job.operations[-1]
        job.lease_expires_at = expires
        job.operations[-1] = op.model_copy(
            update={"expires_at": expires, "created_at": expires - timedelta(seconds=job.lease_seconds)}
        )

    set_lease(
        add("mgasm-1.0.3", "claimed", age=timedelta(hours=8), site="nersc", attempts=2),
        now + timedelta(seconds=95),
    )
    set_lease(add("readqc-1.0.6", "claimed", age=timedelta(hours=2), site="jgi"), now - timedelta(seconds=40))

    for workflow_id, (lease_seconds, _, volume) in VOLUME.items():
        for status, how_many in volume.items():
            for _ in range(how_many):
                if status == "claimed":
                    job = add(workflow_id, status, age=timedelta(hours=rng.randint(5, 20)))
                    set_lease(
                        job, now + timedelta(seconds=rng.randint(lease_seconds // 4, lease_seconds - 60))
                    )
                elif status == "pending":
                    add(workflow_id, status, age=timedelta(minutes=rng.randint(2, 60 * 9)))
                else:  # done, cancelled: finished before now
                    add(workflow_id, status, age=timedelta(minutes=rng.randint(90, 60 * 22)))
    return board
