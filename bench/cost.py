"""Figure 2: DynamoDB work per tagged object as the store grows, this project vs the NMDC sensor.

One store grows through the configured sizes (objects already tagged, each with its job). At each
size, N new objects are tagged (the same write for both designs) and then:

- this project: the stream records of those tags go through the local stream poller to the real
  TriggerEngine handler (functions/trigger_resolver/app.py), as Lambda's event source mapping
  would deliver them;
- the baseline: N more new objects are tagged and one tick of the NMDC Runtime's
  `process_workflow_job_triggers` sensor runs over the same tables: for every trigger, all
  objects carrying its type (Query on the object-type index), all jobs of its workflow (Query on
  the jobs by_workflow index), and a put for each object that has none.

Every measured request goes over HTTP to the moto server and is counted by a botocore hook on the
client the data-access layer uses. Bulk preloading (setup) writes into the in-process moto
backend directly; the new objects are written with a separate, uncounted client.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from typing import Any, cast

import boto3
from botocore.config import Config

from bench.common import (
    FUNCTIONS_DIR,
    SEED_DIR,
    TAG_TYPE,
    TAG_WORKFLOW,
    backend_put,
    progress,
    step,
    summarize,
)
from bench.counting import Counts, RequestCounter

PRELOAD_AT = "2025-01-01T00:00:00.000Z"


@dataclass(frozen=True)
class CostConfig:
    sizes: tuple[int, ...] = (1_000, 10_000, 50_000)
    new_tags: int = 200
    repetitions: int = 1


class Store:
    """A moto server with the template's tables and the seeded registry, plus an uncounted client."""

    def __init__(self) -> None:
        from jobtriggers.dal.dynamo import dynamodb
        from jobtriggers.dal.registry import RegistryRepository
        from jobtriggers.local.store import create_tables, point_boto3_at, start_embedded_dynamo
        from jobtriggers.logic.seed import apply_registry, load_seed_dir

        self.dynamo = start_embedded_dynamo()
        point_boto3_at(self.dynamo.endpoint)
        self.env = create_tables(f"bench-{uuid.uuid4().hex[:6]}")
        apply_registry(load_seed_dir(SEED_DIR), RegistryRepository())
        self.raw = boto3.client("dynamodb", config=Config(retries={"mode": "standard", "max_attempts": 10}))
        # The sensor's whole-index reads take moto many seconds at 50,000 objects: its own client
        # waits for them (the service's client gives up after 10 s, as it should on AWS).
        self.sensor_client = boto3.client(
            "dynamodb", config=Config(read_timeout=600, retries={"mode": "standard", "max_attempts": 3})
        )
        self.counter = RequestCounter()
        self.counter.attach(dynamodb())
        self.counter.attach(self.sensor_client)
        self.preloaded = 0

    @property
    def jobs_table(self) -> str:
        return self.env["JOBS_TABLE"]

    @property
    def registry_table(self) -> str:
        return self.env["REGISTRY_TABLE"]

    @property
    def object_types_table(self) -> str:
        return self.env["OBJECT_TYPES_TABLE"]

    def stop(self) -> None:
        self.counter.detach()
        self.dynamo.stop()

    def batch_write(self, table: str, items: list[dict[str, Any]]) -> None:
        from jobtriggers.dal.dynamo import to_item

        for start in range(0, len(items), 25):
            request: dict[str, Any] = {
                table: [{"PutRequest": {"Item": to_item(i)}} for i in items[start : start + 25]]
            }
            while request:
                request = self.raw.batch_write_item(RequestItems=request).get("UnprocessedItems") or {}

    def preload(self, size: int) -> None:
        """Grow the store to `size` tagged objects, each with the job the trigger made for it."""
        from jobtriggers.dal.jobs import job_item
        from jobtriggers.models import Job

        chunk = 10_000
        trigger_id = f"{TAG_TYPE}--{TAG_WORKFLOW}"
        while self.preloaded < size:
            upto = min(size, self.preloaded + chunk)
            ids = [f"pre-{i:07d}" for i in range(self.preloaded, upto)]
            backend_put(
                self.object_types_table,
                [{"object_id": o, "object_type_id": TAG_TYPE, "assigned_at": PRELOAD_AT} for o in ids],
            )
            jobs = [
                Job.new(TAG_WORKFLOW, o, PRELOAD_AT, trigger_id=trigger_id, tagged_at=PRELOAD_AT) for o in ids
            ]
            backend_put(self.jobs_table, [job_item(j.model_copy(update={"version": 1})) for j in jobs])
            self.preloaded = upto
            progress(f"  store: {upto:,} tagged objects with their jobs")

    def new_objects(self, label: str, count: int) -> list[str]:
        """Objects that exist and carry no type yet (the tag write checks that the object exists)."""
        ids = [f"{label}-{i:05d}" for i in range(count)]
        self.batch_write(self.env["OBJECTS_TABLE"], [{"pk": f"object#{o}", "id": o} for o in ids])
        return ids

    def tag(self, object_ids: list[str]) -> None:
        from jobtriggers.dal.assignments import AssignmentRepository

        repo = AssignmentRepository()
        for object_id in object_ids:
            repo.apply(object_id, [TAG_TYPE], [], by="bench")

    def jobs_present(self, object_ids: list[str]) -> int:
        from jobtriggers.dal.dynamo import to_item
        from jobtriggers.models import job_key

        found = 0
        for start in range(0, len(object_ids), 100):
            keys = [to_item({"job_key": job_key(TAG_WORKFLOW, o)}) for o in object_ids[start : start + 100]]
            request: dict[str, Any] = {self.jobs_table: {"Keys": keys, "ProjectionExpression": "job_key"}}
            while request:
                resp = self.raw.batch_get_item(RequestItems=request)
                found += len(resp.get("Responses", {}).get(self.jobs_table, []))
                request = resp.get("UnprocessedKeys") or {}
        return found


