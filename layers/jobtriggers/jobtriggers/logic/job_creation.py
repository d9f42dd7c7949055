"""Jobs created over the API (POST /jobs), as NMDC's workflow automation creates them.

- Only a site an operator allowed (`can_create_jobs` on its record) may create jobs; others 403.
- A job's identity is its workflow and its config: the key is `{workflow_id}#config:<32 hex digits
  of the SHA-256 of the config's canonical JSON>` and the job is put with `attribute_not_exists`.
  The same record posted again (a retry after a lost answer, the scheduler's tenacity retries, a
  second scheduler) finds the job that is there: 200 with it, never a second job. No "list, then
  insert": the key is the deduplication.
- The config is checked before anything is written: a JSON object, at most MAX_CONFIG_BYTES of
  canonical JSON and MAX_CONFIG_DEPTH levels (the job item and the operation that carries it must
  stay inside DynamoDB's limits), text in UTF-8, an `object_id` (if any) a DRS id; a 422 or 413 names
  what is wrong.
- The job records who created it (`created_by`); that site alone may claim it when the registry
  does not know its workflow (logic/claims.py), and may cancel it (logic/lifecycle.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from jobtriggers.errors import ConflictError, ForbiddenError, PayloadTooLargeError, ValidationFailed
from jobtriggers.logic.claims import SiteRef
from jobtriggers.models import (
    DRS_ID_PATTERN,
    JOB_ID_MAX_LENGTH,
    MAX_CONFIG_BYTES,
    MAX_CONFIG_DEPTH,
    Job,
    JobEventType,
    Transition,
    canonical_json,
    iso,
    utcnow,
)
from jobtriggers.observability import logger

# A job id is base64url of its key `{workflow}#config:<32 hex>` (41 bytes after the workflow):
# JOB_ID_MAX_LENGTH characters hold a key of 3/4 as many bytes.
MAX_WORKFLOW_ID_BYTES = JOB_ID_MAX_LENGTH * 3 // 4 - len("#config:") - 32


class NewJobStore(Protocol):
    def create(self, job: Job, transition: Transition, site_data: bool = False) -> bool: ...

    def find(self, job_id: str, consistent: bool = True) -> Job | None: ...


def _config_problem(value: Any, path: str, depth: int) -> str | None:
    """What in a config DynamoDB could not keep as it is, or None."""
    if depth > MAX_CONFIG_DEPTH:
        return f"{path} is nested more than {MAX_CONFIG_DEPTH} levels deep"
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return f"{path} holds text that is not UTF-8 (a lone surrogate)"
        return None
    if isinstance(value, dict):
        for key, inner in value.items():
            if not key:
                return f"{path} has an empty key; every key needs a name"
            problem = _config_problem(key, f"{path} (a key)", depth) or _config_problem(
                inner, f"{path}.{key}", depth + 1
            )
            if problem:
                return problem
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            problem = _config_problem(inner, f"{path}[{i}]", depth + 1)
            if problem:
                return problem
    return None


def check_new_job(workflow_id: str, config: dict[str, Any]) -> None:
    """Refuse, naming why, a workflow id or config the service cannot key or keep."""
    size = len(workflow_id.encode("utf-8", "surrogatepass"))
    if size > MAX_WORKFLOW_ID_BYTES:
        raise ValidationFailed(
            f"workflow.id is {size} bytes of UTF-8; a created job's workflow id may have at most "
            f"{MAX_WORKFLOW_ID_BYTES} (its job id must fit in a URL path segment)",
            loc=["body", "workflow", "id"],
        )
    try:
        text = canonical_json(config)
    except ValueError as exc:  # NaN or Infinity
        raise ValidationFailed(
            "config holds NaN or Infinity, which are not JSON; send numbers, strings or null",
            loc=["body", "config"],
        ) from exc
    config_bytes = len(text.encode("utf-8", "surrogatepass"))
    if config_bytes > MAX_CONFIG_BYTES:
        raise PayloadTooLargeError(
            f"config is {config_bytes} bytes of JSON; a job's config may have at most {MAX_CONFIG_BYTES} "
            "(the job and each of its operations carry it). Keep large inputs as objects (POST /objects) "
            "and refer to them by id"
        )
    problem = _config_problem(config, "config", 1)
    if problem:
        raise ValidationFailed(problem, loc=["body", "config"])
    object_id = config.get("object_id")
    if object_id is not None and not (isinstance(object_id, str) and re.match(DRS_ID_PATTERN, object_id)):
        raise ValidationFailed(
            "config.object_id, when given, names the object the job runs on: a DRS id of 1-200 letters, "
            "digits and ._~:- (leave it out if the job runs on no one object)",
            loc=["body", "config", "object_id"],
        )


class JobCreator:
    def __init__(self, jobs: NewJobStore, clock: Callable[[], datetime] = utcnow) -> None:
        self.jobs = jobs
        self.clock = clock

    def create(
        self,
        site: SiteRef,
        workflow_id: str,
        config: dict[str, Any],
        name: str | None = None,
        description: str | None = None,
    ) -> tuple[Job, bool]:
        """The job of (workflow, config): created now (True), or as it already is (False)."""
        if not site.can_create_jobs:
            raise ForbiddenError(
                f"site '{site.id}' may not create jobs: it lacks the can_create_jobs permission "
                f"(an operator grants it: jobtriggers sites allow-job-creation {site.id})"
            )
        check_new_job(workflow_id, config)
        now = iso(self.clock())
        job = Job.submitted(workflow_id, config, now, site.id, name=name, description=description)
        transition = Transition(
            events=[JobEventType.created], at=now, by=site.id, details={"created_by": site.id}
        )
        if self.jobs.create(job, transition, site_data=True):
            logger.info(
                "job created",
                extra={"job_id": job.id, "workflow_id": workflow_id, "site_id": site.id},
            )
            return job.model_copy(update={"version": 1}), True
        existing = self.jobs.find(job.id)
        if existing is None:  # it existed a moment ago: only a delete in between could do this
            raise ConflictError(f"job '{job.id}' changed while it was being created; send the request again")
        return existing, False
