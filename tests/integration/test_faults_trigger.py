"""The trigger engine under injected DynamoDB faults: nothing lost, nothing twice.

Objects are tagged through the object-type table (as the API does), the local stream poller feeds
the real TriggerEngine handler as Lambda's event source mapping would, and tests/faults.py fails
a fraction of DynamoDB calls with throttles, 500s, timeouts and lost responses (applied writes whose
answer never arrives). Counts are printed (`pytest -s`) and asserted.

Sizes scale with FAULT_OBJECTS (default 500, the issue's count); FAULT_SEED picks the fault sequence.
The calls run on one thread, so a seed draws the same faults for the same calls on every run.

Seen while writing these tests (tagging then by conditional PutItem, FAULT_SEED=5): a lost response
on a conditional write ends in a 400 (ConditionalCheckFailed) on botocore's retry, which botocore
does not refund to its retry quota, so under sustained faults the quota drained; faults then reached
TriggerEngine, about a third of the records failed, and since each retry of a partly failed batch
re-ran every record after the failed one, the 500-record drain took over 300 s instead of 30 s.
Nothing was lost or doubled; it was slow (IteratorAge rises - see docs/operations.md). A batch now
stops at its first failed record (logic/stream_batch.py), so a retry starts there and repeats nothing.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import boto3
import pytest

from jobtriggers.dal.assignments import AssignmentRepository
from jobtriggers.dal.dynamo import dynamodb, reset_clients, to_item
from jobtriggers.dal.jobs import JobRepository
from jobtriggers.dal.registry import RegistryRepository
from jobtriggers.errors import ConflictError, NotFoundError, RetryableStoreError
from jobtriggers.local.invoke import FakeLambdaContext, handler_path, load_handler
from jobtriggers.local.store import stream_arn
from jobtriggers.local.stream_poller import StreamMapping, StreamPoller, StreamsClient
from jobtriggers.local.template import find_template, functions, load_template, stream_sources
from jobtriggers.logic.reconcile import reconcile_triggers, select_triggers
from jobtriggers.logic.triggering import TriggerEngine
from jobtriggers.models import job_id_for
from tests.faults import FaultInjector, fast_backoff
from tests.stream_records import stream_records

FAULT_RATE = 0.2
OBJECTS = int(os.environ.get("FAULT_OBJECTS", "500"))
FAULT_SEED = int(os.environ.get("FAULT_SEED", "4"))
# seed/: the first type triggers one workflow, the second two.
TYPES = {
    "metagenome_raw_paired_end_reads": ["metag-1.0.0"],
    "read_qc_analysis_activity_set": ["mgasm-1.0.3", "mgrba-1.0.2"],
}


@pytest.fixture(autouse=True)
def _compressed_backoff() -> Iterator[None]:
    with fast_backoff():
        yield


@pytest.fixture
def record_failures(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Why TriggerEngine failed records (each becomes a batchItemFailure the stream retries)."""
    causes: Counter[str] = Counter()
    original = TriggerEngine.handle_stream_record

    def counted(self: TriggerEngine, record: Any) -> Any:
        try:
            return original(self, record)
        except Exception as exc:
            cause = exc.__cause__
            causes[
                f"{type(exc).__name__} <- {type(cause).__name__ if cause else '-'}: {cause or exc}"[:160]
            ] += 1
            raise

    monkeypatch.setattr(TriggerEngine, "handle_stream_record", counted)
    return causes


