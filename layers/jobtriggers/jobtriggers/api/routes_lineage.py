"""Chains: GET /jobs/{id}/lineage (where a job comes from, and what came of it).

The rules live in logic/lineage.py; one Query of the jobs' by_root index answers.
"""

from __future__ import annotations

from aws_lambda_powertools.event_handler.api_gateway import Router

from jobtriggers import wiring
from jobtriggers.api.auth import require_site_id
from jobtriggers.api.params import SITE_TOKEN, JobIdPath
from jobtriggers.models.lineage import JobLineage

router = Router()


@router.get("/jobs/<job_id>/lineage", tags=["jobs"], security=SITE_TOKEN)
def get_job_lineage(job_id: JobIdPath) -> JobLineage:
    """The job's ancestors (from the job its chain started with down to its parent) and its
    descendants (every job made from its outputs and theirs, parents before children), each with
    its status and duration."""
    require_site_id()
    return wiring.lineage().lineage(job_id)
