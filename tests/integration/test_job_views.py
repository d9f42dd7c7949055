"""The board's bounded reads (dal/job_views.py) and the items they cost (dal/read_tally.py), against
moto over HTTP: each list in its index's order, filtered lists read page after page but never
past their bound, `more` says when there may be more, and the tally is what DynamoDB evaluated."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from jobtriggers.dal.dynamo import dynamodb, to_item
from jobtriggers.dal.job_views import JobViews
from jobtriggers.dal.jobs import job_item
from jobtriggers.dal.operations import operation_item
from jobtriggers.dal.read_tally import tallying_reads
from jobtriggers.models import Job, JobStatus, OperationRecord, iso

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def _put_job(tables: dict[str, str], workflow_id: str, n: int, status: JobStatus, **fields: Any) -> Job:
    at = iso(T0 + timedelta(minutes=n))
    job = Job.new(workflow_id, f"obj-{n:04d}", at).model_copy(
        update={"status": status, "updated_at": at, "version": 1, **fields}
    )
    dynamodb().put_item(TableName=tables["JOBS_TABLE"], Item=to_item(job_item(job)))
    return job


def test_a_status_list_is_newest_first_and_says_when_there_are_more(tables: dict[str, str]) -> None:
    failed = [_put_job(tables, "wf-a", n, JobStatus.failed, site_id="s1") for n in range(5)]
    _put_job(tables, "wf-b", 9, JobStatus.failed, site_id="s1")
    views = JobViews()
    listing = views.jobs_of_status("failed", workflow_id="wf-a", limit=3)
    assert [j.id for j in listing.jobs] == [j.id for j in reversed(failed)][:3]
    assert listing.more
    everything = views.jobs_of_status("failed", limit=10)
    assert len(everything.jobs) == 6 and not everything.more


def test_a_filtered_list_reads_pages_until_it_has_enough_and_never_past_its_bound(
    tables: dict[str, str],
) -> None:
    # Given 450 failed jobs of site s1 and, the newest, 3 of site s2 spread among them
    for n in range(450):
        _put_job(tables, "wf-a", n, JobStatus.failed, site_id="s2" if n in (10, 220, 440) else "s1")
    views = JobViews()
    # When a site's failed jobs are listed
    with tallying_reads() as tally:
        listing = views.jobs_of_status("failed", site_id="s2", limit=5)
    # Then all three are found (pages of 200 evaluated: 3 pages), newest first, and no more
    assert [j.object_id for j in listing.jobs] == ["obj-0440", "obj-0220", "obj-0010"]
    assert not listing.more
    assert tally.items == 450 and tally.requests["Query"] == 3
    # When the bound is one page, it stops there and says more may match
    with tallying_reads() as tally:
        bounded = views.jobs_of_status("failed", site_id="s2", limit=5, max_pages=1)
    assert [j.object_id for j in bounded.jobs] == ["obj-0440"]
    assert bounded.more and tally.items == 200


def test_what_a_site_holds_is_read_from_the_earliest_lease_end_on(tables: dict[str, str]) -> None:
    # Given a site's long history of done jobs, and two jobs it holds
    for n in range(40):
        _put_job(tables, "wf-a", n, JobStatus.done, site_id="s1")
    soon = iso(T0 + timedelta(hours=5))
    later = iso(T0 + timedelta(hours=6))
    _put_job(tables, "wf-a", 100, JobStatus.claimed, site_id="s1", lease_expires_at=later)
    _put_job(tables, "wf-b", 101, JobStatus.claimed, site_id="s2", lease_expires_at=soon)
    _put_job(tables, "wf-b", 102, JobStatus.claimed, site_id="s1", lease_expires_at=soon)
    views = JobViews()
    since = views.earliest_lease_end()
    assert since == soon
    with tallying_reads() as tally:
        held = views.claimed_of_site("s1", since, limit=100, max_pages=5)
    # Then only its claimed jobs, lease ending first, and none of its history was read
    assert [j.object_id for j in held.jobs] == ["obj-0102", "obj-0100"]
    assert tally.items == 2


def test_oldest_pending_and_an_objects_jobs(tables: dict[str, str]) -> None:
    for n in (5, 3, 8):
        _put_job(tables, "wf-a", n, JobStatus.pending)
    views = JobViews()
    with tallying_reads() as tally:
        assert views.oldest_pending_since("wf-a") == iso(T0 + timedelta(minutes=3))
        assert views.oldest_pending_since("wf-none") is None
    assert tally.items == 1
    _put_job(tables, "wf-b", 3, JobStatus.done)
    of_object = views.jobs_of_object("obj-0003", limit=10)
    assert [j.workflow_id for j in of_object.jobs] == ["wf-a", "wf-b"]
    assert [j.workflow_id for j in views.jobs_of_object("obj-0003", workflow_id="wf-b", limit=10).jobs] == [
        "wf-b"
    ]


def test_operations_are_read_by_id_in_batches_of_a_hundred(tables: dict[str, str]) -> None:
    ids = [f"op-{n:03d}" for n in range(130)]
    for n, op_id in enumerate(ids):
        op = OperationRecord(
            id=op_id,
            job_id="j",
            site_id="s1",
            attempt=n + 1,
            claim_index=n,
            lease_seconds=60,
            max_attempts=200,
            created_at=iso(T0),
            updated_at=iso(T0),
            expire_time=iso(T0),
        )
        dynamodb().put_item(TableName=tables["OPERATIONS_TABLE"], Item=to_item(operation_item(op)))
    with tallying_reads() as tally:
        found = JobViews().operations([*ids, "op-missing", ids[0]])
    assert sorted(found) == ids
    assert tally.requests["BatchGetItem"] == 2 and tally.items == 130
