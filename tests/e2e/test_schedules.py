"""The template's Schedule events in the local runtime: ReconcilerFunction's, off by default, fired
on demand as EventBridge would fire it, runs in its own worker and repairs what it should."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import boto3
import httpx

from jobtriggers.local.runtime import LocalRuntime
from jobtriggers.models import job_id_for, job_key_from_id
from tests.api_events import drs_object_body

from .conftest import SiteSession
from .test_worker import register_workflow


def test_firing_the_reconcile_schedule_makes_the_job_a_tagged_object_lost(
    local_runtime: LocalRuntime, api: httpx.Client, new_site: Callable[..., SiteSession]
) -> None:
    # Given an object tagged with a type a trigger links to a workflow, and its job, then lost
    type_id, wf_id = register_workflow(local_runtime)
    site = new_site()
    object_id = f"sched-{uuid.uuid4().hex[:10]}"
    created = api.post(
        "/objects", json=drs_object_body(id=object_id, checksum=uuid.uuid4().hex), headers=site.headers
    )
    assert created.status_code == 201, created.text
    tagged = api.put(f"/objects/{object_id}/types/{type_id}", headers=site.headers)
    assert tagged.status_code in (200, 204), tagged.text
    assert local_runtime.wait_for_stream()
    job_id = job_id_for(wf_id, object_id)
    assert api.get(f"/jobs/{job_id}", headers=site.headers).status_code == 200
    boto3.client("dynamodb", endpoint_url=local_runtime.dynamodb_endpoint).delete_item(
        TableName=local_runtime.tables["JOBS_TABLE"], Key={"job_key": {"S": str(job_key_from_id(job_id))}}
    )
    assert api.get(f"/jobs/{job_id}", headers=site.headers).status_code == 404
    # And the template's reconcile schedule, disabled at its parameters' defaults
    (schedule,) = [s for s in local_runtime.schedules if s.function == "ReconcilerFunction"]
    assert (schedule.enabled, schedule.expression) == (False, "rate(6 hours)")
    # When its event is fired now
    result = local_runtime.run_schedule("ReconcilerFunction")
    # Then ReconcilerFunction ran in a worker of its own and made the job again
    assert result["jobs_created"] >= 1
    assert api.get(f"/jobs/{job_id}", headers=site.headers).status_code == 200
    assert local_runtime.stats()["schedules"]["ReconcilerFunction.Reconcile"]["runs"] >= 1
    assert local_runtime.pool is not None and local_runtime.pool.workers("ReconcilerFunction") == 1
