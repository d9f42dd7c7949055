"""Job items written the way the service writes them under the transition contract (DESIGN-phase3.md):
each state change raises `version` by one and sets `transition = {events, at, by, ...}`, in one
conditional write on the version it read. Tests of the job events consumer write whole lives with
these, straight into the jobs table, before (and independently of) the API writing them itself.

    life = JobLife(jobs_table, workflow_id="wf", object_id="obj-1")
    life.create(); life.claim("site-a"); life.fail("exit_1", "boom"); life.rerun()
    life.claim("site-b"); life.done()
    life.expected_types  # job.created, job.claimed, job.failed, job.rerun, job.claimed, job.done
"""

from __future__ import annotations

import copy
import itertools
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from jobtriggers.dal.dynamo import dynamodb, to_item
from jobtriggers.models import iso, job_id_for, job_key

_clock = itertools.count()


def _at() -> str:
    """Strictly increasing transition times (a life's events are ordered by them, too)."""
    return iso(datetime.now(UTC) + timedelta(milliseconds=next(_clock)))


class JobLife:
    """One job of the jobs table, moved through its life one contract write at a time."""

    def __init__(self, table: str, workflow_id: str, object_id: str | None = None) -> None:
        self.table = table
        self.workflow_id = workflow_id
        self.object_id = object_id or f"obj-{uuid.uuid4().hex[:8]}"
        self.job_id = job_id_for(workflow_id, self.object_id)
        self.item: dict[str, Any] | None = None
        self.expected_types: list[str] = []
        self.claim_hours: list[tuple[str, str]] = []  # (site, yyyy-mm-ddThh) of each claim

    @property
    def version(self) -> int:
        return int(self.item["version"]) if self.item else 0

    def _write(self, events: list[str], by: str, **changes: Any) -> dict[str, Any]:
        before = self.item
        item = copy.deepcopy(before) if before else {}
        item.update(changes)
        item = {k: v for k, v in item.items() if v is not None}
        at = _at()
        status = item["status"]
        item.update(
            version=self.version + 1,
            transition={"events": events, "at": at, "by": by},
            workflow_status=f"{self.workflow_id}#{status}",
            updated_at=at,
            queue_at=at,
        )
        condition: dict[str, Any]
        if before is None:
            condition = {"ConditionExpression": "attribute_not_exists(job_key)"}
        else:
            condition = {
                "ConditionExpression": "version = :v",
                "ExpressionAttributeValues": {":v": {"N": str(self.version)}},
            }
        dynamodb().put_item(TableName=self.table, Item=to_item(item), **condition)
        self.item = item
        self.expected_types += events
        return item

    # ------------------------------------------------------------------ the transitions

    def create(self, max_attempts: int = 1) -> dict[str, Any]:
        at = _at()
        return self._write(
            ["job.created"],
            "service",
            job_key=job_key(self.workflow_id, self.object_id),
            id=self.job_id,
            workflow_id=self.workflow_id,
            object_id=self.object_id,
            config={"object_id": self.object_id},
            status="pending",
            listing="job",
            created_at=at,
            attempts=0,
            max_attempts=max_attempts,
            run=1,
            claims=[],
        )

    def claim(self, site_id: str) -> dict[str, Any]:
        item = self._write(
            ["job.claimed"],
            site_id,
            status="claimed",
            site_id=site_id,
            operation_id=f"op-{uuid.uuid4().hex[:8]}",
            attempts=int(self.item["attempts"]) + 1 if self.item else 1,
            lease_expires_at=_at(),
        )
        self.claim_hours.append((site_id, str(item["transition"]["at"])[:13]))
        return item

    def heartbeat(self) -> dict[str, Any]:
        """A lease renewal: no new version, no transition (no event)."""
        assert self.item is not None
        self.item["lease_expires_at"] = _at()
        dynamodb().put_item(TableName=self.table, Item=to_item(self.item))
        return self.item

    def takeover(self, site_id: str) -> dict[str, Any]:
        """A claim of a job whose lease ended: the expiry and the claim in one transition."""
        assert self.item is not None
        item = self._write(
            ["job.lease_expired", "job.claimed"],
            site_id,
            status="claimed",
            site_id=site_id,
            operation_id=f"op-{uuid.uuid4().hex[:8]}",
            attempts=int(self.item["attempts"]) + 1,
            last_error={"code": "lease_expired", "message": "the holder stopped renewing its lease"},
        )
        self.claim_hours.append((site_id, str(item["transition"]["at"])[:13]))
        return item

    def fail(self, code: str = "exit_1", message: str = "the command failed") -> dict[str, Any]:
        assert self.item is not None
        return self._write(
            ["job.failed"],
            str(self.item["site_id"]),
            status="failed",
            last_error={"code": code, "message": message},
            finished_at=_at(),
        )

    def attempt_failed(self, code: str = "exit_1", message: str = "the command failed") -> dict[str, Any]:
        assert self.item is not None
        return self._write(
            ["job.attempt_failed"],
            str(self.item["site_id"]),
            status="pending",
            last_error={"code": code, "message": message},
        )

    def rerun(self, operator: str = "alice") -> dict[str, Any]:
        assert self.item is not None
        return self._write(
            ["job.rerun"],
            f"operator:{operator}",
            status="pending",
            attempts=0,
            run=int(self.item.get("run", 1)) + 1,
            finished_at=None,
        )

    def done(self) -> dict[str, Any]:
        assert self.item is not None
        return self._write(
            ["job.done"],
            str(self.item["site_id"]),
            status="done",
            result={"outputs": [f"{self.object_id}.out"]},
            finished_at=_at(),
        )

    def full_life(self, first_site: str = "site-a", second_site: str = "site-b") -> JobLife:
        """create, claim, fail, rerun, claim, done (issue 9's life), by two sites."""
        self.create()
        self.claim(first_site)
        self.fail()
        self.rerun()
        self.claim(second_site)
        self.done()
        return self
