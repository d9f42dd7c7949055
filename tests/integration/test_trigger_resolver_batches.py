"""TriggerEngine's handler on real stream batches (moto over HTTP): a batch stops at its first
failed record, and a failed first record is a function error.

A record that cannot succeed is made the way it would happen: an object-type item written without
`assigned_at` (by hand, or by a bad migration), whose INSERT the resolver cannot read.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from jobtriggers.dal.assignments import AssignmentRepository
from jobtriggers.dal.dynamo import dynamodb, to_item
from jobtriggers.dal.jobs import JobRepository
from jobtriggers.errors import NotFoundError
from jobtriggers.models import job_id_for
from tests.api_events import LambdaContextStub, load_function
from tests.stream_records import stream_records

TYPE, WORKFLOW = "metagenome_raw_paired_end_reads", "metag-1.0.0"


def _tag(tables: dict[str, str], object_id: str) -> None:
    dynamodb().put_item(
        TableName=tables["OBJECTS_TABLE"], Item=to_item({"pk": f"object#{object_id}", "id": object_id})
    )
    AssignmentRepository().apply(object_id, [TYPE], [], by="site-a")


def _poison(tables: dict[str, str], object_id: str) -> None:
    """An assignment item the resolver cannot read (no assigned_at): its INSERT always fails."""
    dynamodb().put_item(
        TableName=tables["OBJECT_TYPES_TABLE"],
        Item=to_item({"object_id": object_id, "object_type_id": TYPE}),
    )


def _event(tables: dict[str, str]) -> tuple[dict[str, Any], list[str]]:
    """Every record of the object-type stream as one Lambda batch, and their sequence numbers."""
    records = stream_records(tables["OBJECT_TYPES_TABLE"])
    for r in records:
        r.update(eventSource="aws:dynamodb", awsRegion="us-east-1", eventSourceARN="arn:stream")
        r["dynamodb"].pop("ApproximateCreationDateTime", None)
    return {"Records": records}, [r["dynamodb"]["SequenceNumber"] for r in records]


def _has_job(object_id: str) -> bool:
    try:
        JobRepository().get(job_id_for(WORKFLOW, object_id))
    except NotFoundError:
        return False
    return True


@pytest.fixture(autouse=True)
def _metrics_on(monkeypatch: pytest.MonkeyPatch) -> None:
    # The local runtime, when a test session has started one, turns EMF output off for its quiet,
    # and the metrics its in-process invocations added then are never flushed: start clean.
    from jobtriggers.observability import metrics

    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    metrics.clear_metrics()


def _emitted_metrics(out: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for line in out.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            blob = json.loads(line)
            for metric in blob["_aws"]["CloudWatchMetrics"][0]["Metrics"]:
                values[metric["Name"]] = blob[metric["Name"]]
    return values


def test_a_batch_stops_at_its_first_failed_record_and_hands_back_the_rest(
    seeded_tables: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a batch of five tags whose third cannot be resolved
    for name in ("ok-0", "ok-1"):
        _tag(seeded_tables, name)
    _poison(seeded_tables, "bad-2")
    for name in ("later-3", "later-4"):
        _tag(seeded_tables, name)
    event, sequence = _event(seeded_tables)
    assert len(sequence) == 5
    # When TriggerEngine handles it
    response = load_function("trigger_resolver")(event, LambdaContextStub())
    # Then it reports the failed record and the two after it, which it did not touch: a retry
    # starts at the failed record and repeats nothing
    assert response == {"batchItemFailures": [{"itemIdentifier": s} for s in sequence[2:]]}
    assert [_has_job(o) for o in ("ok-0", "ok-1", "later-3", "later-4")] == [True, True, False, False]
    assert _emitted_metrics(capsys.readouterr().out).get("RecordsFailed") == [1.0]


def test_a_failed_first_record_is_a_function_error_and_nothing_after_it_is_done(
    seeded_tables: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a batch whose first record cannot be resolved
    _poison(seeded_tables, "bad-0")
    for name in ("next-1", "next-2"):
        _tag(seeded_tables, name)
    event, _ = _event(seeded_tables)
    # When TriggerEngine handles it
    handler = load_function("trigger_resolver")
    # Then it raises (Lambda counts a function error, and bisects the batch before retrying it),
    # the records behind it were not handled, and the failure was still counted
    with pytest.raises(Exception, match="first record of a batch of 3"):
        handler(event, LambdaContextStub())
    assert not _has_job("next-1") and not _has_job("next-2")
    assert _emitted_metrics(capsys.readouterr().out).get("RecordsFailed") == [1.0]
    # And once the bad record is out of the way (dead-lettered alone), the rest go through
    response = handler({"Records": event["Records"][1:]}, LambdaContextStub())
    assert response == {"batchItemFailures": []}
    assert _has_job("next-1") and _has_job("next-2")
