"""In-memory fakes of the job and operation stores (logic/claims.py's ports), for unit tests.

They run a JobChange as the DynamoDB transaction does — every `expect` checked first, then all of
it applied, or nothing — without knowing any rule of claims: the rules stay in logic/, and a test
against these fakes tests them, not a copy of them.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

from jobtriggers.dal.jobs import JobChange, OperationUpdate
from jobtriggers.errors import ConflictError, NotFoundError
from jobtriggers.models import Job, JobStatus, OperationRecord, Transition

_ELEMENT = re.compile(r"^(\w+)\[(\d+)\]$")


def _plain(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, JobStatus):
        return value.value
    return value


def _set_path(data: dict[str, Any], path: str | tuple[str, ...], value: Any) -> None:
    parts = (path,) if isinstance(path, str) else path
    target: Any = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        element = _ELEMENT.match(part)
        if element:
            name, index = element.group(1), int(element.group(2))
            container = target[name]
            if last:
                container[index] = _plain(value)
            else:
                target = container[index]
        elif last:
            target[part] = _plain(value)
        else:
            target = target.setdefault(part, {})


class FakeJobs:
    """JobStore in memory, keyed by job id; `transitions` records each job's, in order."""

    def __init__(self, operations: FakeOperations | None = None) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.operations = operations or FakeOperations()
        self.transitions: dict[str, list[Transition]] = {}
        self.queries: list[tuple[str | None, str]] = []
        # Runs just before a change is checked: lets a test change the job under the caller.
        self.before_apply: Callable[[], None] | None = None
        self.applied = 0
        # What completions registered (object id -> its NewOutput), as the objects table would hold them.
        self.objects: dict[str, Any] = {}

    # ------------------------------------------------------------------ reads

    def add(self, job: Job) -> Job:
        self.jobs[job.id] = job.model_copy(update={"version": max(job.version, 1)}).model_dump(mode="json")
        return self.get(job.id)

    def find(self, job_id: str, consistent: bool = True) -> Job | None:
        data = self.jobs.get(job_id)
        return Job.model_validate(copy.deepcopy(data)) if data else None

    def get(self, job_id: str) -> Job:
        job = self.find(job_id)
        if job is None:
            raise NotFoundError(f"job '{job_id}' does not exist")
        return job

    def queue_page(
        self,
        workflow_id: str | None,
        queue: str,
        now: str,
        limit: int,
        page_token: str | None = None,
        brief: bool = False,
        created_by: str | None = None,
    ) -> tuple[list[Job], str | None]:
        self.queries.append((workflow_id, queue))

        def wanted(j: dict[str, Any]) -> bool:
            if workflow_id is not None and j["workflow"]["id"] != workflow_id:
                return False
            if created_by is not None and j.get("created_by") != created_by:
                return False
            if queue == "pending":
                return bool(j["status"] == "pending")
            return bool(j["status"] == "claimed" and (j.get("lease_expires_at") or "") < now)

        def queue_at(j: dict[str, Any]) -> str:
            if j["status"] == "claimed":
                return str(j.get("lease_expires_at") or "")
            return str(j.get("updated_at") or j["created_at"])

        everything = sorted((j for j in self.jobs.values() if wanted(j)), key=queue_at)
        start = int(page_token or 0)
        page = everything[start : start + limit]
        more = start + limit < len(everything)
        return [Job.model_validate(copy.deepcopy(j)) for j in page], (str(start + limit) if more else None)

    # ------------------------------------------------------------------ writes

    def create(self, job: Job, transition: Transition) -> bool:
        if job.id in self.jobs:
            return False
        self.jobs[job.id] = job.model_copy(update={"version": 1}).model_dump(mode="json")
        self.transitions.setdefault(job.id, []).append(transition)
        return True

    def apply(self, change: JobChange) -> bool:
        if self.before_apply:
            self.before_apply()
        current = self.jobs.get(change.job.id)
        if current is None:
            return False
        for name, wanted in change.expect.items():
            have = current.get(name)
            if wanted is None:
                if have is not None:
                    return False
            elif _plain(have if have is not None or name != "version" else 0) != _plain(wanted):
                return False
        if change.new_operation is not None and change.new_operation.id in self.operations.ops:
            return False
        if change.operation is not None and not self.operations.may_update(change.operation):
            return False
        clash = next((o.obj.id for o in change.outputs if o.obj.id in self.objects), None)
        if clash is not None:  # the job was as read: the output's own condition failed
            raise ConflictError(f"output object '{clash}' already exists", object_id=clash)
        updated = copy.deepcopy(current)
        for path, value in change.set.items():
            _set_path(updated, path, value)
        for name in change.remove:
            updated.pop(name, None)
        for name, amount in change.increment.items():
            updated[name] = updated.get(name, 0) + amount
        updated["claims"] = [*updated.get("claims", []), *(_plain(c) for c in change.append_claims)]
        if change.transition is not None:
            updated["version"] = updated.get("version", 0) + 1
            self.transitions.setdefault(change.job.id, []).append(change.transition)
        Job.model_validate(updated)  # what the table would hold must still be a job
        self.jobs[change.job.id] = updated
        if change.new_operation is not None:
            self.operations.ops[change.new_operation.id] = change.new_operation.model_dump(mode="json")
        if change.operation is not None:
            self.operations.update(change.operation)
        self.objects.update((o.obj.id, o) for o in change.outputs)
        self.applied += 1
        return True

    def events(self, job_id: str) -> list[str]:
        """Every event of the job's transitions, in order."""
        return [e.value for t in self.transitions.get(job_id, []) for e in t.events]


class FakeOperations:
    """OperationStore in memory."""

    def __init__(self) -> None:
        self.ops: dict[str, dict[str, Any]] = {}

    def get(self, op_id: str) -> OperationRecord | None:
        data = self.ops.get(op_id)
        return OperationRecord.model_validate(copy.deepcopy(data)) if data else None

    def may_update(self, update: OperationUpdate) -> bool:
        op = self.ops.get(update.op_id)
        if op is None:
            return False
        return not update.live_holder or (op["done"] is False and op["site_id"] == update.site_id)

    def update(self, update: OperationUpdate) -> None:
        op = self.ops[update.op_id]
        for path, value in update.set.items():
            _set_path(op, path, value)


class FakeWorkflows:
    """WorkflowLookup in memory: the registry's workflows."""

    def __init__(self, *workflows: Any) -> None:
        self.by_id = {wf.id: wf for wf in workflows}

    def add(self, workflow: Any) -> None:
        self.by_id[workflow.id] = workflow

    def remove(self, workflow_id: str) -> None:
        self.by_id.pop(workflow_id, None)

    def workflow(self, workflow_id: str) -> Any:
        if workflow_id not in self.by_id:
            raise NotFoundError(f"workflow '{workflow_id}' does not exist")
        return self.by_id[workflow_id]

    def workflows(self) -> list[Any]:
        return list(self.by_id.values())