class StreamDriver:
    """The local event source mapping in front of the real TriggerEngine handler, from LATEST."""

    def __init__(self, store: Store) -> None:
        from jobtriggers.local.invoke import FakeLambdaContext, load_handler
        from jobtriggers.local.store import stream_arn
        from jobtriggers.local.stream_poller import StreamMapping, StreamPoller, StreamsClient
        from jobtriggers.local.template import load_template, stream_sources

        (source,) = [s for s in stream_sources(load_template()) if s.function == "TriggerResolverFunction"]
        handler = load_handler(FUNCTIONS_DIR / "trigger_resolver" / "app.py", label="bench_cost")
        mapping = dataclasses.replace(
            StreamMapping.from_source(source, stream_arn(store.object_types_table)),
            starting_position="LATEST",
        )
        self.poller = StreamPoller(
            [mapping],
            {mapping.function: handler},
            cast(StreamsClient, boto3.client("dynamodbstreams")),
            context_factory=lambda fn: FakeLambdaContext(function_name=fn, timeout_seconds=60),
            shard_refresh_seconds=0.0,
        )
        self.poller.poll_once()  # takes its LATEST position before the tags are written

    def drain(self, expected: int, max_polls: int = 1_000) -> None:
        for _ in range(max_polls):
            self.poller.poll_once()
            stats = self.poller.stats()
            if (
                stats["records_checkpointed"] + stats["dlq_records"] >= expected
                and not stats["pending_records"]
            ):
                return
        raise RuntimeError(f"the stream did not deliver {expected} records: {self.poller.stats()}")


def nmdc_sensor_tick(store: Store) -> int:
    """One tick of the NMDC Runtime's `process_workflow_job_triggers`, on this project's tables.

    As in nmdc_runtime/site/repository.py: for every trigger, the ids of all objects with its type;
    if any, the object ids of all jobs of its workflow; insert a job for each object without one.
    Reads project the ids only, as the sensor's Mongo queries do (DynamoDB bills whole items anyway).
    """
    from jobtriggers.dal.jobs import JobRepository
    from jobtriggers.dal.registry import RegistryRepository
    from jobtriggers.models import Job, JobEventType, Transition, iso, utcnow

    def all_ids(table: str, index: str, key: str, value: str) -> list[str]:
        out: list[str] = []
        start: dict[str, Any] | None = None
        while True:
            kwargs: dict[str, Any] = {
                "TableName": table,
                "IndexName": index,
                "KeyConditionExpression": "#k = :v",
                "ExpressionAttributeNames": {"#k": key},
                "ExpressionAttributeValues": {":v": {"S": value}},
                "ProjectionExpression": "object_id",
            }
            if start:
                kwargs["ExclusiveStartKey"] = start
            resp = store.sensor_client.query(**kwargs)
            out += [i["object_id"]["S"] for i in resp.get("Items", [])]
            start = resp.get("LastEvaluatedKey")
            if not start:
                return out

    jobs = JobRepository()
    created = 0
    for trigger in RegistryRepository().list_all("trigger"):
        of_type = all_ids(
            store.object_types_table, "by_object_type", "object_type_id", trigger.object_type_id
        )
        if not of_type:
            continue
        with_jobs = set(all_ids(store.jobs_table, "by_workflow", "workflow_id", trigger.workflow_id))
        now = iso(utcnow())
        for object_id in sorted(set(of_type) - with_jobs):
            job = Job.new(trigger.workflow_id, object_id, now, trigger_id=trigger.id)
            created += jobs.create(job, Transition(events=[JobEventType.created], at=now, by="service"))
    return created


def _per(counts: Counts, n: int) -> dict[str, float]:
    n = max(n, 1)
    return {
        "requests": counts.total_requests / n,
        "items_read": counts.items_read / n,
        "items_written": counts.items_written / n,
    }


