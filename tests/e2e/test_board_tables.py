"""The board's source and actions over the local runtime's tables (board/tables.py): what a view
shows is what the API says, a view reads indexes and the counts table and never scans the jobs
table, `items_read` is what DynamoDB counted, and the actions are JobSteering's, by the operator.

Jobs are made as sites make them (tests/e2e/board_jobs.py); counts come from the runtime's own
JobEventsFunction on the jobs stream.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from bench.counting import RequestCounter
from jobtriggers import wiring
from jobtriggers.board.port import Filters, LineageNode
from jobtriggers.board.tables import SteeringActions, TableSource, open_tables
from jobtriggers.dal.dynamo import dynamodb
from jobtriggers.errors import ConflictError, NotFoundError
from jobtriggers.local.runtime import LocalRuntime
from jobtriggers.models import Job, JobEventType, Transition, iso, utcnow
from tests.e2e.board_jobs import GCMS, NOM, api_counts, claim, fail_for_good, report, tag_jobs
from tests.e2e.conftest import SiteSession


@pytest.fixture
def board(local_runtime: LocalRuntime) -> Iterator[tuple[TableSource, SteeringActions]]:
    source, actions = open_tables(operator="ada")
    yield source, actions
    source.close()


@dataclass
class Recorded:
    """Every DynamoDB call made meanwhile: (operation, table, index), and the items read as the
    benchmarks count them (bench/counting.py, independently of the board's own tally)."""

    calls: list[tuple[str, str, str | None]] = field(default_factory=list)
    items_read: int = 0


@contextmanager
def recorded_reads() -> Iterator[Recorded]:
    client = dynamodb()
    recorded = Recorded()

    def before(params: dict[str, Any], model: Any, **_: Any) -> None:
        table = params.get("TableName") or ",".join(params.get("RequestItems", {}))
        recorded.calls.append((model.name, str(table), params.get("IndexName")))

    counter = RequestCounter()
    counter.attach(client)
    client.meta.events.register("provide-client-params.dynamodb", before, unique_id="board-test-calls")
    before_counts = counter.snapshot()
    try:
        yield recorded
    finally:
        recorded.items_read = counter.since(before_counts).items_read
        client.meta.events.unregister("provide-client-params.dynamodb", unique_id="board-test-calls")
        counter.detach()


@pytest.fixture(scope="module")
def site_with_jobs(
    local_runtime: LocalRuntime, api_module: httpx.Client, module_site: SiteSession
) -> dict[str, Any]:
    """Jobs of two workflows in every state a site can put them in, made once for the module."""
    api, site = api_module, module_site
    nom = tag_jobs(api, local_runtime, site, NOM, 4)
    gcms = tag_jobs(api, local_runtime, site, GCMS, 2)
    fail_for_good(api, site, nom[0]["id"], "exit_137", "killed: out of memory")
    held = claim(api, site, nom[1]["id"])
    done = claim(api, site, nom[2]["id"])
    report(api, site, done["id"], {"done": True, "result": {"outputs": []}})
    claim(api, site, gcms[0]["id"])
    local_runtime.wait_for_stream()
    return {"nom": nom, "gcms": gcms, "held_op": held, "site": site}


@pytest.fixture(scope="module")
def api_module(local_runtime: LocalRuntime) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=local_runtime.base_url, timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def module_site(local_runtime: LocalRuntime, api_module: httpx.Client) -> SiteSession:
    creds = local_runtime.create_site(f"board-{uuid.uuid4().hex[:8]}", [])
    r = api_module.post(
        "/token",
        data={
            "grant_type": "client_credentials",
            "client_id": creds["client_id"],
            "client_secret": creds["client_secret"],
        },
    )
    token = r.json()["access_token"]
    return SiteSession(
        site_id=creds["site_id"],
        client_id=creds["client_id"],
        client_secret=creds["client_secret"],
        token=token,
        headers={"Authorization": f"Bearer {token}"},
    )


def test_the_counts_are_the_apis_and_each_list_is_what_it_says(
    board: tuple[TableSource, SteeringActions], site_with_jobs: dict[str, Any], api_module: httpx.Client
) -> None:
    source, _ = board
    site: SiteSession = site_with_jobs["site"]
    overview = source.overview(Filters())
    shown = {w.id: w for w in overview.workflows}
    # Every registry workflow is there (the page's workflow filter offers them all), with the API's counts
    assert {w.id for w in wiring.registry().workflows()} <= set(shown)
    for workflow_id in (NOM[1], GCMS[1]):
        assert shown[workflow_id].counts.model_dump() == api_counts(api_module, site, workflow_id)
        assert shown[workflow_id].in_registry
    # The oldest pending age is there for a workflow with pending jobs
    age = shown[NOM[1]].oldest_pending_age_seconds
    assert age is not None and age >= 0
    # The failed job, with its last error and attempts
    nom_failed = site_with_jobs["nom"][0]["id"]
    (failed,) = [f for f in overview.failed if f.id == nom_failed]
    assert failed.last_error is not None
    assert (failed.last_error.code, failed.last_error.message) == ("exit_137", "killed: out of memory")
    assert (failed.attempts, failed.max_attempts) == (3, 3)
    assert failed.site_id == site.site_id
    # The claimed jobs, lease ending soonest first, with the lease's length
    mine = [c for c in overview.claimed if c.site_id == site.site_id]
    assert {c.id for c in mine} == {site_with_jobs["nom"][1]["id"], site_with_jobs["gcms"][0]["id"]}
    ends = [c.lease_expires_at for c in overview.claimed]
    assert ends == sorted(ends)
    assert all(c.lease_seconds == 3600 and 3500 < c.seconds_left <= 3600 for c in mine)
    # The site: what it holds, and its claims this hour (3 attempts of the failed job + 3 others)
    (summary,) = [s for s in overview.sites if s.id == site.site_id]
    assert summary.jobs_held == 2
    assert summary.claims_this_hour is not None and summary.claims_previous_hour is not None
    assert summary.claims_this_hour + summary.claims_previous_hour == 6


def test_a_view_reads_indexes_and_counts_never_a_scan_of_the_jobs_table_and_says_what_it_read(
    board: tuple[TableSource, SteeringActions], site_with_jobs: dict[str, Any], local_runtime: LocalRuntime
) -> None:
    source, _ = board
    site: SiteSession = site_with_jobs["site"]
    jobs_table = local_runtime.tables["JOBS_TABLE"]
    object_id = site_with_jobs["nom"][0]["config"]["object_id"]
    views: dict[str, Filters] = {
        "everything": Filters(),
        "workflow": Filters(workflow=NOM[1]),
        "site": Filters(site=site.site_id),
        "failed of a site": Filters(status="failed", site=site.site_id),
        "pending of a workflow": Filters(workflow=NOM[1], status="pending"),
        "done": Filters(status="done"),
        "object": Filters(object_id=object_id),
    }
    indexes: dict[str, set[str | None]] = {}
    for name, filters in views.items():
        with recorded_reads() as recorded:
            overview = source.overview(filters)
        scans = [c for c in recorded.calls if c[0] == "Scan"]
        # Then the only Scan is of the small sites table; every jobs-table read is a Query of an index
        assert {c[1] for c in scans} <= {local_runtime.tables["SITES_TABLE"]}, name
        job_reads = [c for c in recorded.calls if c[1] == jobs_table]
        assert job_reads and all(op == "Query" and index for op, _, index in job_reads), (name, job_reads)
        indexes[name] = {index for _, _, index in job_reads}
        # And the refresh says what it read: exactly what DynamoDB answered
        assert overview.items_read == recorded.items_read > 0, name
    # The filters narrow what is read
    assert indexes["everything"] == {"by_status", "by_workflow_status"}  # failed, claimed; oldest pending
    assert indexes["site"] == {"by_status", "by_site", "by_workflow_status"}  # earliest lease end, its jobs
    assert indexes["object"] >= {"by_object"}
    assert "by_workflow_status" in indexes["pending of a workflow"]
    # An object's view lists its jobs, any status
    overview = source.overview(views["object"])
    assert [j.id for j in overview.jobs] == [site_with_jobs["nom"][0]["id"]]
    assert [f.id for f in overview.failed] == [site_with_jobs["nom"][0]["id"]]


def test_a_workflow_with_jobs_that_is_not_in_the_registry_is_shown_and_marked(
    board: tuple[TableSource, SteeringActions], local_runtime: LocalRuntime
) -> None:
    # Given a job of a workflow the registry does not have (it left it, after the job was made)
    gone = f"retired-{uuid.uuid4().hex[:6]}"
    now = iso(utcnow())
    job = Job.new(gone, f"obj-{uuid.uuid4().hex[:8]}", now)
    assert wiring.jobs().create(job, Transition(events=[JobEventType.created], at=now, by="service"))
    local_runtime.wait_for_stream()
    # Then the board lists it, with its count, marked as not in the registry
    (shown,) = [w for w in board[0].overview(Filters()).workflows if w.id == gone]
    assert (shown.in_registry, shown.counts.pending, shown.name) == (False, 1, gone)
    # And its job's page says the workflow is missing, as the API would
    page = board[0].job(job.id)
    assert page is not None and page.job["workflow_missing"] is True


def test_a_jobs_page_has_its_operations_events_and_what_the_lineage_seam_gives(
    site_with_jobs: dict[str, Any], local_runtime: LocalRuntime
) -> None:
    failed_id = site_with_jobs["nom"][0]["id"]
    asked: list[str] = []

    def lineage(job: Job) -> LineageNode:
        asked.append(job.id)
        return LineageNode(
            job_id=job.id, workflow_id=job.workflow_id, object_id=job.object_id, status="failed"
        )

    source, _ = open_tables(lineage=lineage)
    try:
        with recorded_reads() as recorded:
            page = source.job(failed_id)
        assert page is not None
        # Its three attempts, each an operation with its error, oldest first
        assert [(o.attempt, o.error and o.error.code, o.done) for o in page.operations] == [
            (1, "exit_137", True),
            (2, "exit_137", True),
            (3, "exit_137", True),
        ]
        # Its events, from the job events table
        assert [e.type for e in page.events] == [
            "created",
            "claimed",
            "attempt_failed",
            "claimed",
            "attempt_failed",
            "claimed",
            "failed",
        ]
        assert page.events[-1].detail["error"] == "exit_137: killed: out of memory"
        assert page.last_error is not None and page.last_error.code == "exit_137"
        assert page.job["id"] == failed_id and page.job["status"] == "failed"
        # The lineage is what the seam gave
        assert asked == [failed_id] and page.lineage is not None and page.lineage.job_id == failed_id
        assert page.items_read == recorded.items_read
        # An unknown job, or an id that cannot be one, is no page
        assert source.job("bm9wZSNub3Bl") is None
        assert source.job("not an id!") is None
    finally:
        source.close()


def test_the_actions_are_job_steerings_by_the_operator(
    board: tuple[TableSource, SteeringActions],
    api: httpx.Client,
    new_site: Callable[..., SiteSession],
    local_runtime: LocalRuntime,
) -> None:
    _, actions = board
    site = new_site()
    failed, held, pending = tag_jobs(api, local_runtime, site, NOM, 3)
    fail_for_good(api, site, failed["id"], "exit_1", "boom")
    op = claim(api, site, held["id"])
    # A rerun of the failed job makes it pending again, by the operator
    assert "is pending again (run 2)" in actions.rerun(failed["id"])
    assert api.get(f"/jobs/{failed['id']}", headers=site.headers).json()["status"] == "pending"
    # A cancel of the claimed one is asked of its holder, whose heartbeat answer carries it
    assert f"is running at {site.site_id}" in actions.cancel(held["id"])
    assert report(api, site, op["id"], {})["metadata"]["cancel_requested"] is True
    # A cancel of the pending one cancels it
    assert actions.cancel(pending["id"]).endswith("is cancelled")
    # A refusal is JobSteering's: nothing to rerun in a pending job, no second cancel
    with pytest.raises(ConflictError, match="only done, failed or cancelled jobs can be rerun"):
        actions.rerun(failed["id"])
    with pytest.raises(ConflictError, match="a cancel was already asked"):
        actions.cancel(held["id"])
    with pytest.raises(NotFoundError):
        actions.cancel("bm9wZSNub3Bl")
    local_runtime.wait_for_stream()
    events = local_runtime.events(failed["id"])
    assert events[-1]["detail-type"] == "job.rerun"
    assert events[-1]["detail"]["by"] == "operator:ada"


def test_a_chained_jobs_page_shows_its_chain_from_the_eldest_ancestor(
    local_runtime: LocalRuntime,
    api: httpx.Client,
    new_site: Callable[..., SiteSession],
    cancel_leftovers: list[str],
) -> None:
    # Given a reads QC job made by a tag, completed over HTTP with its declared outputs, which made
    # the assembly and read-based analysis jobs
    from jobtriggers.local.chain_step import plausible_outputs
    from jobtriggers.models import job_id_for

    site = new_site()
    body = {
        "name": "reads.fastq.gz",
        "size": 10,
        "checksums": [{"type": "sha256", "checksum": uuid.uuid4().hex}],
        "created_time": "2025-01-01T00:00:00Z",
        "access_methods": [{"access_url": {"url": "https://data.example.org/reads.fastq.gz"}}],
    }
    root = api.post("/objects", json=body, headers=site.headers).json()["id"]
    cancel_leftovers.append(root)
    r = api.put(f"/objects/{root}/types", json=["metagenome_sequencing_activity_set"], headers=site.headers)
    assert r.status_code == 200, r.text
    assert local_runtime.wait_for_stream(30)
    readqc = job_id_for("readqc-1.0.6", root)
    op = api.post(f"/jobs/{readqc}:claim", headers=site.headers).json()
    outputs = plausible_outputs(wiring.registry().workflow("readqc-1.0.6"), op["metadata"]["job"])
    r = api.patch(
        f"/operations/{op['id']}", json={"done": True, "result": {"outputs": outputs}}, headers=site.headers
    )
    assert r.status_code == 200, r.text
    assert local_runtime.wait_for_stream(30)
    [assembly] = [j for j in wiring.lineage().chain(root).jobs if j.workflow_id == "mgasm-1.0.3"]
    # When the operator opens the assembly job's page
    source, _ = open_tables()
    try:
        with recorded_reads() as recorded:
            page = source.job(assembly.id)
    finally:
        source.close()
    # Then its lineage is the chain from reads QC (done), with the two jobs its output made beneath
    assert page is not None and page.lineage is not None
    assert (page.lineage.job_id, page.lineage.workflow_id, page.lineage.status) == (
        readqc,
        "readqc-1.0.6",
        "done",
    )
    assert sorted((c.workflow_id, c.status) for c in page.lineage.children) == [
        ("mgasm-1.0.3", "pending"),
        ("mgrba-1.0.2", "pending"),
    ]
    assert page.lineage.duration_seconds is not None
    # And the chain was one Query of the by_root index, counted with the rest of the page
    assert ("Query", local_runtime.tables["JOBS_TABLE"], "by_root") in recorded.calls
    assert page.items_read == recorded.items_read


@pytest.fixture
def cancel_leftovers() -> Iterator[list[str]]:
    """Root object ids whose pending jobs are cancelled afterwards: other tests run `site work`
    workers of these workflows on the same runtime, which would otherwise claim them."""
    roots: list[str] = []
    yield roots
    steering = wiring.job_steering()
    for root in roots:
        for job in wiring.lineage().chain(root).jobs:
            if job.status == "pending":
                steering.cancel(job.id, "operator:test-cleanup")
