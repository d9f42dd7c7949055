"""A stream record that can never succeed, end to end: it alone is dead-lettered, as a function error
(so Lambda's Errors metric and the trigger-resolver-errors alarm see it), and the tags after it
still make their jobs.

The record is made as it would happen: an object-type item written without `assigned_at` (by hand,
or by a bad migration) straight into the runtime's table; the other tags go through the API.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import boto3
import httpx

from jobtriggers.local.runtime import LocalRuntime
from tests.api_events import drs_object_body
from tests.e2e.conftest import SiteSession

TYPE, WORKFLOW = "metagenome_raw_paired_end_reads", "metag-1.0.0"


def test_a_record_that_never_succeeds_is_dead_lettered_alone_and_the_rest_go_through(
    local_runtime: LocalRuntime, api: httpx.Client, new_site: Callable[..., SiteSession]
) -> None:
    site = new_site()
    before = len(local_runtime.dlq)
    # Given an assignment the resolver cannot read, followed by two objects tagged over the API
    boto3.client("dynamodb", endpoint_url=local_runtime.dynamodb_endpoint).put_item(
        TableName=local_runtime.tables["OBJECT_TYPES_TABLE"],
        Item={"object_id": {"S": f"poison-{uuid.uuid4().hex[:8]}"}, "object_type_id": {"S": TYPE}},
    )
    tagged = []
    for _ in range(2):
        object_id = f"after-{uuid.uuid4().hex[:10]}"
        body = drs_object_body(id=object_id, checksum=uuid.uuid4().hex)
        assert api.post("/objects", json=body, headers=site.headers).status_code == 201
        assert api.put(f"/objects/{object_id}/types/{TYPE}", headers=site.headers).status_code == 200
        tagged.append(object_id)
    # When the stream has been worked through, retries and all
    assert local_runtime.wait_for_stream(timeout=60)
    # Then exactly one dead letter was written, for that record alone, after function errors
    dead = local_runtime.dlq[before:]
    assert len(dead) == 1, dead
    assert dead[0]["DDBStreamBatchInfo"]["batchSize"] == 1
    assert dead[0]["responseContext"]["functionError"] == "Unhandled"
    # And the objects tagged after it got their jobs
    for object_id in tagged:
        jobs = api.get("/jobs", params={"object_id": object_id}, headers=site.headers).json()["resources"]
        assert [j["workflow"]["id"] for j in jobs] == [WORKFLOW]