def measure_size(store: Store, size: int, new_tags: int) -> dict[str, Any]:
    store.preload(size)
    counter = store.counter

    # This project: tag, then the stream delivers the records to TriggerEngine.
    ours_objects = store.new_objects(f"ours-{size}", new_tags)
    driver = StreamDriver(store)
    before = counter.snapshot()
    store.tag(ours_objects)
    tag_counts = counter.since(before)
    before = counter.snapshot()
    driver.drain(new_tags)
    resolve_counts = counter.since(before)
    ours_jobs = store.jobs_present(ours_objects)

    # The baseline: the same kind of tags, then one sensor tick over the whole store.
    base_objects = store.new_objects(f"base-{size}", new_tags)
    store.tag(base_objects)
    before = counter.snapshot()
    base_created = nmdc_sensor_tick(store)
    tick_counts = counter.since(before)
    base_jobs = store.jobs_present(base_objects)

    trigger_set_items = resolve_counts.items_read_by_table[store.registry_table]
    return {
        "store_objects": size,
        "new_tags": new_tags,
        "tag_write": {"total": tag_counts.as_dict(), "per_tag": _per(tag_counts, new_tags)},
        "ours": {
            "jobs_created": ours_jobs,
            "total": resolve_counts.as_dict(),
            "per_new_job": _per(resolve_counts, ours_jobs),
            # The trigger set (the whole registry) is read at most once a TRIGGER_CACHE_SECONDS
            # while records arrive: its reads follow the clock, however large the store is, and
            # one more or fewer in a run moves the per-job total by registry size / new jobs.
            "trigger_set_items_read": trigger_set_items,
            "store_items_read_per_new_job": (
                (resolve_counts.items_read - trigger_set_items) / max(ours_jobs, 1)
            ),
        },
        "baseline": {
            "store_objects_at_tick": size + 2 * new_tags,
            "jobs_created": base_created,
            "jobs_present_for_new_tags": base_jobs,
            "per_tick": tick_counts.as_dict(),
            "per_new_job": _per(tick_counts, base_created),
        },
    }


def run(config: CostConfig) -> dict[str, Any]:
    reps: list[list[dict[str, Any]]] = []
    for rep in range(config.repetitions):
        store = Store()
        try:
            rows: list[dict[str, Any]] = []
            for size in config.sizes:
                with step(f"cost: run {rep + 1}/{config.repetitions}, store of {size:,} tagged objects"):
                    row = measure_size(store, size, config.new_tags)
                rows.append(row)
                progress(
                    f"  items read per new job: ours {row['ours']['per_new_job']['items_read']:.2f}, "
                    f"NMDC sensor {row['baseline']['per_new_job']['items_read']:.1f}"
                )
        finally:
            store.stop()
        reps.append(rows)

    sizes: list[dict[str, Any]] = []
    for i, size in enumerate(config.sizes):
        runs = [r[i] for r in reps]
        ours = [r["ours"]["per_new_job"]["items_read"] for r in runs]
        base = [r["baseline"]["per_new_job"]["items_read"] for r in runs]
        sizes.append(
            {
                "store_objects": size,
                "ours_items_read_per_new_job": summarize(ours),
                "ours_store_items_read_per_new_job": summarize(
                    [r["ours"]["store_items_read_per_new_job"] for r in runs]
                ),
                "ours_trigger_set_items_read": summarize([r["ours"]["trigger_set_items_read"] for r in runs]),
                "baseline_items_read_per_new_job": summarize(base),
                "ours_requests_per_new_job": summarize([r["ours"]["per_new_job"]["requests"] for r in runs]),
                "baseline_requests_per_new_job": summarize(
                    [r["baseline"]["per_new_job"]["requests"] for r in runs]
                ),
                "baseline_items_read_per_tick": summarize(
                    [r["baseline"]["per_tick"]["items_read"] for r in runs]
                ),
                "detail": runs[-1],
            }
        )
    # Flat means: what a new job reads of the store does not grow with the store. The trigger set's
    # reads are left out of it (they follow the clock, see measure_size) and reported beside it.
    first = sizes[0]["ours_store_items_read_per_new_job"]["median"]
    last = sizes[-1]["ours_store_items_read_per_new_job"]["median"]
    growth = (last - first) / first if first else (0.0 if last == first else float("inf"))
    return {
        "measured": True,
        "config": dataclasses.asdict(config),
        "sizes": sizes,
        "ours_growth_first_to_last": growth,
        "baseline_growth_factor_first_to_last": (
            sizes[-1]["baseline_items_read_per_new_job"]["median"]
            / max(sizes[0]["baseline_items_read_per_new_job"]["median"], 1e-9)
        ),
        "exactly_one_job_per_tag": all(
            r["ours"]["jobs_created"] == r["new_tags"]
            and r["baseline"]["jobs_present_for_new_tags"] == r["new_tags"]
            for rows in reps
            for r in rows
        ),
    }
