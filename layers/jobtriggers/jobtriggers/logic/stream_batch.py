"""Ordered stream batches: handle a batch's records in order and stop at the first that fails.

For a DynamoDB stream consumer whose event source mapping has `ReportBatchItemFailures` and
`BisectBatchOnFunctionError` on (template.yaml; tests/unit/test_stream_batch.py checks that every
consumer wired to this module has both). Lambda delivers a shard's records in order and, given a
partial response, checkpoints before the lowest sequence number it names: the next invocation
starts at that record. So:

- Records are handled one at a time, in order. At the first failure the batch stops: that record
  and every record after it are reported as failed, unprocessed. The retry starts at the failed
  record, and nothing before it is done twice, however often it is retried. (Going on past a
  failure, as a plain partial-batch processor does, redoes every later record on every retry.)
- When the *first* record fails, nothing was done, and `response_or_raise()` raises
  `FirstRecordFailed` instead of reporting the whole batch. A raised error is a function error:
  Lambda counts it (its `Errors` metric), and `BisectBatchOnFunctionError` halves the batch before
  each retry, so a record that can never succeed ends up alone and only it reaches the dead-letter
  destination after `MaximumRetryAttempts`. Reported instead, it would be retried, and finally
  dead-lettered, together with every record queued behind it.

The consumer records its own metrics from the result (`RecordsFailed`: the alarm
`stream-records-failed` in docs/operations.md) before it returns or raises.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict

from jobtriggers.observability import logger

Record = Mapping[str, Any]


class ItemFailure(TypedDict):
    itemIdentifier: str


class PartialItemFailureResponse(TypedDict):
    """Lambda's partial batch response for a stream. Declared here rather than imported from
    Powertools' batch utility, whose package costs a stream handler's cold start ~40 ms to import."""

    batchItemFailures: list[ItemFailure]


def dynamodb_sequence_number(record: Record) -> str:
    """A DynamoDB stream record's id for `batchItemFailures`."""
    return str(record["dynamodb"]["SequenceNumber"])


def _record_keys(record: Record) -> dict[str, Any]:
    """The item keys a DynamoDB stream record names (for the log line), e.g. object and type ids."""
    keys = record.get("dynamodb", {}).get("Keys") if isinstance(record, Mapping) else None
    if not isinstance(keys, Mapping):
        return {}
    return {
        k: next(iter(v.values()), None) for k, v in keys.items() if isinstance(v, Mapping) and len(v) == 1
    }


class FirstRecordFailed(Exception):
    """The first record of a batch failed, so nothing was done: raised as a function error, which
    Lambda counts, bisects and retries (see the module's docstring)."""

    def __init__(self, sequence_number: str, batch_size: int) -> None:
        super().__init__(
            f"the first record of a batch of {batch_size} failed (sequence number {sequence_number}); "
            "Lambda retries the batch, bisected"
        )
        self.sequence_number = sequence_number


@dataclass(frozen=True)
class OrderedBatchResult:
    """What one batch came to: how many records were handled, and which were handed back."""

    size: int
    processed: int
    returned: list[str] = field(default_factory=list)
    error: BaseException | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None

    def response(self) -> PartialItemFailureResponse:
        """The partial batch response: the failed record and every record after it."""
        return {"batchItemFailures": [{"itemIdentifier": seq} for seq in self.returned]}

    def response_or_raise(self) -> PartialItemFailureResponse:
        """The response to return; FirstRecordFailed when nothing of the batch was done."""
        if self.error is not None and self.processed == 0:
            raise FirstRecordFailed(self.returned[0], self.size) from self.error
        return self.response()


def process_in_order(
    records: Sequence[Record],
    handle: Callable[[Record], Any],
    *,
    sequence_number: Callable[[Record], str] = dynamodb_sequence_number,
) -> OrderedBatchResult:
    """Handle `records` in order until one raises; never raises itself (see OrderedBatchResult)."""
    for index, record in enumerate(records):
        try:
            handle(record)
        except Exception as exc:
            returned = [sequence_number(r) for r in records[index:]]
            logger.exception(
                "stream record failed; it and the records after it are handed back for a retry",
                extra={
                    "sequence_number": returned[0],
                    "keys": _record_keys(record),
                    "records_processed": index,
                    "records_returned": len(returned),
                },
            )
            return OrderedBatchResult(size=len(records), processed=index, returned=returned, error=exc)
    return OrderedBatchResult(size=len(records), processed=len(records))
