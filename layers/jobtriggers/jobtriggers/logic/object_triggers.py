""" "Why is there no job?": an object's types, each type's triggers, and each trigger's job.

NMDC's troubleshooting guide lists four checks for "scheduler not creating jobs", each a query by
hand: is the object on the allow list, did the upstream workflow produce the inputs, is the
workflow's version compatible, does the job exist already. Here one read answers them for an object
(`GET /objects/{id}/triggers`): which types it carries (and which job made it), what each type
triggers, the job each trigger made and its status, a type that triggers nothing, a trigger or job
whose workflow is no longer in the registry, and the object's jobs that no current trigger explains.

Reads: the object, its assignments, the trigger set and the workflows (consistent Queries of the
small registry), the object's jobs (by_object), and a consistent read of each expected job the
index does not show (a job made a moment ago).
"""

from __future__ import annotations

from typing import Protocol

from jobtriggers.models import DrsObject, Job, JobStatus, ObjectTypeAssignment, Trigger, Workflow, job_id_for
from jobtriggers.models.object_triggers import ObjectTriggers, ObjectTypeTriggers, TriggerJobRef, TypeTrigger

JOBS_PAGE = 100


class ObjectReader(Protocol):
    def get(self, object_id: str) -> DrsObject: ...


class AssignmentReader(Protocol):
    def types_of(self, object_id: str) -> list[ObjectTypeAssignment]: ...


class RegistryReader(Protocol):
    def all_triggers(self) -> list[Trigger]: ...

    def workflows(self) -> list[Workflow]: ...

    def existing_ids(self, kind: str, ids: list[str]) -> set[str]: ...


class JobReader(Protocol):
    def find(self, job_id: str, consistent: bool = True) -> Job | None: ...

    def list_page(
        self,
        *,
        workflow_id: str | None = None,
        object_id: str | None = None,
        status: str | None = None,
        site_id: str | None = None,
        limit: int = 20,
        page_token: str | None = None,
    ) -> tuple[list[Job], str | None]: ...


def _job_state(job: Job, workflow_missing: bool) -> str:
    """What a job's status means for the object, in words."""
    wf = job.workflow_id
    if job.status == JobStatus.pending:
        text = f"job {job.id} is pending: waiting for a site that may run {wf} to claim it"
        if job.last_error:
            text += f" (its last attempt failed: {_error_text(job.last_error)})"
    elif job.status == JobStatus.claimed:
        text = (
            f"job {job.id} is claimed by site '{job.site_id}' (attempt {job.attempts}), "
            f"its lease ends at {job.lease_expires_at}"
        )
    elif job.status == JobStatus.done:
        made = f", registering {len(job.outputs)} outputs" if job.outputs else ""
        text = f"job {job.id} is done (finished at {job.finished_at}{made})"
    elif job.status == JobStatus.failed:
        text = (
            f"job {job.id} failed after {job.attempts} attempts: {_error_text(job.last_error)}; "
            "an operator may rerun it"
        )
    else:
        text = f"job {job.id} was cancelled; an operator may rerun it"
    if workflow_missing:
        text += (
            f". Its workflow {wf} is no longer in the registry: nobody can claim it until the "
            "workflow is back in seed/"
        )
    return text


def _error_text(error: object) -> str:
    if isinstance(error, dict) and error.get("code"):
        return f"{error['code']}: {error.get('message')}"
    return "no error recorded"


