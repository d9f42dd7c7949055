"""The local event source mapping: reads DynamoDB streams and invokes a handler as Lambda would.

What it copies from Lambda's mapping for DynamoDB streams (template.yaml's `Type: DynamoDB` events):
- batches of at most `BatchSize` records, `{"Records": [...]}`, each record with eventSourceARN,
  awsRegion and eventSource "aws:dynamodb"; records that do not match `FilterCriteria` are skipped
  (and checkpointed, as Lambda does);
- `ReportBatchItemFailures`: a response with `batchItemFailures` checkpoints before the lowest
  failed sequence number, and the next invocation starts from it;
- a function error (an exception) retries the whole batch, split in halves first when
  `BisectBatchOnFunctionError` is on (splitting does not use up retries);
- after `MaximumRetryAttempts` retries, or when records are older than `MaximumRecordAgeInSeconds`,
  the batch's metadata goes to a dead-letter list: what Lambda's SQS on-failure destination gets
  (shard id, sequence number range, approximate arrival times, condition), never the records;
- one shard's records in order; child shards after their parent; expired iterators renewed;
- each mapping on its own: `start()` runs one thread per mapping, so a slow or failing consumer
  (its retries, a function's backoff) never holds up another's stream, as on AWS.

`poll_once()` does one round of every mapping deterministically (tests); `start()`/`stop()` run
the mappings on their threads.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from jobtriggers.local.template import LOCAL_ACCOUNT, StreamSource

log = logging.getLogger("local_runtime.stream")

Handler = Callable[[dict[str, Any], Any], Any]
# Lambda reads up to this many records per GetRecords call.
READ_LIMIT = 1000
# How many recent deliveries `recent_deliveries()` keeps for benchmarks.
DELIVERY_SAMPLES = 10_000
_MISSING = object()


class StreamsClient(Protocol):
    """The part of boto3's `dynamodbstreams` client the poller uses (a fake in unit tests)."""

    def describe_stream(self, **kwargs: Any) -> Any: ...
    def get_shard_iterator(self, **kwargs: Any) -> Any: ...
    def get_records(self, **kwargs: Any) -> Any: ...


# --------------------------------------------------------------------------- filter criteria


def _match_value(rule: Any, value: Any) -> bool:
    if isinstance(rule, dict):
        if "exists" in rule:
            return (value is not _MISSING) == bool(rule["exists"])
        if value is _MISSING:
            return False
        values = value if isinstance(value, list) else [value]
        return any(_match_operator(rule, v) for v in values)
    if value is _MISSING:
        return False
    if isinstance(value, list):
        return rule in value
    return bool(value == rule)


def _match_operator(rule: dict[str, Any], value: Any) -> bool:
    if "prefix" in rule:
        return isinstance(value, str) and value.startswith(rule["prefix"])
    if "suffix" in rule:
        return isinstance(value, str) and value.endswith(rule["suffix"])
    if "equals-ignore-case" in rule:
        return isinstance(value, str) and value.lower() == str(rule["equals-ignore-case"]).lower()
    if "anything-but" in rule:
        excluded = rule["anything-but"]
        return value not in (excluded if isinstance(excluded, list) else [excluded])
    if "numeric" in rule:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        ops = rule["numeric"]
        checks = {
            "=": lambda a, b: a == b,
            "<": lambda a, b: a < b,
            "<=": lambda a, b: a <= b,
            ">": lambda a, b: a > b,
            ">=": lambda a, b: a >= b,
        }
        return all(checks[ops[i]](value, ops[i + 1]) for i in range(0, len(ops), 2))
    raise ValueError(f"unsupported filter operator {sorted(rule)}")


def matches_pattern(pattern: Mapping[str, Any], data: Any) -> bool:
    """EventBridge-style pattern matching, as Lambda's event filtering applies it to a record."""
    for key, rule in pattern.items():
        value = data.get(key, _MISSING) if isinstance(data, dict) else _MISSING
        if isinstance(rule, dict):
            if not isinstance(value, dict) or not matches_pattern(rule, value):
                return False
        elif isinstance(rule, list):
            if not any(_match_value(r, value) for r in rule):
                return False
        else:
            raise ValueError(f"filter pattern values must be lists or objects, got {rule!r} for {key}")
    return True


