"""A new trigger and a tag at the same time: no tag falls between the stream and the backfill.

Against moto over HTTP. moto's indexes are never behind their tables, so where the race needs an
index that lags, a botocore hook answers Queries on that index from before the trigger existed.
The argument these tests walk through is in docs/architecture.md ("A new trigger and a tag at the
same time").
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse, HTTPHeaders

from jobtriggers.dal.assignments import AssignmentRepository
from jobtriggers.dal.dynamo import dynamodb, to_item
from jobtriggers.dal.jobs import JobRepository
from jobtriggers.dal.registry import RegistryRepository
from jobtriggers.errors import NotFoundError
from jobtriggers.logic.deploy import handle_seed_event
from jobtriggers.logic.seed import load_seed_dir, sync_registry
from jobtriggers.logic.triggering import (
    BACKFILL_DELAY_SECONDS,
    TRIGGER_CACHE_SECONDS,
    TriggerEngine,
    TriggerSet,
)
from jobtriggers.models import Trigger, job_id_for
from tests.api_events import LambdaContextStub, load_function
from tests.conftest import SEED_DIR
from tests.stream_records import stream_records

NEW_TYPE, NEW_WORKFLOW = "gcms-metab-calibration", "gcms-metab-1.0.0"  # in seed/, no trigger links them
NEW_TRIGGER = Trigger(
    id=f"{NEW_TYPE}--{NEW_WORKFLOW}",
    object_type_id=NEW_TYPE,
    workflow_id=NEW_WORKFLOW,
    created_at="2024-01-01T00:00:00Z",
)


class _Body:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._data


@contextmanager
def index_behind(table: str, index: str) -> Iterator[list[str]]:
    """Queries on `table`'s `index` answer empty, as an index that has not caught up with the new
    trigger would (for a type only the new trigger names, empty is exactly that answer)."""
    answered: list[str] = []

    def before_send(request: Any, **_: Any) -> AWSResponse | None:
        body = json.loads(request.body or b"{}")
        if body.get("TableName") != table or body.get("IndexName") != index:
            return None
        answered.append(body["ExpressionAttributeValues"])
        headers = HTTPHeaders()
        headers["Content-Type"] = "application/x-amz-json-1.0"
        return AWSResponse(request.url, 200, headers, _Body(b'{"Items": [], "Count": 0, "ScannedCount": 0}'))

    client = dynamodb()
    client.meta.events.register(
        "before-send.dynamodb.Query",
        before_send,  # type: ignore[arg-type]  # a before-send hook may answer for the server
        unique_id="index-behind",
    )
    try:
        yield answered
    finally:
        client.meta.events.unregister("before-send.dynamodb.Query", unique_id="index-behind")


def _register(tables: dict[str, str], object_id: str) -> None:
    dynamodb().put_item(
        TableName=tables["OBJECTS_TABLE"], Item=to_item({"pk": f"object#{object_id}", "id": object_id})
    )


def _tag_record(tables: dict[str, str], object_id: str, type_id: str) -> dict[str, Any]:
    """Tag an object as the API does and return its stream record, shaped as Lambda delivers it."""
    _register(tables, object_id)
    AssignmentRepository().apply(object_id, [type_id], [], by="site-a")
    (record,) = [
        r
        for r in stream_records(tables["OBJECT_TYPES_TABLE"])
        if r["dynamodb"]["Keys"]["object_id"]["S"] == object_id
    ]
    record["dynamodb"].pop("ApproximateCreationDateTime", None)
    return dict(record)


def _has_job(workflow_id: str, object_id: str) -> bool:
    try:
        JobRepository().get(job_id_for(workflow_id, object_id))
    except NotFoundError:
        return False
    return True


def test_the_resolver_sees_a_trigger_its_index_does_not_have_yet(seeded_tables: dict[str, str]) -> None:
    # Given a trigger just written, which the registry's by_object_type index has not caught up with
    registry_table = seeded_tables["REGISTRY_TABLE"]
    with index_behind(registry_table, "by_object_type") as index_answers:
        RegistryRepository().put("trigger", NEW_TRIGGER)
        # When an object is tagged with its type and TriggerEngine handles the record
        record = _tag_record(seeded_tables, "tagged-right-after", NEW_TYPE)
        response = load_function("trigger_resolver")({"Records": [record]}, LambdaContextStub())
    # Then the job exists: the trigger set was read from the table itself, strongly consistent
    assert response == {"batchItemFailures": []}
    assert _has_job(NEW_WORKFLOW, "tagged-right-after")
    assert index_answers == []  # and the lagging index was not asked
    # (while the index, asked, would not have known the trigger: the hook is in force)
    with index_behind(registry_table, "by_object_type") as index_answers:
        assert RegistryRepository().triggers_for_object_type(NEW_TYPE) == []
    assert len(index_answers) == 1
    assert RegistryRepository().triggers_for_object_type(NEW_TYPE) == [NEW_TRIGGER]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_a_tag_the_warm_resolver_misses_is_backfilled(seeded_tables: dict[str, str], tmp_path: Path) -> None:
    # Given a warm TriggerEngine that read the trigger set (resolving an unrelated tag) ...
    clock = FakeClock()
    trigger_set = TriggerSet(RegistryRepository().all_triggers, clock=clock)
    stream = TriggerEngine(trigger_set, JobRepository())
    stream.handle_stream_record(_tag_record(seeded_tables, "earlier", "metagenome_sequencing_activity_set"))
    assert trigger_set.reads == 1
    # ... and a seed with a new trigger, which a deploy loads
    seed = tmp_path / "seed"
    seed.mkdir()
    for f in SEED_DIR.glob("*.json"):
        (seed / f.name).write_text(f.read_text(encoding="utf-8"), encoding="utf-8")
    triggers = json.loads((seed / "triggers.json").read_text(encoding="utf-8"))
    (seed / "triggers.json").write_text(json.dumps([*triggers, NEW_TRIGGER.model_dump(mode="json")]))
    waits: list[float] = []

    def meanwhile(seconds: float) -> None:
        # While the load waits: a site tags an object with the new type right after the trigger was
        # written, and the warm resolver handles it within its cache lifetime - with the set it read
        # before the trigger existed, so the stream makes no job (the race, on purpose)
        waits.append(seconds)
        record = _tag_record(seeded_tables, "tagged-in-the-gap", NEW_TYPE)
        clock.advance(TRIGGER_CACHE_SECONDS / 2)
        assert stream.handle_stream_record(record).created == []
        assert not _has_job(NEW_WORKFLOW, "tagged-in-the-gap")
        clock.advance(seconds)

    # When the seed is loaded (the seeder's code), the waiting done by `meanwhile`
    registry = RegistryRepository()
    report = sync_registry(
        load_seed_dir(seed),
        registry,
        TriggerEngine(registry, JobRepository()),
        AssignmentRepository(),
        sleep=meanwhile,
    )
    # Then it waited the cache lifetime and the index margin after writing the trigger, and its
    # backfill made the job the stream missed
    assert len(waits) == 1 and waits[0] == pytest.approx(BACKFILL_DELAY_SECONDS, abs=0.5)
    assert report.backfilled == {NEW_TRIGGER.id: 1}
    assert _has_job(NEW_WORKFLOW, "tagged-in-the-gap")
    # And once its cache has expired, the warm resolver makes such jobs itself
    later = _tag_record(seeded_tables, "tagged-later", NEW_TYPE)
    assert stream.handle_stream_record(later).created == [job_id_for(NEW_WORKFLOW, "tagged-later")]
    assert trigger_set.reads == 2


def test_the_trigger_set_is_read_again_after_its_lifetime_and_never_trusted_past_it() -> None:
    clock = FakeClock()
    reads: list[float] = []

    def load() -> list[Trigger]:
        reads.append(clock())
        return [NEW_TRIGGER]

    trigger_set = TriggerSet(load, ttl=1.0, clock=clock)
    assert trigger_set.triggers_for_object_type(NEW_TYPE) == [NEW_TRIGGER]
    clock.advance(0.99)
    trigger_set.triggers_for_object_type(NEW_TYPE)
    assert len(reads) == 1  # within its lifetime: the cached set
    clock.advance(0.01)
    trigger_set.triggers_for_object_type(NEW_TYPE)
    assert len(reads) == 2  # at its lifetime: read again
    clock.advance(-5)  # the wall clock stepped back (a resync): the cached set is not trusted
    trigger_set.triggers_for_object_type("other-type")
    assert len(reads) == 3


def test_a_deploy_starts_the_backfill_only_after_the_delay(
    seeded_tables: dict[str, str], tmp_path: Path
) -> None:
    # Given the times of the seeder's registry writes and of its reads of the object-type index
    seed = tmp_path / "seed"
    seed.mkdir()
    for f in SEED_DIR.glob("*.json"):
        (seed / f.name).write_text(f.read_text(encoding="utf-8"), encoding="utf-8")
    triggers = json.loads((seed / "triggers.json").read_text(encoding="utf-8"))
    (seed / "triggers.json").write_text(json.dumps([*triggers, NEW_TRIGGER.model_dump(mode="json")]))
    writes: list[float] = []
    index_reads: list[float] = []

    def note(request: Any, event_name: str = "", **_: Any) -> None:
        body = json.loads(request.body or b"{}")
        operation = event_name.rsplit(".", 1)[-1]
        if operation == "PutItem" and body.get("TableName") == seeded_tables["REGISTRY_TABLE"]:
            writes.append(time.monotonic())
        if operation == "Query" and body.get("TableName") == seeded_tables["OBJECT_TYPES_TABLE"]:
            index_reads.append(time.monotonic())

    client = dynamodb()
    client.meta.events.register("before-send.dynamodb.*", note, unique_id="deploy-timing")
    try:
        # When CloudFormation updates the RegistrySeed resource (the seeder's own code path)
        registry = RegistryRepository()
        body = handle_seed_event(
            {
                "RequestType": "Update",
                "ResponseURL": "https://example.invalid/r",
                "StackId": "s",
                "RequestId": "r",
            },
            seed,
            lambda: (registry, TriggerEngine(registry, JobRepository()), AssignmentRepository()),
            lambda url, b: None,
        )
    finally:
        client.meta.events.unregister("before-send.dynamodb.*", unique_id="deploy-timing")
    # Then the new trigger's backfill read the index no sooner than the delay after the last write
    assert body["Status"] == "SUCCESS", body
    assert writes and index_reads
    assert min(index_reads) - max(writes) >= BACKFILL_DELAY_SECONDS - 0.05
    assert BACKFILL_DELAY_SECONDS > TRIGGER_CACHE_SECONDS