class ObjectTriggersReader:
    def __init__(
        self, objects: ObjectReader, assignments: AssignmentReader, registry: RegistryReader, jobs: JobReader
    ) -> None:
        self.objects = objects
        self.assignments = assignments
        self.registry = registry
        self.jobs = jobs

    def _jobs_of(self, object_id: str) -> dict[str, Job]:
        found: dict[str, Job] = {}
        token: str | None = None
        while True:
            page, token = self.jobs.list_page(object_id=object_id, limit=JOBS_PAGE, page_token=token)
            found.update((j.id, j) for j in page)
            if not token:
                return found

    def explain(self, object_id: str) -> ObjectTriggers:
        """For each of the object's types, each trigger and its job (or why none); NotFoundError
        for an unknown object."""
        obj = self.objects.get(object_id)
        assignments = sorted(self.assignments.types_of(object_id), key=lambda a: a.object_type_id)
        triggers = self.registry.all_triggers()
        workflows = {w.id for w in self.registry.workflows()}
        type_ids = [a.object_type_id for a in assignments]
        known_types = self.registry.existing_ids("object_type", type_ids) if type_ids else set()
        jobs = self._jobs_of(object_id)
        explained: set[str] = set()
        types: list[ObjectTypeTriggers] = []
        for assignment in assignments:
            type_id = assignment.object_type_id
            entries: list[TypeTrigger] = []
            for trigger in sorted((t for t in triggers if t.object_type_id == type_id), key=lambda t: t.id):
                entries.append(self._trigger_entry(trigger, object_id, assignment, jobs, workflows))
                explained.add(job_id_for(trigger.workflow_id, object_id))
            explanation = None
            if not entries:
                explanation = f"no trigger names object type '{type_id}': carrying it starts no job"
                if type_id not in known_types:
                    explanation += " (and the type is no longer in the registry)"
            types.append(
                ObjectTypeTriggers(
                    object_type_id=type_id,
                    assigned_at=assignment.assigned_at,
                    assigned_by=assignment.assigned_by,
                    in_registry=type_id in known_types,
                    triggers=entries,
                    explanation=explanation,
                )
            )
        others = [
            self._other_entry(job, workflows, triggers)
            for job in sorted(jobs.values(), key=lambda j: j.created_at)
            if job.id not in explained
        ]
        return ObjectTriggers(
            object_id=object_id,
            was_generated_by=obj.was_generated_by,
            types=types,
            other_jobs=others,
            summary=_summary(types, others),
        )

    def _trigger_entry(
        self,
        trigger: Trigger,
        object_id: str,
        assignment: ObjectTypeAssignment,
        jobs: dict[str, Job],
        workflows: set[str],
    ) -> TypeTrigger:
        missing = trigger.workflow_id not in workflows
        job_id = job_id_for(trigger.workflow_id, object_id)
        job = jobs.get(job_id) or self.jobs.find(job_id)  # the index may lag a job just made
        if job is not None:
            jobs[job.id] = job
            ref = TriggerJobRef(
                id=job.id, workflow_id=job.workflow_id, status=job.status, workflow_missing=missing
            )
            explanation = _job_state(job, missing)
        elif missing:
            ref, explanation = (
                None,
                f"the trigger names workflow {trigger.workflow_id}, which is not in the registry: "
                "it makes no job",
            )
        else:
            ref, explanation = (
                None,
                f"no job yet: the trigger resolver makes it within about a second of the tag (assigned at "
                f"{assignment.assigned_at}); if the tag is older its stream record was lost: "
                f"`jobtriggers reconcile --trigger {trigger.id}` makes the job",
            )
        return TypeTrigger(
            trigger_id=trigger.id,
            workflow_id=trigger.workflow_id,
            workflow_missing=missing,
            job=ref,
            explanation=explanation,
        )

    def _other_entry(self, job: Job, workflows: set[str], triggers: list[Trigger]) -> TypeTrigger:
        missing = job.workflow_id not in workflows
        if missing:
            why = (
                f"workflow {job.workflow_id} was removed from the registry: nobody can claim this job "
                "until the workflow is back in seed/"
            )
        elif job.trigger_id and job.trigger_id not in {t.id for t in triggers}:
            why = f"its trigger {job.trigger_id} is no longer in the registry"
        elif job.trigger_id:
            why = "the object no longer carries the type of its trigger"
        else:
            why = "made with POST /jobs, not by a trigger"
        return TypeTrigger(
            trigger_id=job.trigger_id,
            workflow_id=job.workflow_id,
            workflow_missing=missing,
            job=TriggerJobRef(
                id=job.id, workflow_id=job.workflow_id, status=job.status, workflow_missing=missing
            ),
            explanation=f"{_job_state(job, False)}; {why}",
        )


def _summary(types: list[ObjectTypeTriggers], others: list[TypeTrigger]) -> str:
    if not types:
        return (
            "the object carries no object type: tag it (PUT /objects/{id}/types) for its triggers "
            "to make jobs"
        )
    entries = [e for t in types for e in t.triggers]
    with_job = [e for e in entries if e.job is not None]
    parts = [f"{len(types)} types, {len(entries)} triggers, {len(with_job)} jobs"]
    waiting = [e.trigger_id for e in entries if e.job is None and not e.workflow_missing]
    if waiting:
        parts.append(f"no job yet for {', '.join(str(w) for w in waiting)}")
    gone = sorted({e.workflow_id for e in [*entries, *others] if e.workflow_missing})
    if gone:
        parts.append(f"workflows no longer in the registry: {', '.join(gone)}")
    silent = [t.object_type_id for t in types if not t.triggers]
    if silent:
        parts.append(f"types that trigger nothing: {', '.join(silent)}")
    if others:
        parts.append(f"{len(others)} other jobs no current trigger explains")
    return "; ".join(parts)