def parse_filter_criteria(criteria: Mapping[str, Any] | None) -> tuple[dict[str, Any], ...]:
    patterns = []
    for f in (criteria or {}).get("Filters", []):
        pattern = f.get("Pattern")
        patterns.append(json.loads(pattern) if isinstance(pattern, str) else dict(pattern))
    return tuple(patterns)


# --------------------------------------------------------------------------- the mapping


@dataclass(frozen=True)
class StreamMapping:
    """One event source mapping: which stream feeds which function, and its rules."""

    function: str
    stream_arn: str
    batch_size: int = 100
    starting_position: str = "TRIM_HORIZON"
    bisect_on_error: bool = False
    maximum_retry_attempts: int = -1  # -1: until the record expires
    maximum_record_age_seconds: int = -1
    report_batch_item_failures: bool = False
    maximum_batching_window_seconds: float = 0.0
    filter_patterns: tuple[dict[str, Any], ...] = ()
    region: str = "us-east-1"
    function_arn: str = ""

    @classmethod
    def from_source(
        cls, source: StreamSource, stream_arn: str, region: str = "us-east-1", function_arn: str = ""
    ) -> StreamMapping:
        p = source.properties
        return cls(
            function=source.function,
            stream_arn=stream_arn,
            batch_size=int(p.get("BatchSize", 100)),
            starting_position=str(p.get("StartingPosition", "TRIM_HORIZON")),
            bisect_on_error=bool(p.get("BisectBatchOnFunctionError", False)),
            maximum_retry_attempts=int(p.get("MaximumRetryAttempts", -1)),
            maximum_record_age_seconds=int(p.get("MaximumRecordAgeInSeconds", -1)),
            report_batch_item_failures="ReportBatchItemFailures" in p.get("FunctionResponseTypes", []),
            maximum_batching_window_seconds=float(p.get("MaximumBatchingWindowInSeconds", 0)),
            filter_patterns=parse_filter_criteria(p.get("FilterCriteria")),
            region=region,
            function_arn=function_arn
            or f"arn:aws:lambda:{region}:{LOCAL_ACCOUNT}:function:{source.function}",
        )

    def wants(self, record: Mapping[str, Any]) -> bool:
        return not self.filter_patterns or any(matches_pattern(p, record) for p in self.filter_patterns)


# --------------------------------------------------------------------------- state


@dataclass
class PendingRecord:
    """A record read from the stream and not yet checkpointed."""

    event: dict[str, Any]
    sequence: int
    arrival: float  # ApproximateCreationDateTime, epoch seconds


@dataclass
class ShardState:
    shard_id: str
    parent_id: str | None
    start: str
    iterator: str | None = None
    last_read: str | None = None
    ended: bool = False
    buffer: deque[PendingRecord] = field(default_factory=deque)
    first_buffered_at: float | None = None
    # The record at the head of the buffer and how many invocations starting with it failed.
    head_sequence: int | None = None
    head_attempts: int = 0
    # Sizes of the next batches after a bisect (empty: full batches).
    plan: list[int] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.ended and not self.buffer


@dataclass
class PollerStats:
    """Counters others read (GET /local/stats, benchmarks)."""

    polls: int = 0
    batches: int = 0
    records_delivered: int = 0
    records_checkpointed: int = 0
    records_filtered: int = 0
    function_errors: int = 0
    partial_failures: int = 0
    bisects: int = 0
    dlq_entries: int = 0
    dlq_records: int = 0
    read_errors: int = 0
    pending_records: int = 0
    last_poll_at: float | None = None
    last_batch_at: float | None = None
    # Seconds from a record's arrival in the stream to the end of the invocation that handled it.
    last_delivery_delay_seconds: float | None = None
    max_delivery_delay_seconds: float = 0.0


@dataclass
class _Mapped:
    mapping: StreamMapping
    shards: dict[str, ShardState] = field(default_factory=dict)
    refreshed_at: float | None = None
    discovered: bool = False
    polls: int = 0  # rounds this mapping has polled