class _FaultsSparing(FaultInjector):
    """Random faults on every call except those that mention `spared`."""

    def __init__(self, spared: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spared = spared.encode()

    def _choose(self, operation: str, body: bytes) -> str | None:
        return None if self.spared in body else super()._choose(operation, body)


def _poller(tables: dict[str, str], poll_interval: float = 0.02) -> StreamPoller:
    """The template's event source mapping on this test's tables, calling a fresh TriggerEngine."""
    template = load_template()
    (source,) = [s for s in stream_sources(template) if s.function == "TriggerResolverFunction"]
    path, attr = handler_path(find_template().parent, functions(template)[source.function])
    mapping = StreamMapping.from_source(source, stream_arn(tables["OBJECT_TYPES_TABLE"]))
    return StreamPoller(
        [mapping],
        {source.function: load_handler(Path(path), attr, label="faults")},
        cast(StreamsClient, boto3.client("dynamodbstreams")),
        poll_interval=poll_interval,
        context_factory=lambda fn: FakeLambdaContext(function_name=fn, timeout_seconds=60),
    )


def _drain(poller: StreamPoller, records: int, max_polls: int = 400) -> int:
    """Poll until all `records` are through and none is pending (failed records and failed stream
    reads are retried on the next poll)."""
    for n in range(1, max_polls + 1):
        poller.poll_once()
        stats = poller.stats()
        if stats["pending_records"] == 0 and stats["records_checkpointed"] >= records:
            return n
    raise AssertionError(f"the stream did not drain in {max_polls} polls: {poller.stats()}")


def _register(tables: dict[str, str], object_ids: list[str]) -> None:
    for start in range(0, len(object_ids), 25):
        chunk = object_ids[start : start + 25]
        dynamodb().batch_write_item(
            RequestItems={
                tables["OBJECTS_TABLE"]: [
                    {"PutRequest": {"Item": to_item({"pk": f"object#{o}", "id": o})}} for o in chunk
                ]
            }
        )


def _tag(object_id: str, type_id: str, retries: Counter[str]) -> None:
    """Tag as the API does (AssignmentRepository.apply, one transaction), retrying as a site's client
    would on a 503. A 409 after a lost answer means the first attempt went through."""
    repo = AssignmentRepository()
    for _ in range(50):
        try:
            repo.apply(object_id, [type_id], [], by="site-faults")
            return
        except RetryableStoreError:
            retries["store_busy"] += 1
        except ConflictError:
            retries["already_applied"] += 1
            return
    raise AssertionError(f"could not tag {object_id} in 50 tries")


def _expected(n: int) -> tuple[list[tuple[str, str]], set[str]]:
    types = list(TYPES)
    tags = [(f"fault-obj-{i:04d}", types[i % len(types)]) for i in range(n)]
    jobs = {job_id_for(wf, obj) for obj, t in tags for wf in TYPES[t]}
    return tags, jobs


def _workflows() -> set[str]:
    return {w for ws in TYPES.values() for w in ws}


def _listed_job_ids() -> list[str]:
    """Every job, read page by page through each workflow's index (duplicates would show)."""
    ids: list[str] = []
    for wf in _workflows():
        token = None
        while True:
            items, token = JobRepository().list_page(workflow_id=wf, limit=200, page_token=token)
            ids += [j.id for j in items]
            if not token:
                break
    return ids


def test_injector_fails_the_given_fraction_and_botocore_retries_hide_most(tables: dict[str, str]) -> None:
    # Given 20 % injected faults on the shared client
    with FaultInjector(rate=FAULT_RATE, seed=1).attached(dynamodb()) as faults:
        # When 200 reads are made
        for n in range(200):
            dynamodb().get_item(TableName=tables["JOBS_TABLE"], Key=to_item({"job_key": f"wf#{n}"}))
    summary = faults.summary()
    print("injector:", summary)
    # Then about a fifth of the calls failed, of every kind, and every read still succeeded
    assert summary["calls"] >= 200 + summary["injected"] - 5
    assert 0.12 <= summary["rate_observed"] <= 0.28
    assert set(summary["by_kind"]) == {"throttle", "server_error", "timeout", "lost_response"}


def test_tagging_under_faults_makes_every_expected_job_exactly_once(
    seeded_tables: dict[str, str], record_failures: Counter[str]
) -> None:
    # Given OBJECTS registered objects and the jobs seed/ triggers for their types
    tags, expected = _expected(OBJECTS)
    _register(seeded_tables, [o for o, _ in tags])
    poller = _poller(seeded_tables)
    retries: Counter[str] = Counter()
    started = time.monotonic()
    # When they are tagged under 20 % faults while the poller feeds TriggerEngine, until the
    # stream is drained, its own stream reads failing too (one thread: the same seed draws the
    # same faults for the same calls)
    streams = cast(Any, poller.streams)
    with FaultInjector(rate=FAULT_RATE, seed=FAULT_SEED).attached(dynamodb(), streams) as faults:
        for n, (object_id, type_id) in enumerate(tags, 1):
            _tag(object_id, type_id, retries)
            if n % 20 == 0:
                poller.poll_once()  # the stream is read while tagging goes on, as on AWS
        polls = _drain(poller, records=OBJECTS)
        with faults.paused():
            listed = _listed_job_ids()
    elapsed = time.monotonic() - started
    stats = poller.stats()
    print(
        f"\n{OBJECTS} objects, {len(expected)} expected jobs, {len(listed)} listed;",
        f"{elapsed:.1f}s, {polls} polls;",
        f"faults {faults.summary()};",
        f"tag retries {dict(retries)};",
        "poller",
        {
            k: stats[k]
            for k in (
                "batches",
                "records_delivered",
                "function_errors",
                "partial_failures",
                "bisects",
                "read_errors",
            )
        },
        f"dead letters {stats['dlq_entries']};",
        f"record failures {sum(record_failures.values())}: {dict(record_failures.most_common(3))}",
    )
    # Then every expected job exists exactly once, no other job exists, and nothing was dead-lettered
    counts = Counter(listed)
    assert [j for j, n in counts.items() if n > 1] == []
    assert set(listed) == expected
    assert stats["dlq_entries"] == 0
    # And faults really happened, of every kind, on the trigger engine's own writes too
    assert faults.injected >= 0.1 * faults.calls
    assert set(faults.faults) == {"throttle", "server_error", "timeout", "lost_response"}
    assert faults.by_operation["PutItem"] > 0
    assert faults.by_operation["GetRecords"] + faults.by_operation["DescribeStream"] > 0
    assert stats["records_delivered"] >= OBJECTS


def test_a_cancelled_transaction_neither_stops_the_stream_nor_leaves_records(
    seeded_tables: dict[str, str],
) -> None:
    # Given a poller reading the stream, and one object tagged through the API's transaction
    _register(seeded_tables, ["real-1", "real-2"])
    poller = _poller(seeded_tables)
    repo = AssignmentRepository()
    repo.apply("real-1", ["metagenome_raw_paired_end_reads"], [], by="s")
    poller.poll_once()
    # When tagging transactions are cancelled (an unknown object: 404; a type it has: 409) ...
    with pytest.raises(NotFoundError):
        repo.apply("no-such-object", ["metagenome_raw_paired_end_reads"], [], by="s")
    with pytest.raises(ConflictError):
        repo.apply("real-1", ["read_qc_analysis_activity_set", "metagenome_raw_paired_end_reads"], [], by="s")
    # ... and another object is tagged after them
    repo.apply("real-2", ["metagenome_raw_paired_end_reads"], [], by="s")
    poller.poll_once()
    poller.poll_once()
    # Then the poller still reads the stream, and only the two real tags made jobs
    assert set(_listed_job_ids()) == {
        job_id_for("metag-1.0.0", "real-1"),
        job_id_for("metag-1.0.0", "real-2"),
    }
    assert poller.stats()["records_delivered"] == 2


def test_records_that_exhaust_their_retries_are_recovered_by_reconcile(seeded_tables: dict[str, str]) -> None:
    # Given tagged objects, 20 % random faults, and a sustained fault on one object's job writes
    # (every PutItem that names it fails, past botocore's retries), as a hot or broken item would
    n = max(10, OBJECTS // 20)
    tags, expected = _expected(n)
    _register(seeded_tables, [o for o, _ in tags])
    for object_id, type_id in tags:
        _tag(object_id, type_id, Counter())
    stuck_object = tags[n // 2][0]
    poller = _poller(seeded_tables)
    # The random faults leave the stuck object's calls to the sustained fault: a random "lost
    # response" sends the request itself, which would apply the write the sustained fault stands for
    # (the bisected retries try the stuck record more often than the old whole-batch retries did).
    random_faults = _FaultsSparing(stuck_object, rate=FAULT_RATE, seed=11)
    stuck = FaultInjector(
        rate=1.0, kinds=["server_error"], operations={"PutItem"}, only_if_body_contains=stuck_object
    )
    # When the poller runs until the stream is drained, retrying and dead-lettering as Lambda does
    with random_faults.attached(dynamodb()), stuck.attached(dynamodb()):
        _drain(poller, records=n)
        with random_faults.paused(), stuck.paused():
            after_stream = set(_listed_job_ids())
    stats = poller.stats()
    dead = poller.dlq
    missing = expected - after_stream
    print(
        f"\n{n} objects: random faults {random_faults.summary()}, sustained faults {stuck.injected};",
        f"partial failures {stats['partial_failures']}, dead-letter entries {len(dead)}",
        f"({stats['dlq_records']} records), jobs missing {len(missing)}",
    )
    # Then the stuck record was retried MaximumRetryAttempts times and dead-lettered alone (the
    # handler raises when a batch's first record fails, and Lambda bisects down to it), with shard
    # and sequence numbers only (no records); its jobs are missing. The sustained fault drains
    # botocore's retry quota, so another record may run out of retries under the random faults
    # too: it is dead-lettered alone as well, and exactly the dead-lettered objects miss jobs.
    object_of = {
        r["dynamodb"]["SequenceNumber"]: r["dynamodb"]["Keys"]["object_id"]["S"]
        for r in stream_records(seeded_tables["OBJECT_TYPES_TABLE"])
    }
    dead_objects = {object_of[d["DDBStreamBatchInfo"]["startSequenceNumber"]] for d in dead}
    assert stuck_object in dead_objects
    assert {job_id_for(wf, stuck_object) for wf in _workflows()} & expected <= missing
    assert {
        j for j in expected if any(j == job_id_for(wf, o) for wf in _workflows() for o in dead_objects)
    } >= missing
    for entry in dead:
        info = entry["DDBStreamBatchInfo"]
        assert info["batchSize"] == 1
        assert set(info) >= {"shardId", "startSequenceNumber", "endSequenceNumber", "streamArn"}
        assert "Records" not in entry
        assert entry["requestContext"]["approximateInvokeCount"] == 6  # the first try and 5 retries
    # And when the fault is over and the runbook's recovery, reconcile, runs under random faults
    # (from an operator's shell: a new process, so a new client with botocore's full retry quota,
    # which 20 % faults drain within a few hundred calls)
    reset_clients()
    registry = RegistryRepository()
    resolver = TriggerEngine(registry, JobRepository())
    with FaultInjector(rate=FAULT_RATE, seed=12).attached(dynamodb()) as faults:
        for _ in range(5):
            try:
                results = reconcile_triggers(select_triggers(registry), resolver, AssignmentRepository())
                break
            except RetryableStoreError:
                continue
        else:
            raise AssertionError("reconcile failed 5 times running")
        with faults.paused():
            listed = _listed_job_ids()
    created = sum(r.created for r in results)
    print(f"reconcile created {created} jobs under faults {faults.summary()}")
    # Then every expected job exists exactly once, and reconcile made no job twice
    assert Counter(listed).most_common(1)[0][1] == 1
    assert set(listed) == expected
    assert created <= len(missing)
