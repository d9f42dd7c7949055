"""Lineage: where a job comes from, and what came of it.

A chained job's config says where it comes from (`parent_job_id`, `root_object_id`, `inputs`,
given at its creation from the stream record of its object's assignment), and every job of a chain
shares its `root_object_id`. So a chain is one Query (`by_root`), and a job's ancestors and
descendants are walks over it through `parent_job_id`, with no read per link. Only a parent the
index does not show yet (it lags its table by a moment) is read on its own.

`LineageService.chain(root)` is what `jobtriggers jobs tree` draws and the board's chain view
reads; `LineageService.lineage(job_id)` is GET /jobs/{id}/lineage and the board's job page.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from jobtriggers.errors import NotFoundError
from jobtriggers.models import FINISHED, Job, utcnow
from jobtriggers.models.lineage import Chain, ChainJob, JobLineage


class JobLookup(Protocol):
    def find(self, job_id: str, consistent: bool = True) -> Job | None: ...


class ChainStore(Protocol):
    def jobs_of_root(self, root_object_id: str) -> list[Job]: ...


def _seconds_between(start: str, end: str | datetime) -> float | None:
    try:
        begin = datetime.fromisoformat(start.replace("Z", "+00:00"))
        finish = end if isinstance(end, datetime) else datetime.fromisoformat(end.replace("Z", "+00:00"))
    except ValueError:
        return None
    return round(max((finish - begin).total_seconds(), 0.0), 3)


def chain_job(job: Job, now: datetime) -> ChainJob:
    """A job as a chain shows it: how long it took from its creation to its end (to now while it is
    not finished)."""
    end: str | datetime = job.finished_at if job.status in FINISHED and job.finished_at else now
    return ChainJob(
        id=job.id,
        workflow_id=job.workflow_id,
        object_id=job.object_id,
        parent_job_id=job.parent_job_id,
        root_object_id=job.root_object_id,
        status=job.status,
        created_at=job.created_at,
        finished_at=job.finished_at,
        duration_seconds=_seconds_between(job.created_at, end),
        site_id=job.site_id,
        attempts=job.attempts,
        outputs=[o.object_id for o in job.outputs],
    )


class LineageService:
    def __init__(self, jobs: JobLookup, chains: ChainStore, clock: Callable[[], datetime] = utcnow) -> None:
        self.jobs = jobs
        self.chains = chains
        self.clock = clock

    def chain(self, root_object_id: str) -> Chain:
        """Every job of the chain that started from `root_object_id`, oldest first (one Query).
        NotFoundError when no job has that root."""
        now = self.clock()
        jobs = self.chains.jobs_of_root(root_object_id)
        if not jobs:
            raise NotFoundError(
                f"no job has object '{root_object_id}' as its chain's root: it was never tagged with a "
                "triggering type, or its jobs are not in the index yet "
                "(GET /objects/{id}/triggers says which)"
            )
        return Chain(root_object_id=root_object_id, jobs=[chain_job(j, now) for j in jobs])

    def lineage(self, job_id: str) -> JobLineage:
        """The job, its ancestors (from the chain's first job down to its parent) and its
        descendants (parents before children): one Query of its chain, plus a read of any parent
        the index does not show yet."""
        job = self.jobs.find(job_id)
        if job is None:
            raise NotFoundError(f"job '{job_id}' does not exist")
        now = self.clock()
        if job.root_object_id is None:  # created over the API without an object: in no chain
            return JobLineage(job=chain_job(job, now), root_object_id=None)
        by_id = {j.id: j for j in self.chains.jobs_of_root(job.root_object_id)}
        by_id[job.id] = job  # read consistently: the index may lag it
        ancestors: list[Job] = []
        parent_id, seen = job.parent_job_id, {job.id}
        while parent_id and parent_id not in seen:
            seen.add(parent_id)
            parent = by_id.get(parent_id) or self.jobs.find(parent_id)
            if parent is None:
                break  # its parent is gone (a job is never deleted; tolerate it anyway)
            ancestors.append(parent)
            parent_id = parent.parent_job_id
        children: dict[str, list[Job]] = {}
        for j in sorted(by_id.values(), key=lambda j: j.created_at):
            if j.parent_job_id:
                children.setdefault(j.parent_job_id, []).append(j)
        descendants: list[Job] = []
        level = [job.id]
        while level:
            below = [c for parent in level for c in children.get(parent, []) if c.id not in seen]
            seen.update(c.id for c in below)
            descendants += below
            level = [c.id for c in below]
        return JobLineage(
            job=chain_job(job, now),
            root_object_id=job.root_object_id,
            ancestors=[chain_job(a, now) for a in reversed(ancestors)],
            descendants=[chain_job(d, now) for d in descendants],
        )
