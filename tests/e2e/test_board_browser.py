"""The board in a real browser (Debian's headless Chromium, driven by Playwright) over the session's
local runtime: real jobs, made by sites over HTTP, counted by the runtime's JobEventsFunction, and
steered from the page through JobSteering.

The page's own behaviour (refresh, focus, contrast, keyboard) is tested against the in-memory port
in tests/board/; here it is the data: what the page shows is what the API says, and what the page
does reaches the jobs and the site that holds one.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page, expect

from jobtriggers.board.server import BoardConfig, BoardServer, create_app
from jobtriggers.board.tables import open_tables
from jobtriggers.client import SiteClient
from jobtriggers.local.runtime import LocalRuntime
from tests.board.conftest import Console
from tests.e2e.board_jobs import GCMS, NOM, api_counts, claim, fail_for_good, tag_jobs, wait_until
from tests.e2e.conftest import SiteSession

REFRESH_SECONDS = 1.0
STATUSES = ("pending", "claimed", "done", "failed", "cancelled")


@pytest.fixture(scope="module")
def board_url(local_runtime: LocalRuntime) -> Iterator[str]:
    source, actions = open_tables(operator="e2e-operator")
    app = create_app(
        source, actions, BoardConfig(source_label="local runtime (e2e)", refresh_seconds=REFRESH_SECONDS)
    )
    with BoardServer(app) as server:
        yield server.url
    source.close()


@pytest.fixture
def console() -> Console:
    return Console()


@pytest.fixture
def page(browser: BrowserContext, console: Console) -> Iterator[Page]:
    page = browser.new_page()
    page.set_default_timeout(15_000)
    page.on("console", console.on_console)
    page.on("pageerror", console.on_page_error)
    page.on("requestfailed", console.on_request_failed)
    yield page
    page.close()


def _count(page: Page, workflow_id: str, status: str) -> Any:
    return page.locator(f'li.workflow[data-workflow="{workflow_id}"] li.count[data-status="{status}"] .n')


def _expect_counts(page: Page, workflow_id: str, counts: dict[str, int]) -> None:
    for status in STATUSES:
        expect(_count(page, workflow_id, status)).to_have_text(str(counts[status]))


def test_the_counts_shown_are_the_apis_after_tagging(
    page: Page,
    board_url: str,
    api: httpx.Client,
    new_site: Callable[..., SiteSession],
    local_runtime: LocalRuntime,
    console: Console,
) -> None:
    # Given jobs of two workflows made by tagging, one of them claimed
    site = new_site()
    nom = tag_jobs(api, local_runtime, site, NOM, 3)
    tag_jobs(api, local_runtime, site, GCMS, 2)
    claim(api, site, nom[0]["id"])
    local_runtime.wait_for_stream()
    # Then the board shows each workflow's jobs by status as the API lists them
    page.goto(board_url)
    for _, workflow_id in (NOM, GCMS):
        counts = api_counts(api, site, workflow_id)
        _expect_counts(page, workflow_id, counts)
        bar = page.locator(f'li.workflow[data-workflow="{workflow_id}"] svg.bar')
        expect(bar).to_have_attribute(
            "aria-label", f"{workflow_id}: " + ", ".join(f"{counts[s]} {s}" for s in STATUSES)
        )
    expect(page.locator(f'li.workflow[data-workflow="{NOM[1]}"] .oldest')).to_contain_text("oldest pending")
    # When more objects are tagged while the page is open
    tag_jobs(api, local_runtime, site, NOM, 2)
    local_runtime.wait_for_stream()
    # Then it follows by itself, to the API's counts again
    _expect_counts(page, NOM[1], api_counts(api, site, NOM[1]))
    assert console.errors == []


def test_a_failed_job_shows_its_error_and_a_confirmed_rerun_makes_it_pending(
    page: Page,
    board_url: str,
    api: httpx.Client,
    new_site: Callable[..., SiteSession],
    local_runtime: LocalRuntime,
    console: Console,
) -> None:
    # Given a job whose every attempt failed at its site
    site = new_site()
    (job,) = tag_jobs(api, local_runtime, site, NOM, 1)
    fail_for_good(api, site, job["id"], "exit_137", "metaSPAdes was killed: out of memory")
    local_runtime.wait_for_stream()
    # Then the page shows it with its last error and the attempts it used
    page.goto(f"{board_url}/?workflow={NOM[1]}&site={site.site_id}")
    row = page.locator(f'#failed tr[data-job="{job["id"]}"]')
    expect(row.locator(".error-code")).to_have_text("exit_137")
    expect(row.locator(".error-message")).to_have_text("metaSPAdes was killed: out of memory")
    expect(row.locator(".attempts")).to_have_text("3 / 3")
    failed_before = int(_count(page, NOM[1], "failed").inner_text())
    # When the operator asks for a rerun, and confirms
    row.get_by_role("button", name=re.compile("^Rerun")).click()
    dialog = page.locator("dialog#confirm")
    expect(dialog.get_by_role("heading")).to_have_text("Rerun this job?")
    dialog.get_by_role("button", name="Rerun job").click()
    # Then it is pending again, by the operator, and the page follows
    expect(page.locator("#notice .notice.ok")).to_contain_text(
        f"{NOM[1]} on {job['config']['object_id']} is pending again"
    )
    served = api.get(f"/jobs/{job['id']}", headers=site.headers).json()
    assert (served["status"], served["attempts"], served["run"]) == ("pending", 0, 2)
    expect(row).to_have_count(0)
    expect(_count(page, NOM[1], "failed")).to_have_text(str(failed_before - 1))
    local_runtime.wait_for_stream()
    assert local_runtime.events(job["id"])[-1]["detail"]["by"] == "operator:e2e-operator"
    # And the job's page has its history: three failed operations, and the rerun last
    page.goto(f"{board_url}/jobs/{job['id']}")
    expect(page.locator("#operations tbody tr")).to_have_count(3)
    expect(page.locator("#operations tbody tr .outcome.failed")).to_have_count(3)
    expect(page.locator("#events li .event-type").last).to_have_text("rerun")
    assert console.errors == []


class Holder(threading.Thread):
    """A site working on a claimed job as `jobtriggers site work` does: heartbeats until its work is
    done, and stops when an answer says the job was cancelled (reporting that it stopped).

    A stand-in for `site work` itself, whose reaction to `cancel_requested` is being built beside
    this change: the service's side is what is tested here (the heartbeat answer carries the cancel,
    the stop report ends the job cancelled)."""

    def __init__(self, client: SiteClient, op_id: str) -> None:
        super().__init__(daemon=True)
        self.client, self.op_id = client, op_id
        self.saw_cancel = threading.Event()
        self.heartbeats = 0
        self.stop_now = threading.Event()

    def run(self) -> None:
        while not self.stop_now.is_set():
            op = self.client.heartbeat(self.op_id)
            self.heartbeats += 1
            if op.metadata.get("cancel_requested"):
                self.saw_cancel.set()
                self.client.fail(self.op_id, "cancelled", "stopped: the operator cancelled the job")
                return
            time.sleep(0.3)


def test_a_cancel_from_the_page_reaches_the_site_working_on_the_job(
    page: Page,
    board_url: str,
    api: httpx.Client,
    new_site: Callable[..., SiteSession],
    local_runtime: LocalRuntime,
    console: Console,
) -> None:
    # Given a site working on a job: claimed, heartbeating
    site = new_site()
    (job,) = tag_jobs(api, local_runtime, site, GCMS, 1)
    client = SiteClient(local_runtime.base_url, site.client_id, site.client_secret)
    op = client.claim(job["id"])
    holder = Holder(client, op.id)
    holder.start()
    try:
        wait_until(lambda: holder.heartbeats >= 2, what="the holder's heartbeats")
        local_runtime.wait_for_stream()
        page.goto(f"{board_url}/?site={site.site_id}")
        row = page.locator(f'#claimed tr[data-job="{job["id"]}"]')
        expect(row).to_contain_text(site.site_id)
        # When the operator cancels it from the page, and confirms
        row.get_by_role("button", name=re.compile("^Cancel")).click()
        dialog = page.locator("dialog#confirm")
        expect(dialog).to_contain_text("told at its next heartbeat")
        dialog.get_by_role("button", name="Cancel job").click()
        expect(page.locator("#notice .notice.ok")).to_contain_text(
            f"is running at {site.site_id}: it is told to stop at its next heartbeat"
        )
        # Then the site hears it in its next heartbeat's answer, stops, and the job ends cancelled
        assert holder.saw_cancel.wait(15), "the holder's heartbeats never carried the cancel"
        holder.join(15)
        wait_until(
            lambda: api.get(f"/jobs/{job['id']}", headers=site.headers).json()["status"] == "cancelled",
            what="the job to end cancelled",
        )
        local_runtime.wait_for_stream()
        # And the page shows it: no longer claimed, and its page ends with the cancel and the stop
        expect(row).to_have_count(0)
        page.goto(f"{board_url}/jobs/{job['id']}")
        expect(page.locator(".job-title-row .tag").first).to_contain_text("cancelled")
        expect(page.locator("#events li .event-type")).to_have_text(
            ["created", "claimed", "cancel requested", "cancelled"]
        )
        assert console.errors == []
    finally:
        holder.stop_now.set()
        client.close()


def test_the_filters_survive_a_reload_and_show_what_the_api_lists(
    page: Page,
    board_url: str,
    api: httpx.Client,
    new_site: Callable[..., SiteSession],
    local_runtime: LocalRuntime,
    console: Console,
) -> None:
    site = new_site()
    jobs = tag_jobs(api, local_runtime, site, NOM, 3)
    for job in jobs[:2]:
        claim(api, site, job["id"])
    local_runtime.wait_for_stream()
    page.goto(board_url)
    # When the operator picks a workflow, a status and a site, and applies them
    page.get_by_label("Workflow", exact=True).select_option(NOM[1])
    page.get_by_label("Status", exact=True).select_option("claimed")
    page.get_by_label("Site", exact=True).select_option(site.site_id)
    page.get_by_role("button", name="Apply").click()
    expect(page).to_have_url(re.compile(rf"workflow={re.escape(NOM[1])}&status=claimed&site={site.site_id}"))
    listed = api.get(
        "/jobs",
        params={"workflow_id": NOM[1], "status": "claimed", "site_id": site.site_id},
        headers=site.headers,
    ).json()["resources"]
    assert len(listed) == 2

    def shows_the_filtered_view() -> None:
        expect(page.get_by_label("Workflow", exact=True)).to_have_value(NOM[1])
        expect(page.get_by_label("Status", exact=True)).to_have_value("claimed")
        expect(page.get_by_label("Site", exact=True)).to_have_value(site.site_id)
        expect(page.locator("#claimed tbody tr")).to_have_count(len(listed))
        for job in listed:
            expect(page.locator(f'#claimed tr[data-job="{job["id"]}"]')).to_have_count(1)
        expect(page.locator("#failed")).to_have_count(0)

    # Then the view is what the API lists, before and after a reload, and after a live refresh
    shows_the_filtered_view()
    page.reload()
    shows_the_filtered_view()
    page.wait_for_timeout(REFRESH_SECONDS * 2500)
    shows_the_filtered_view()
    # An object id: that object's job, whatever its status
    object_id = jobs[2]["config"]["object_id"]
    page.goto(f"{board_url}/?object_id={object_id}")
    page.reload()
    expect(page.get_by_label("Object id", exact=True)).to_have_value(object_id)
    expect(page.locator("#jobs tbody tr")).to_have_count(1)
    expect(page.locator(f'#jobs tr[data-job="{jobs[2]["id"]}"]')).to_contain_text("pending")
    assert console.errors == []
