"""The local event source mapping against an in-memory stream: batches, partial failures, retries,
bisecting, the dead-letter list, filters, record age and shards, as Lambda's mapping behaves."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.exceptions import ClientError

from jobtriggers.local.stream_poller import (
    StreamMapping,
    StreamPoller,
    matches_pattern,
    parse_filter_criteria,
)
from jobtriggers.local.template import load_template, stream_sources

ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/2024-01-01T00:00:00.000"
BASE_SEQ = 1000
T0 = 1_700_000_000.0


def raw_record(n: int, event_name: str = "INSERT", arrival: float = T0, **image: Any) -> dict[str, Any]:
    new_image = {"object_id": {"S": f"o{n}"}, **image}
    return {
        "eventID": f"e{n}",
        "eventName": event_name,
        "eventVersion": "1.0",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": {
            "ApproximateCreationDateTime": datetime.fromtimestamp(arrival, UTC),
            "Keys": {"object_id": {"S": f"o{n}"}},
            "NewImage": new_image,
            "SequenceNumber": str(BASE_SEQ + n),
            "SizeBytes": 10,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        },
    }


class FakeStreams:
    """dynamodbstreams as the poller uses it: shards of records, iterators as 'shard:position'."""

    def __init__(self) -> None:
        self.shards: dict[str, list[dict[str, Any]]] = {"s1": []}
        self.parents: dict[str, str] = {}
        self.closed: set[str] = set()
        self.expire_next = False
        self.reads: list[str] = []

    def add(self, *records: dict[str, Any], shard: str = "s1") -> None:
        self.shards.setdefault(shard, []).extend(records)

    def describe_stream(self, **kwargs: Any) -> dict[str, Any]:
        shards = [
            {"ShardId": sid, **({"ParentShardId": self.parents[sid]} if sid in self.parents else {})}
            for sid in self.shards
        ]
        return {"StreamDescription": {"StreamArn": kwargs["StreamArn"], "Shards": shards}}

    def get_shard_iterator(self, **kwargs: Any) -> dict[str, Any]:
        sid, kind = kwargs["ShardId"], kwargs["ShardIteratorType"]
        records = self.shards[sid]
        if kind == "TRIM_HORIZON":
            pos = 0
        elif kind == "LATEST":
            pos = len(records)
        else:
            seq = int(kwargs["SequenceNumber"])
            pos = next(
                (i for i, r in enumerate(records) if int(r["dynamodb"]["SequenceNumber"]) > seq), len(records)
            )
        return {"ShardIterator": f"{sid}:{pos}"}

    def get_records(self, **kwargs: Any) -> dict[str, Any]:
        if self.expire_next:
            self.expire_next = False
            raise ClientError({"Error": {"Code": "ExpiredIteratorException"}}, "GetRecords")
        sid, pos_text = kwargs["ShardIterator"].split(":")
        self.reads.append(sid)
        pos = int(pos_text)
        records = self.shards[sid][pos : pos + kwargs["Limit"]]
        end = pos + len(records)
        done = sid in self.closed and end >= len(self.shards[sid])
        return {"Records": records, "NextShardIterator": None if done else f"{sid}:{end}"}


class FakeHandler:
    """Records each batch (as object numbers); fails as told."""

    def __init__(self, raise_on: set[int] | None = None, fail_on: set[int] | None = None) -> None:
        self.raise_on = raise_on or set()
        self.fail_on = fail_on or set()
        self.batches: list[list[int]] = []
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        numbers = [int(r["dynamodb"]["Keys"]["object_id"]["S"][1:]) for r in event["Records"]]
        self.batches.append(numbers)
        self.events.append(event)
        if self.raise_on & set(numbers):
            raise RuntimeError("poison")
        failures = [
            {"itemIdentifier": r["dynamodb"]["SequenceNumber"]}
            for r, n in zip(event["Records"], numbers, strict=True)
            if n in self.fail_on
        ]
        return {"batchItemFailures": failures}


def make_poller(
    handler: FakeHandler, streams: FakeStreams, now: list[float] | None = None, **mapping: Any
) -> StreamPoller:
    settings: dict[str, Any] = {
        "batch_size": 100,
        "report_batch_item_failures": True,
        "maximum_retry_attempts": 5,
        **mapping,
    }
    clock = now or [T0]
    return StreamPoller(
        [StreamMapping(function="Fn", stream_arn=ARN, **settings)],
        {"Fn": handler},
        streams,
        clock=lambda: clock[0],
    )


def test_partial_failure_resumes_from_the_lowest_failed_record() -> None:
    # Given five records and a handler that reports 4 and 2 as failed the first time only
    streams = FakeStreams()
    streams.add(*(raw_record(n) for n in range(1, 6)))
    handler = FakeHandler(fail_on={2, 4})
    poller = make_poller(handler, streams)
    # When the poller polls, and then again after the records recover
    poller.poll_once()
    handler.fail_on = set()
    poller.poll_once()
    poller.poll_once()
    # Then the retry started at record 2 (1 was checkpointed), and nothing was delivered after that
    assert handler.batches == [[1, 2, 3, 4, 5], [2, 3, 4, 5]]
    stats = poller.stats()
    assert stats["partial_failures"] == 1
    assert stats["records_checkpointed"] == 5
    assert poller.dlq == []


def test_a_record_failing_past_the_retry_limit_goes_to_the_dlq_and_the_shard_moves_on() -> None:
    # Given a poison record (3) among good ones, and two retries allowed
    streams = FakeStreams()
    streams.add(*(raw_record(n) for n in range(1, 6)))
    handler = FakeHandler(fail_on={3})
    poller = make_poller(handler, streams, maximum_retry_attempts=2)
    # When the poller polls until the retries are used up, then a new record arrives
    for _ in range(4):
        poller.poll_once()
    streams.add(raw_record(6))
    poller.poll_once()
    # Then 3..5 were tried three times (1 + 2 retries), dead-lettered as one batch, and 6 went alone
    assert handler.batches == [[1, 2, 3, 4, 5], [3, 4, 5], [3, 4, 5], [6]]
    (entry,) = poller.dlq
    info = entry["DDBStreamBatchInfo"]
    assert (info["startSequenceNumber"], info["endSequenceNumber"]) == (str(BASE_SEQ + 3), str(BASE_SEQ + 5))
    assert info["batchSize"] == 3
    assert info["shardId"] == "s1"
    assert info["streamArn"] == ARN
    assert info["approximateArrivalOfFirstRecord"] == "2023-11-14T22:13:20.000Z"
    assert entry["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert entry["requestContext"]["approximateInvokeCount"] == 3
    assert poller.stats()["dlq_records"] == 3


def test_an_exception_bisects_the_batch_until_the_poison_record_is_alone() -> None:
    # Given four records, the third of which makes the handler raise, bisect on, one retry
    streams = FakeStreams()
    streams.add(*(raw_record(n) for n in range(1, 5)))
    handler = FakeHandler(raise_on={3})
    poller = make_poller(handler, streams, bisect_on_error=True, maximum_retry_attempts=1)
    # When the poller polls a few times
    for _ in range(3):
        poller.poll_once()
    # Then halves were tried at once (splitting is not a retry), 3 alone twice, then 4 went on
    assert handler.batches == [[1, 2, 3, 4], [1, 2], [3, 4], [3], [3], [4]]
    (entry,) = poller.dlq
    info = entry["DDBStreamBatchInfo"]
    assert info["startSequenceNumber"] == info["endSequenceNumber"] == str(BASE_SEQ + 3)
    assert entry["responseContext"]["functionError"] == "Unhandled"
    assert "poison" in entry["local"]["lastError"]
    stats = poller.stats()
    assert stats["bisects"] == 2
    assert stats["function_errors"] == 4
    assert stats["records_checkpointed"] == 4


def test_an_exception_without_bisect_retries_the_whole_batch_then_dead_letters_it() -> None:
    # Given three records, one raising, no bisect, one retry
    streams = FakeStreams()
    streams.add(*(raw_record(n) for n in range(1, 4)))
    handler = FakeHandler(raise_on={2})
    poller = make_poller(handler, streams, maximum_retry_attempts=1)
    # When the poller polls three times
    for _ in range(3):
        poller.poll_once()
    # Then the whole batch was tried twice and dead-lettered whole
    assert handler.batches == [[1, 2, 3], [1, 2, 3]]
    (entry,) = poller.dlq
    assert entry["DDBStreamBatchInfo"]["batchSize"] == 3


def test_an_invalid_partial_response_counts_as_a_failure_of_the_whole_batch() -> None:
    # Given a handler that names an item that is not in the batch
    streams = FakeStreams()
    streams.add(raw_record(1), raw_record(2))
    calls: list[int] = []

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        calls.append(len(event["Records"]))
        return {"batchItemFailures": [{"itemIdentifier": "not-a-sequence-number"}]}

    poller = StreamPoller(
        [StreamMapping("Fn", ARN, report_batch_item_failures=True, maximum_retry_attempts=0)],
        {"Fn": handler},
        streams,
    )
    # When it polls once
    poller.poll_once()
    # Then both records are dead-lettered after that one failed invocation
    assert calls == [2]
    assert poller.dlq[0]["DDBStreamBatchInfo"]["batchSize"] == 2


def test_filter_criteria_skip_records_as_lambda_does() -> None:
    # Given INSERT, MODIFY and REMOVE records and the template's filter on INSERT
    streams = FakeStreams()
    streams.add(raw_record(1), raw_record(2, "MODIFY"), raw_record(3, "REMOVE"), raw_record(4))
    handler = FakeHandler()
    patterns = parse_filter_criteria({"Filters": [{"Pattern": '{"eventName": ["INSERT"]}'}]})
    poller = make_poller(handler, streams, filter_patterns=patterns)
    # When it polls
    poller.poll_once()
    # Then only the INSERTs reached the handler, the others were checkpointed as filtered
    assert handler.batches == [[1, 4]]
    assert poller.stats()["records_filtered"] == 2


def test_filter_patterns_match_like_event_filtering() -> None:
    # Given a record as the handler sees it
    record = {"eventName": "INSERT", "dynamodb": {"NewImage": {"object_type_id": {"S": "metag_x"}}}}
    image = {"dynamodb": {"NewImage": {"object_type_id": {"S": [{"prefix": "metag"}]}}}}
    # Then prefix, exists, anything-but and nested keys behave as documented
    assert matches_pattern(image, record)
    assert not matches_pattern({"dynamodb": {"NewImage": {"object_type_id": {"S": ["other"]}}}}, record)
    assert matches_pattern({"eventName": [{"anything-but": ["REMOVE"]}]}, record)
    assert not matches_pattern({"eventName": [{"anything-but": "INSERT"}]}, record)
    assert matches_pattern({"userIdentity": [{"exists": False}]}, record)
    assert not matches_pattern({"userIdentity": [{"exists": True}]}, record)
    with pytest.raises(ValueError):
        matches_pattern({"eventName": "INSERT"}, record)


def test_batches_hold_at_most_the_batch_size() -> None:
    # Given 250 records and batch size 100
    streams = FakeStreams()
    streams.add(*(raw_record(n) for n in range(250)))
    handler = FakeHandler()
    poller = make_poller(handler, streams, batch_size=100)
    # When it polls
    poller.poll_once()
    # Then three batches in order
    assert [len(b) for b in handler.batches] == [100, 100, 50]
    assert [n for b in handler.batches for n in b] == list(range(250))


def test_records_older_than_the_maximum_age_go_to_the_dlq_without_an_invocation() -> None:
    # Given a record that arrived an hour and a bit ago, and one that just arrived
    now = [T0 + 3700]
    streams = FakeStreams()
    streams.add(raw_record(1, arrival=T0), raw_record(2, arrival=T0 + 3690))
    handler = FakeHandler()
    poller = make_poller(handler, streams, now, maximum_record_age_seconds=3600)
    # When it polls
    poller.poll_once()
    # Then the old one was dead-lettered for its age and the new one delivered
    assert handler.batches == [[2]]
    (entry,) = poller.dlq
    assert entry["requestContext"]["condition"] == "RecordAgeExceeded"
    assert entry["DDBStreamBatchInfo"]["startSequenceNumber"] == str(BASE_SEQ + 1)


def test_events_are_lambda_shaped() -> None:
    # Given a record with a binary attribute
    streams = FakeStreams()
    streams.add(raw_record(1, blob={"B": b"\x00\x01"}))
    handler = FakeHandler()
    poller = make_poller(handler, streams, region="eu-west-1")
    # When it is delivered
    poller.poll_once()
    # Then the record carries what a Lambda event carries
    (record,) = handler.events[0]["Records"]
    assert record["eventSource"] == "aws:dynamodb"
    assert record["eventSourceARN"] == ARN
    assert record["awsRegion"] == "eu-west-1"
    assert record["dynamodb"]["ApproximateCreationDateTime"] == int(T0)
    assert record["dynamodb"]["NewImage"]["blob"]["B"] == base64.b64encode(b"\x00\x01").decode()


def test_a_child_shard_waits_for_its_parent_and_an_expired_iterator_is_renewed() -> None:
    # Given a closed parent shard with two records and a child shard with one
    streams = FakeStreams()
    streams.add(raw_record(1), raw_record(2), shard="s1")
    streams.closed.add("s1")
    streams.add(raw_record(3), shard="s2")
    streams.parents["s2"] = "s1"
    handler = FakeHandler()
    poller = make_poller(handler, streams)
    # When the first read of the parent fails with an expired iterator, and the poller polls on
    streams.expire_next = True
    poller.poll_once()
    poller.poll_once()
    poller.poll_once()
    # Then the parent's records came first, each once, then the child's
    assert [n for b in handler.batches for n in b] == [1, 2, 3]
    assert streams.reads.index("s2") > streams.reads.index("s1")


def test_a_shard_that_appears_later_is_read_from_its_start() -> None:
    # Given a poller that has seen the stream once, with LATEST as starting position
    streams = FakeStreams()
    streams.add(raw_record(1))
    handler = FakeHandler()
    now = [T0]
    poller = make_poller(handler, streams, now, starting_position="LATEST")
    poller.poll_once()
    # When a new shard appears with a record, and the shard list is refreshed
    streams.add(raw_record(2), shard="s9")
    now[0] += 5
    poller.poll_once()
    # Then LATEST skipped the old record, and the new shard was read from its start
    assert handler.batches == [[2]]


def test_the_template_mapping_is_read_from_template_yaml() -> None:
    # Given the template's DynamoDB event sources
    sources = {s.function: s for s in stream_sources(load_template())}
    assert {f: s.table for f, s in sources.items()} == {
        "TriggerResolverFunction": "ObjectTypesTable",
        "JobEventsFunction": "JobsTable",
    }
    # When TriggerResolver's becomes a mapping
    mapping = StreamMapping.from_source(sources["TriggerResolverFunction"], ARN)
    # Then its rules are the template's
    assert mapping.function == "TriggerResolverFunction"
    assert mapping.batch_size == 100
    assert mapping.bisect_on_error is True
    assert mapping.maximum_retry_attempts == 5
    assert mapping.maximum_record_age_seconds == 3600
    assert mapping.report_batch_item_failures is True
    assert mapping.wants({"eventName": "INSERT"})
    assert not mapping.wants({"eventName": "REMOVE"})
    # And JobEvents' takes every change of a job but its removal
    jobs = StreamMapping.from_source(sources["JobEventsFunction"], ARN)
    assert (jobs.bisect_on_error, jobs.report_batch_item_failures) == (True, True)
    assert (jobs.maximum_retry_attempts, jobs.maximum_record_age_seconds) == (20, 21600)
    assert jobs.wants({"eventName": "INSERT"}) and jobs.wants({"eventName": "MODIFY"})
    assert not jobs.wants({"eventName": "REMOVE"})


def test_the_background_thread_delivers_and_stops_cleanly() -> None:
    # Given a running poller
    streams = FakeStreams()
    handler = FakeHandler()
    poller = StreamPoller([StreamMapping("Fn", ARN)], {"Fn": handler}, streams, poll_interval=0.01)
    poller.start()
    try:
        # When a record arrives
        streams.add(raw_record(7))
        idle = poller.wait_until_idle(5)
    finally:
        poller.stop()
    # Then it was delivered and the thread is gone
    assert idle
    assert handler.batches == [[7]]
    assert not poller.running


class RoutedStreams:
    """Several streams behind one client, told apart by StreamArn (and by their iterators)."""

    def __init__(self, streams: dict[str, FakeStreams]) -> None:
        self.streams = streams
        self.arns = list(streams)

    def describe_stream(self, **kwargs: Any) -> dict[str, Any]:
        return self.streams[kwargs["StreamArn"]].describe_stream(**kwargs)

    def get_shard_iterator(self, **kwargs: Any) -> dict[str, Any]:
        inner = self.streams[kwargs["StreamArn"]].get_shard_iterator(**kwargs)["ShardIterator"]
        return {"ShardIterator": f"{self.arns.index(kwargs['StreamArn'])}|{inner}"}

    def get_records(self, **kwargs: Any) -> dict[str, Any]:
        index, inner = kwargs["ShardIterator"].split("|", 1)
        arn = self.arns[int(index)]
        resp = self.streams[arn].get_records(**{**kwargs, "ShardIterator": inner})
        if resp["NextShardIterator"]:
            resp["NextShardIterator"] = f"{index}|{resp['NextShardIterator']}"
        return resp


def test_a_slow_consumer_does_not_hold_up_another_mappings_stream() -> None:
    # Given two mappings (two tables' streams), the first one's handler stuck in an invocation
    import threading

    release = threading.Event()
    slow_calls: list[int] = []

    def slow(event: dict[str, Any], context: Any) -> dict[str, Any]:
        slow_calls.append(len(event["Records"]))
        release.wait(10)
        return {"batchItemFailures": []}

    arn_b = ARN.replace("table/t/", "table/u/")
    streams = {ARN: FakeStreams(), arn_b: FakeStreams()}
    fast = FakeHandler()
    poller = StreamPoller(
        [StreamMapping("Slow", ARN), StreamMapping("Fast", arn_b)],
        {"Slow": slow, "Fast": fast},
        RoutedStreams(streams),
        poll_interval=0.01,
    )
    streams[ARN].add(raw_record(1))
    poller.start()
    try:
        deadline = time.monotonic() + 5
        while not slow_calls and time.monotonic() < deadline:
            time.sleep(0.01)
        # When a record arrives on the other stream while the first handler is still busy
        streams[arn_b].add(raw_record(2))
        while not fast.batches and time.monotonic() < deadline:
            time.sleep(0.01)
        # Then it is delivered all the same, and the stream is not idle until the slow one is done
        assert fast.batches == [[2]] and not release.is_set()
        assert not poller.wait_until_idle(0.2)
        release.set()
        assert poller.wait_until_idle(5)
    finally:
        release.set()
        poller.stop()
    assert slow_calls == [1] and not poller.running


def test_recent_deliveries_record_arrival_and_handling_times_for_benchmarks() -> None:
    # Given two records that arrived at T0 and a clock 0.3 s later
    now = [T0 + 0.3]
    streams = FakeStreams()
    streams.add(raw_record(1), raw_record(2))
    poller = make_poller(FakeHandler(fail_on={2}), streams, now)
    # When one succeeds and one fails
    poller.poll_once()
    # Then only the handled one is sampled, with both times
    assert poller.recent_deliveries() == [{"sequence": BASE_SEQ + 1, "arrival": T0, "handled_at": T0 + 0.3}]
    assert poller.stats()["last_delivery_delay_seconds"] == pytest.approx(0.3)


def test_waiting_for_idle_counts_each_mappings_rounds_not_the_fewest_of_any() -> None:
    # Given two mappings polling in their own threads: "Ahead" many rounds ahead of "Behind",
    # whose handler is held in its first invocation
    import threading

    behind_release, ahead_release = threading.Event(), threading.Event()
    ahead_batches: list[list[int]] = []
    ahead_holding = threading.Event()

    def behind(event: dict[str, Any], context: Any) -> dict[str, Any]:
        behind_release.wait(10)
        return {"batchItemFailures": []}

    def ahead(event: dict[str, Any], context: Any) -> dict[str, Any]:
        numbers = [int(r["dynamodb"]["Keys"]["object_id"]["S"][1:]) for r in event["Records"]]
        if 5 in numbers:  # held here, after its round read the shard
            ahead_holding.set()
            ahead_release.wait(10)
        if 6 in numbers:  # a handler that takes its time
            time.sleep(0.3)
        ahead_batches.append(numbers)  # delivered: the handler returned
        return {"batchItemFailures": []}

    arn_b = ARN.replace("table/t/", "table/u/")
    streams = {ARN: FakeStreams(), arn_b: FakeStreams()}
    poller = StreamPoller(
        [StreamMapping("Ahead", ARN), StreamMapping("Behind", arn_b)],
        {"Ahead": ahead, "Behind": behind},
        RoutedStreams(streams),
        poll_interval=0.005,
    )
    streams[arn_b].add(raw_record(1))
    poller.start()
    try:
        time.sleep(0.3)  # "Ahead" polls rounds while "Behind" is held
        streams[ARN].add(raw_record(5))
        assert ahead_holding.wait(5)
        # When a record is written while "Ahead"'s round (which read before it) is still under way,
        # and a caller then waits for the stream to be idle
        streams[ARN].add(raw_record(6))
        waited: list[bool] = []
        waiter = threading.Thread(target=lambda: waited.append(poller.wait_until_idle(5)))
        waiter.start()
        behind_release.set()
        time.sleep(0.2)  # "Behind" makes its rounds
        ahead_release.set()
        waiter.join(10)
        # Then the wait ends only after "Ahead" read and delivered the new record
        assert waited == [True]
        assert [6] in ahead_batches
    finally:
        behind_release.set()
        ahead_release.set()
        poller.stop()
