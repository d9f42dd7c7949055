"""Ordered stream batches (logic/stream_batch.py): in order, stop at the first failure, raise when
nothing was done; and every stream consumer wired to it has the event source settings it relies on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from jobtriggers.local.template import functions, load_template, resources_of_type
from jobtriggers.logic.stream_batch import FirstRecordFailed, OrderedBatchResult, process_in_order
from tests.conftest import ROOT


def _records(n: int) -> list[dict[str, Any]]:
    return [
        {"eventName": "INSERT", "dynamodb": {"SequenceNumber": str(100 + i), "Keys": {"id": {"S": f"r{i}"}}}}
        for i in range(n)
    ]


class Handler:
    """Records every call; fails on the record ids in `failing`."""

    def __init__(self, failing: set[str] | None = None) -> None:
        self.failing = failing or set()
        self.calls: list[str] = []

    def __call__(self, record: Any) -> None:
        rid = record["dynamodb"]["Keys"]["id"]["S"]
        self.calls.append(rid)
        if rid in self.failing:
            raise RuntimeError(f"cannot handle {rid}")


def test_a_batch_that_succeeds_is_handled_in_order_and_reports_nothing() -> None:
    handler = Handler()
    result = process_in_order(_records(5), handler)
    assert handler.calls == ["r0", "r1", "r2", "r3", "r4"]
    assert (result.processed, result.failed) == (5, False)
    assert result.response_or_raise() == {"batchItemFailures": []}


def test_a_batch_stops_at_its_first_failure_and_hands_back_it_and_the_rest() -> None:
    # Given a batch whose third and fourth records fail
    handler = Handler(failing={"r2", "r3"})
    # When it is processed
    result = process_in_order(_records(6), handler)
    # Then the records after the first failure were not tried, and it and they are handed back
    assert handler.calls == ["r0", "r1", "r2"]
    assert result.processed == 2
    assert result.response_or_raise() == {
        "batchItemFailures": [{"itemIdentifier": s} for s in ("102", "103", "104", "105")]
    }


def test_a_retry_from_the_failed_record_does_nothing_twice() -> None:
    # Given a batch that failed at its third record, then the retry Lambda makes from it
    handler = Handler(failing={"r2"})
    records = _records(6)
    first = process_in_order(records, handler)
    handler.failing.clear()
    retry = [r for r in records if r["dynamodb"]["SequenceNumber"] >= first.returned[0]]
    process_in_order(retry, handler)
    # Then every record was handled once, except the failed one, which was tried twice
    assert handler.calls == ["r0", "r1", "r2", "r2", "r3", "r4", "r5"]


def test_when_the_first_record_fails_nothing_was_done_and_it_raises() -> None:
    # Given a batch whose first record fails
    handler = Handler(failing={"r0"})
    result = process_in_order(_records(4), handler)
    # Then nothing else was tried, and the response is a raised error (a function error, which
    # Lambda counts and bisects), chained to the record's own error
    assert handler.calls == ["r0"]
    assert result.processed == 0 and result.failed
    with pytest.raises(FirstRecordFailed, match="first record of a batch of 4") as raised:
        result.response_or_raise()
    assert raised.value.sequence_number == "100"
    assert isinstance(raised.value.__cause__, RuntimeError)
    # While the report, had it been sent, would name the whole batch
    assert len(result.response()["batchItemFailures"]) == 4


def test_a_single_record_batch_that_fails_raises() -> None:
    result = process_in_order(_records(1), Handler(failing={"r0"}))
    with pytest.raises(FirstRecordFailed):
        result.response_or_raise()


def test_an_empty_batch_is_a_success() -> None:
    assert process_in_order([], Handler()) == OrderedBatchResult(size=0, processed=0)


def test_the_failure_is_logged_with_the_records_keys(caplog: pytest.LogCaptureFixture) -> None:
    process_in_order(_records(3), Handler(failing={"r1"}))
    (line,) = [r for r in caplog.records if "stream record failed" in r.getMessage()]
    assert line.levelname == "ERROR"
    assert line.__dict__["keys"] == {"id": "r1"} and line.__dict__["records_returned"] == 2
    assert line.exc_info is not None and "cannot handle r1" in str(line.exc_info[1])


# --------------------------------------------------------------------------- template and handler agree


def _stream_consumers() -> list[tuple[str, dict[str, Any]]]:
    """(function, its DynamoDB stream event's properties) for every function wired to stream_batch."""
    template = load_template()
    out = []
    for name, spec in functions(template).items():
        source = (ROOT / Path(spec.code_uri) / "app.py").read_text(encoding="utf-8")
        if "process_in_order" not in source:
            continue
        fn = resources_of_type(template, "AWS::Serverless::Function")[name]
        streams = [e["Properties"] for e in fn["Properties"]["Events"].values() if e["Type"] == "DynamoDB"]
        assert len(streams) == 1, f"{name} uses stream_batch, so it needs exactly one DynamoDB stream event"
        out.append((name, streams[0]))
    return out


def test_the_trigger_resolver_is_wired_to_ordered_batches() -> None:
    assert "TriggerResolverFunction" in {name for name, _ in _stream_consumers()}


@pytest.mark.parametrize(("function", "stream"), _stream_consumers())
def test_every_ordered_batch_consumer_reports_partial_failures_and_bisects(
    function: str, stream: dict[str, Any]
) -> None:
    # The handler's partial responses count only with ReportBatchItemFailures, and its raise on a
    # failed first record isolates that record only with BisectBatchOnFunctionError
    assert "ReportBatchItemFailures" in stream["FunctionResponseTypes"], function
    assert stream["BisectBatchOnFunctionError"] is True, function
    assert stream["MaximumRetryAttempts"] >= 1, function
    assert "OnFailure" in stream["DestinationConfig"], function
