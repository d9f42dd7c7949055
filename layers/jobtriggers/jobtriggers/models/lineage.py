"""A job's lineage and a chain's jobs, as the API and `jobtriggers jobs tree` serve them (read
views: the stream path never builds them, so they are not in the models a cold start imports)."""

from __future__ import annotations

from pydantic import Field

from jobtriggers.models import JobStatus, _Deferred


class ChainJob(_Deferred):
    """One job of a chain as the lineage read serves it: enough to draw the chain, not the job."""

    id: str
    workflow_id: str
    object_id: str | None = Field(default=None, description="null for a job created without one")
    parent_job_id: str | None = None
    root_object_id: str | None = Field(default=None, description="null for a job in no chain")
    status: JobStatus
    created_at: str
    finished_at: str | None = None
    duration_seconds: float | None = Field(
        default=None, description="from its creation to its end (to now while it is not finished)"
    )
    site_id: str | None = None
    attempts: int = 0
    outputs: list[str] = Field(default_factory=list, description="ids of the objects it registered")


class JobLineage(_Deferred):
    """GET /jobs/{id}/lineage: where a job comes from and what came of it."""

    job: ChainJob
    root_object_id: str | None = Field(
        default=None, description="null for a job created over the API without an object: in no chain"
    )
    ancestors: list[ChainJob] = Field(
        default_factory=list, description="from the job the chain started with down to the job's parent"
    )
    descendants: list[ChainJob] = Field(
        default_factory=list,
        description="every job made from its outputs and theirs, parents before children "
        "(parent_job_id nests them)",
    )


class Chain(_Deferred):
    """Every job of one chain (one root object), oldest first: what `jobtriggers jobs tree` draws."""

    root_object_id: str
    jobs: list[ChainJob] = Field(default_factory=list)

    def children(self, parent_job_id: str | None) -> list[ChainJob]:
        """The jobs made from `parent_job_id`'s outputs (None: the jobs of the root object itself,
        and any whose parent is not in the chain), oldest first."""
        known = {j.id for j in self.jobs}
        if parent_job_id is None:
            return [j for j in self.jobs if j.parent_job_id is None or j.parent_job_id not in known]
        return [j for j in self.jobs if j.parent_job_id == parent_job_id]
