"""Figure 5: what a MongoDB `filter` on GET /jobs costs, as NMDC's automation sends it.

A jobs table of N jobs as NMDC's scheduler creates them (POST /jobs: workflow ids that are names
with versions, one git repository per workflow, configs with its fields), in the states a running
system has them: most done, some pending and never claimed, some pending again after a release,
some claimed. Then, through the API handler (functions/api/app.py, called in this process with API
Gateway's event, so the route, the listing and the data access are the service's own), each listing
is read to its end the way the automation reads it (`max_page_size`, following `next_page_token`):

- the watcher's filter: `workflow.id $in` its workflows, and claims empty or all cancelled. The
  workflow ids are pinned, so it reads `by_workflow`, one partition per workflow: every job of
  the workflows it runs, whatever their state;
- the scheduler's filter: `config.git_repo` equal to one repository. Nothing an index holds is
  pinned, so it reads every job (`by_created`), a bounded page at a time.

Items read are what DynamoDB bills (a Query's `ScannedCount`, a BatchGetItem's items), counted by a
botocore hook on the data-access client. Setup writes into moto's backend directly (not measured).
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.common import FUNCTIONS_DIR, backend_put, progress, step, summarize
from bench.counting import RequestCounter

SITE = "jgi"


@dataclass(frozen=True)
class FiltersConfig:
    jobs: int = 10_000
    workflows: int = 10  # each its own repository
    allowed: int = 3  # the workflows the watcher runs
    page_size: int = 100  # the automation's max_page_size
    repetitions: int = 1


def workflow_name(i: int) -> str:
    return f"Workflow {i:02d}: v1.{i}.0"


def repository(i: int) -> str:
    return f"https://github.com/microbiomedata/workflow_{i:02d}"


def _jobs(config: FiltersConfig) -> list[Any]:
    """N jobs as the scheduler makes them, in a running system's mix of states, the same for every
    workflow: 60 % done, 15 % pending never claimed, 10 % pending after a release, 10 % claimed,
    5 % failed."""
    from jobtriggers.models import Claim, Job, JobStatus, iso

    base = datetime(2025, 1, 1, tzinfo=UTC)
    jobs = []
    for n in range(config.jobs):
        w = n % config.workflows
        at = iso(base + timedelta(seconds=n))
        job = Job.submitted(
            workflow_name(w),
            {
                "git_repo": repository(w),
                "release": f"v1.{w}.0",
                "wdl": "workflow.wdl",
                "activity_id": f"nmdc:wf-{n:06d}.1",
                "was_informed_by": f"nmdc:omprc-{n:06d}",
                "trigger_activity": f"nmdc:wfprev-{n:06d}.1",
                "inputs": {"input_file": f"https://data.microbiomedata.org/data/{n:06d}.fna"},
            },
            at,
            SITE,
        )
        op = f"op-{n:06d}"
        bucket = (n // config.workflows) % 20  # every workflow gets the same mix
        if bucket < 12:
            update: dict[str, Any] = {
                "status": JobStatus.done,
                "claims": [Claim(op_id=op, site_id=SITE, done=True)],
            }
        elif bucket < 15:
            update = {}
        elif bucket < 17:
            update = {"claims": [Claim(op_id=op, site_id=SITE, done=True, cancelled=True)]}
        elif bucket < 19:
            update = {
                "status": JobStatus.claimed,
                "site_id": SITE,
                "operation_id": op,
                "lease_expires_at": iso(base + timedelta(days=3650)),
                "claims": [Claim(op_id=op, site_id=SITE)],
            }
        else:
            update = {
                "status": JobStatus.failed,
                "claims": [Claim(op_id=op, site_id=SITE, done=True, cancelled=True)],
            }
        jobs.append(job.model_copy(update={**update, "version": 1}))
    return jobs


class ApiReader:
    """GET /jobs through the API handler in this process, with the event API Gateway sends."""

    def __init__(self) -> None:
        from jobtriggers.local.invoke import FakeLambdaContext, load_handler

        self.handler = load_handler(FUNCTIONS_DIR / "api" / "app.py", label="bench_filters")
        self.context = FakeLambdaContext(function_name="ApiFunction", timeout_seconds=30)

    def get(self, query: dict[str, str]) -> dict[str, Any]:
        event = {
            "resource": "/jobs",
            "path": "/jobs",
            "httpMethod": "GET",
            "headers": {"Accept": "application/json"},
            "multiValueHeaders": {"Accept": ["application/json"]},
            "queryStringParameters": query,
            "multiValueQueryStringParameters": {k: [v] for k, v in query.items()},
            "pathParameters": None,
            "stageVariables": None,
            "requestContext": {
                "httpMethod": "GET",
                "path": "/v1/jobs",
                "resourcePath": "/jobs",
                "stage": "v1",
                "requestId": str(uuid.uuid4()),
                "identity": {"sourceIp": "127.0.0.1"},
                "authorizer": {"site_id": SITE, "principalId": SITE},
            },
            "body": None,
            "isBase64Encoded": False,
        }
        response = self.handler(event, self.context)
        if response["statusCode"] != 200:
            raise RuntimeError(f"GET /jobs answered {response['statusCode']}: {response['body'][:500]}")
        body: dict[str, Any] = json.loads(response["body"])
        return body


def read_all(
    reader: ApiReader, counter: RequestCounter, flt: dict[str, Any], page_size: int
) -> dict[str, Any]:
    """The listing read to its end as the automation reads it; what it cost."""
    before = counter.snapshot()
    started = time.perf_counter()
    query = {"filter": json.dumps(flt), "max_page_size": str(page_size)}
    results: list[str] = []
    pages = empty_pages = 0
    while True:
        body = reader.get(query)
        pages += 1
        empty_pages += not body["resources"]
        results += [r["id"] for r in body["resources"]]
        token = body.get("next_page_token")
        if not token:
            break
        query["page_token"] = token
    seconds = time.perf_counter() - started
    counts = counter.since(before)
    found = max(len(results), 1)
    return {
        "results": len(results),
        "distinct_results": len(set(results)),
        "pages": pages,
        "empty_pages": empty_pages,
        "items_read": counts.items_read,
        "requests": counts.total_requests,
        "requests_by_operation": dict(counts.requests),
        "items_read_per_result": counts.items_read / found,
        "items_read_per_page": counts.items_read / pages,
        "ms_per_page": seconds * 1000 / pages,
    }


def run(config: FiltersConfig) -> dict[str, Any]:
    from jobtriggers.dal.dynamo import dynamodb
    from jobtriggers.dal.jobs import job_item
    from jobtriggers.local.store import create_tables, point_boto3_at, start_embedded_dynamo
    from jobtriggers.logic.listing import JobListing
    from jobtriggers.models import JobEventType, Transition

    allowed = [workflow_name(i) for i in range(config.allowed)]
    watcher = {
        "$and": [
            {"workflow.id": {"$in": allowed}},
            {
                "$or": [
                    {"claims": {"$size": 0}},
                    {"claims": {"$not": {"$elemMatch": {"cancelled": {"$ne": True}}}}},
                ]
            },
        ]
    }
    scheduler = {"config.git_repo": repository(0)}
    runs: list[dict[str, Any]] = []
    for rep in range(config.repetitions):
        dynamo = start_embedded_dynamo()
        counter = RequestCounter()
        try:
            point_boto3_at(dynamo.endpoint)
            env = create_tables(f"filters{rep}-{uuid.uuid4().hex[:6]}")
            with step(f"filters: run {rep + 1}/{config.repetitions}, {config.jobs:,} jobs"):
                jobs = _jobs(config)
                created = Transition(events=[JobEventType.created], at=jobs[0].created_at, by=SITE)
                backend_put(env["JOBS_TABLE"], [job_item(j, created) for j in jobs])
                expected = {
                    "watcher": sum(
                        1 for j in jobs if j.workflow_id in allowed and all(c.cancelled for c in j.claims)
                    ),
                    "scheduler": sum(
                        1 for j in jobs if j.config.model_dump().get("git_repo") == repository(0)
                    ),
                }
                reader = ApiReader()
                counter.attach(dynamodb())
                reader.get({"max_page_size": "1"})  # the handler's first request, not measured
                row = {
                    name: read_all(reader, counter, flt, config.page_size)
                    for name, flt in (("watcher", watcher), ("scheduler", scheduler))
                }
                for name, measured in row.items():
                    measured["expected_results"] = expected[name]
                    progress(
                        f"  {name}: {measured['results']:,} results, {measured['items_read']:,} items read, "
                        f"{measured['items_read_per_result']:.2f} per result, {measured['pages']} pages"
                    )
                runs.append(row)
        finally:
            counter.detach()
            dynamo.stop()
    budget = JobListing(None, None).budget  # type: ignore[arg-type]
    filters: dict[str, Any] = {}
    for name in ("watcher", "scheduler"):
        rows = [r[name] for r in runs]
        last = rows[-1]
        filters[name] = {
            "items_read_per_result": summarize([r["items_read_per_result"] for r in rows]),
            "ms_per_page": summarize([r["ms_per_page"] for r in rows]),
            "detail": last,
            "exact": all(r["results"] == r["distinct_results"] == r["expected_results"] for r in rows),
        }
    return {
        "measured": True,
        "config": dataclasses.asdict(config),
        "budget": dataclasses.asdict(budget),
        "filters": filters,
        "index": {"watcher": "by_workflow", "scheduler": "by_created"},
    }