def _epoch(value: Any) -> float:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    return float(value)


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _lambda_attribute(value: Any) -> Any:
    """boto3 returns B/BS as bytes; a Lambda event carries them base64-encoded."""
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {k: _lambda_attribute(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_lambda_attribute(v) for v in value]
    return value


def lambda_record(raw: Mapping[str, Any], stream_arn: str, region: str) -> tuple[dict[str, Any], float]:
    """A GetRecords record as Lambda delivers it, and its arrival time (epoch seconds)."""
    ddb = dict(raw.get("dynamodb", {}))
    arrival = _epoch(ddb.get("ApproximateCreationDateTime", time.time()))
    ddb["ApproximateCreationDateTime"] = int(arrival)
    ddb = _lambda_attribute(ddb)
    event: dict[str, Any] = {
        "eventID": raw.get("eventID", uuid.uuid4().hex),
        "eventName": raw.get("eventName"),
        "eventVersion": raw.get("eventVersion", "1.1"),
        "eventSource": "aws:dynamodb",
        "awsRegion": region,
        "dynamodb": ddb,
        "eventSourceARN": stream_arn,
    }
    if raw.get("userIdentity"):
        event["userIdentity"] = raw["userIdentity"]
    return event, arrival


class _BatchOutcome:
    OK = "ok"
    PARTIAL = "partial"
    ERROR = "error"


# --------------------------------------------------------------------------- the poller


class StreamPoller:
    def __init__(
        self,
        mappings: Sequence[StreamMapping],
        handlers: Mapping[str, Handler],
        streams: StreamsClient,
        *,
        poll_interval: float = 0.25,
        clock: Callable[[], float] = time.time,
        context_factory: Callable[[str], Any] | None = None,
        shard_refresh_seconds: float = 1.0,
    ) -> None:
        self._mapped = [_Mapped(m) for m in mappings]
        self.handlers = handlers
        self.streams = streams
        self.poll_interval = poll_interval
        self.clock = clock
        self.context_factory = context_factory or (lambda _fn: None)
        self.shard_refresh_seconds = shard_refresh_seconds
        self._stats = PollerStats()
        self._dlq: list[dict[str, Any]] = []
        self._deliveries: deque[tuple[int, float, float]] = deque(maxlen=DELIVERY_SAMPLES)
        self._lock = threading.Lock()
        self._polled = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ what others read

    @property
    def dlq(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._dlq)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return asdict(self._stats)

    def recent_deliveries(self) -> list[dict[str, float]]:
        """Records handled successfully, newest last: sequence number, arrival in the stream and
        end of the invocation that handled it (epoch seconds). For latency benchmarks."""
        with self._lock:
            return [{"sequence": s, "arrival": a, "handled_at": h} for s, a, h in self._deliveries]

    # ------------------------------------------------------------------ running

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def start(self) -> None:
        if self.running:
            return
        self._stop.clear()
        self._threads = [
            threading.Thread(
                target=self._run, args=(mapped,), name=f"stream-poller-{mapped.mapping.function}", daemon=True
            )
            for mapped in self._mapped
        ]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []

    def _run(self, mapped: _Mapped) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self._poll_mapping(mapped)
            except Exception:  # the poller must outlive any one bad round
                log.exception("stream poll of %s failed; trying again", mapped.mapping.function)
            self._polled_once(mapped)
            self._stop.wait(max(0.0, self.poll_interval - (time.monotonic() - started)))

    def wait_until_idle(self, timeout: float = 10.0) -> bool:
        """Block until every mapping has polled once whole after this call, and nothing is left
        pending (tests, e2e).

        Two more rounds of each mapping: the round under way may have read its shard before the
        caller's write. Counted per mapping, not on the fewest rounds of any: mappings poll in
        threads of their own, so one that is rounds ahead of a slow one would otherwise count as
        done without having read anything since this call.
        """
        deadline = time.monotonic() + timeout
        with self._polled:
            targets = [(m, m.polls + 2) for m in self._mapped]
            while any(m.polls < target for m, target in targets) or self._stats.pending_records:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._polled.wait(min(left, 0.5))
        return True

    def poll_once(self) -> None:
        """One round of every mapping, one after the other (tests; `start()` runs them apart)."""
        for mapped in self._mapped:
            self._poll_mapping(mapped)
            self._polled_once(mapped)

    def _poll_mapping(self, mapped: _Mapped) -> None:
        """Find new shards, read each ready shard once, invoke until done or a failure."""
        self._refresh_shards(mapped)
        for shard in list(mapped.shards.values()):
            if shard.finished or not self._parent_done(mapped, shard):
                continue
            self._read(mapped.mapping, shard)
            self._deliver(mapped.mapping, shard)

    def _polled_once(self, mapped: _Mapped) -> None:
        """Count a mapping's round; `polls` counts the rounds every mapping has made."""
        with self._polled:
            mapped.polls += 1
            self._stats.polls = min(m.polls for m in self._mapped)
            self._stats.last_poll_at = self.clock()
            # Other mappings' buffers are changed by their own threads only; their sizes are enough.
            self._stats.pending_records = sum(len(s.buffer) for m in self._mapped for s in m.shards.values())
            self._polled.notify_all()

    # ------------------------------------------------------------------ shards

    def _parent_done(self, mapped: _Mapped, shard: ShardState) -> bool:
        parent = mapped.shards.get(shard.parent_id or "")
        return parent is None or parent.finished

    def _refresh_shards(self, mapped: _Mapped) -> None:
        now = self.clock()
        if mapped.refreshed_at is not None and now - mapped.refreshed_at < self.shard_refresh_seconds:
            return
        mapped.refreshed_at = now
        arn = mapped.mapping.stream_arn
        start_after: str | None = None
        try:
            while True:
                kwargs: dict[str, Any] = {"StreamArn": arn}
                if start_after:
                    kwargs["ExclusiveStartShardId"] = start_after
                desc = self.streams.describe_stream(**kwargs)["StreamDescription"]
                for shard in desc.get("Shards", []):
                    sid = shard["ShardId"]
                    if sid not in mapped.shards:
                        # Shards that exist when the mapping starts begin at its StartingPosition;
                        # shards that appear later are read from their start, as Lambda does.
                        start = mapped.mapping.starting_position if not mapped.discovered else "TRIM_HORIZON"
                        mapped.shards[sid] = ShardState(sid, shard.get("ParentShardId"), start)
                        log.debug("new shard %s on %s", sid, arn)
                start_after = desc.get("LastEvaluatedShardId")
                if not start_after:
                    break
        except (ClientError, BotoCoreError) as exc:
            self._count("read_errors")
            log.warning("cannot describe stream %s: %s", arn, exc)
            return
        mapped.discovered = True

    def _iterator(self, mapping: StreamMapping, shard: ShardState) -> str | None:
        kwargs: dict[str, Any] = {"StreamArn": mapping.stream_arn, "ShardId": shard.shard_id}
        if shard.last_read is not None:
            kwargs.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", SequenceNumber=shard.last_read)
        else:
            kwargs["ShardIteratorType"] = shard.start
        iterator = self.streams.get_shard_iterator(**kwargs).get("ShardIterator")
        return str(iterator) if iterator else None

    def _read(self, mapping: StreamMapping, shard: ShardState) -> None:
        if shard.ended or len(shard.buffer) >= mapping.batch_size:
            return
        try:
            if shard.iterator is None:
                shard.iterator = self._iterator(mapping, shard)
                if shard.iterator is None:
                    shard.ended = True
                    return
            resp = self.streams.get_records(ShardIterator=shard.iterator, Limit=READ_LIMIT)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            shard.iterator = None  # renewed from the last record read on the next poll
            if code == "TrimmedDataAccessException":
                shard.last_read, shard.start = None, "TRIM_HORIZON"
            elif code == "ResourceNotFoundException":
                shard.ended = True
            if code != "ExpiredIteratorException":
                self._count("read_errors")
                log.warning("reading shard %s failed (%s); retrying", shard.shard_id, code)
            return
        except BotoCoreError as exc:
            shard.iterator = None
            self._count("read_errors")
            log.warning("reading shard %s failed (%s); retrying", shard.shard_id, exc)
            return
        filtered = 0
        for raw in resp.get("Records", []):
            event, arrival = lambda_record(raw, mapping.stream_arn, mapping.region)
            seq = str(event["dynamodb"]["SequenceNumber"])
            shard.last_read = seq
            if mapping.wants(event):
                if not shard.buffer:
                    shard.first_buffered_at = self.clock()
                shard.buffer.append(PendingRecord(event, int(seq), arrival))
            else:
                filtered += 1
        if filtered:
            self._count("records_filtered", filtered)
        shard.iterator = resp.get("NextShardIterator")
        if shard.iterator is None:
            shard.ended = True  # a closed shard, read to its end

    # ------------------------------------------------------------------ invoking

    def _deliver(self, mapping: StreamMapping, shard: ShardState) -> None:
        while shard.buffer and not self._stop.is_set():
            window = mapping.maximum_batching_window_seconds
            if (
                window > 0
                and not shard.plan
                and len(shard.buffer) < mapping.batch_size
                and not shard.ended
                and self.clock() - (shard.first_buffered_at or 0) < window
            ):
                return
            size = min(shard.plan[0] if shard.plan else mapping.batch_size, len(shard.buffer))
            batch = [shard.buffer[i] for i in range(size)]
            if self._expire_old(mapping, shard, batch):
                continue
            outcome, failed_at, error = self._invoke(mapping, batch)
            if outcome == _BatchOutcome.OK:
                self._record_deliveries(batch)
                self._checkpoint(shard, size)
                self._consume_plan(shard, size)
                continue
            if outcome == _BatchOutcome.PARTIAL:
                # Checkpoint before the lowest failed record; the next batch starts with it.
                self._record_deliveries(batch[:failed_at])
                self._checkpoint(shard, failed_at)
                self._consume_plan(shard, failed_at)
                retry = batch[failed_at:]
            elif mapping.bisect_on_error and size > 1:
                half = (size + 1) // 2
                shard.plan[:1] = [half, size - half]
                self._count("bisects")
                continue  # splitting is not a retry: the halves go at once
            else:
                retry = batch
            if not self._note_attempt(mapping, shard, retry):
                return  # retried on the next poll
            self._dead_letter(mapping, shard, retry, "RetryAttemptsExhausted", shard.head_attempts, error)
            self._checkpoint(shard, len(retry))
            self._consume_plan(shard, len(retry))

    def _invoke(self, mapping: StreamMapping, batch: list[PendingRecord]) -> tuple[str, int, str | None]:
        """Call the handler; (outcome, index of the lowest failed record, error text)."""
        handler = self.handlers[mapping.function]
        event = {"Records": [p.event for p in batch]}
        try:
            response = handler(event, self.context_factory(mapping.function))
        except Exception as exc:
            log.warning(
                "%s raised %s on a batch of %d; Lambda would retry it",
                mapping.function,
                type(exc).__name__,
                len(batch),
                exc_info=log.isEnabledFor(logging.DEBUG),
            )
            self._after_invoke(batch, errors=1)
            return _BatchOutcome.ERROR, 0, f"{type(exc).__name__}: {exc}"
        if not mapping.report_batch_item_failures or not isinstance(response, dict):
            self._after_invoke(batch)
            return _BatchOutcome.OK, len(batch), None
        failures = response.get("batchItemFailures") or []
        if not failures:
            self._after_invoke(batch)
            return _BatchOutcome.OK, len(batch), None
        index = {str(p.sequence): i for i, p in enumerate(batch)}
        ids = [f.get("itemIdentifier") if isinstance(f, dict) else None for f in failures]
        if any(not i or str(i) not in index for i in ids):
            # Lambda treats an unusable partial response as a failure of the whole batch.
            self._after_invoke(batch, errors=1)
            return _BatchOutcome.ERROR, 0, f"invalid batchItemFailures {ids!r}"
        self._after_invoke(batch, partial=1)
        return _BatchOutcome.PARTIAL, min(index[str(i)] for i in ids), f"batchItemFailures {ids!r}"

    def _after_invoke(self, batch: list[PendingRecord], errors: int = 0, partial: int = 0) -> None:
        now = self.clock()
        delay = max(0.0, now - min(p.arrival for p in batch))
        with self._lock:
            s = self._stats
            s.batches += 1
            s.records_delivered += len(batch)
            s.function_errors += errors
            s.partial_failures += partial
            s.last_batch_at = now
            s.last_delivery_delay_seconds = delay
            s.max_delivery_delay_seconds = max(s.max_delivery_delay_seconds, delay)

    def _record_deliveries(self, done: list[PendingRecord]) -> None:
        now = self.clock()
        with self._lock:
            self._deliveries.extend((p.sequence, p.arrival, now) for p in done)

    def _note_attempt(self, mapping: StreamMapping, shard: ShardState, retry: list[PendingRecord]) -> bool:
        """Count a failed invocation of the head record; True when its retries are used up."""
        head = retry[0].sequence
        if shard.head_sequence != head:
            shard.head_sequence, shard.head_attempts = head, 0
        shard.head_attempts += 1
        limit = mapping.maximum_retry_attempts
        return limit >= 0 and shard.head_attempts > limit

    def _expire_old(self, mapping: StreamMapping, shard: ShardState, batch: list[PendingRecord]) -> bool:
        """Dead-letter the records at the head that are older than MaximumRecordAgeInSeconds."""
        max_age = mapping.maximum_record_age_seconds
        if max_age < 0:
            return False
        now = self.clock()
        n = 0
        while n < len(batch) and now - batch[n].arrival > max_age:
            n += 1
        if not n:
            return False
        self._dead_letter(mapping, shard, batch[:n], "RecordAgeExceeded", shard.head_attempts, None)
        self._checkpoint(shard, n)
        self._consume_plan(shard, n)
        return True

    def _checkpoint(self, shard: ShardState, count: int) -> None:
        for _ in range(count):
            shard.buffer.popleft()
        if count:
            shard.head_sequence, shard.head_attempts = None, 0
            shard.first_buffered_at = self.clock() if shard.buffer else None
            self._count("records_checkpointed", count)

    @staticmethod
    def _consume_plan(shard: ShardState, count: int) -> None:
        while count > 0 and shard.plan:
            if shard.plan[0] <= count:
                count -= shard.plan.pop(0)
            else:
                shard.plan[0] -= count
                count = 0

    def _dead_letter(
        self,
        mapping: StreamMapping,
        shard: ShardState,
        records: list[PendingRecord],
        condition: str,
        attempts: int,
        error: str | None,
    ) -> None:
        """What Lambda sends to the SQS on-failure destination: metadata, not the records."""
        entry = {
            "requestContext": {
                "requestId": str(uuid.uuid4()),
                "functionArn": mapping.function_arn,
                "condition": condition,
                "approximateInvokeCount": attempts,
            },
            "responseContext": {
                "statusCode": 200,
                "executedVersion": "$LATEST",
                "functionError": "Unhandled" if error and not error.startswith("batchItemFailures") else "",
            },
            "version": "1.0",
            "timestamp": _iso(self.clock()),
            "DDBStreamBatchInfo": {
                "shardId": shard.shard_id,
                "startSequenceNumber": str(records[0].sequence),
                "endSequenceNumber": str(records[-1].sequence),
                "approximateArrivalOfFirstRecord": _iso(records[0].arrival),
                "approximateArrivalOfLastRecord": _iso(records[-1].arrival),
                "batchSize": len(records),
                "streamArn": mapping.stream_arn,
            },
            # Not in Lambda's message; locally it saves a trip to the logs.
            "local": {"function": mapping.function, "lastError": error},
        }
        log.error(
            "%s: %d record(s) of shard %s (sequence %s..%s) dead-lettered: %s",
            mapping.function,
            len(records),
            shard.shard_id,
            records[0].sequence,
            records[-1].sequence,
            condition,
        )
        with self._lock:
            self._dlq.append(entry)
            self._stats.dlq_entries += 1
            self._stats.dlq_records += len(records)

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self._stats, name, getattr(self._stats, name) + n)
