"""The board in a real browser: Debian's headless Chromium, driven by Playwright, against the board's
server on a free loopback port, reading the in-memory source of tests/board/dataset.py."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Literal

import pytest
from playwright.sync_api import Locator, Page, expect

from jobtriggers.board.port import STATUSES, Filters, JobError
from jobtriggers.board.server import BoardServer
from jobtriggers.errors import RetryableStoreError
from tests.board.conftest import REFRESH_SECONDS, Console
from tests.board.dataset import job_id
from tests.board.fake_board import FakeJob, InMemoryBoard


def _failed_row(page: Page, job: str) -> Locator:
    return page.locator(f'#failed tr[data-job="{job}"]')


def _first_failed(board: InMemoryBoard, workflow_id: str) -> FakeJob:
    return next(j for j in board.jobs.values() if j.status == "failed" and j.workflow_id == workflow_id)


def test_the_counts_shown_are_the_sources(page: Page, server: BoardServer, board: InMemoryBoard) -> None:
    page.goto(server.url)
    overview = board.overview(Filters())
    busy = [w for w in overview.workflows if w.counts.total]
    assert len(busy) >= 5
    for w in busy:
        item = page.locator(f'li.workflow[data-workflow="{w.id}"]')
        for status in STATUSES:
            expect(item.locator(f'li.count[data-status="{status}"] .n')).to_have_text(
                str(w.counts.of(status))
            )
        expect(item.locator("svg.bar")).to_have_attribute(
            "aria-label", f"{w.id}: " + ", ".join(f"{w.counts.of(s)} {s}" for s in STATUSES)
        )
        expect(item.locator(".wf-total")).to_have_text(f"{w.counts.total} jobs")
        expect(item.locator(".oldest")).to_contain_text(
            "oldest pending" if w.counts.pending else "nothing pending"
        )
        # one bar segment per status that has jobs, none for the others
        assert item.locator("rect.seg").count() == sum(1 for s in STATUSES if w.counts.of(s))
    # workflows without jobs are folded away, but there to pick
    idle = [w for w in overview.workflows if not w.counts.total]
    expect(page.locator("details.idle summary")).to_have_text(f"{len(idle)} workflows without jobs")
    total = sum(w.counts.total for w in overview.workflows)
    expect(page.locator("#workflows .panel-meta")).to_contain_text(f"{total} jobs")


def test_a_failed_job_shows_its_error_and_a_confirmed_rerun_makes_it_pending(
    page: Page, server: BoardServer, board: InMemoryBoard, console: Console
) -> None:
    job = _first_failed(board, "mgasm-1.0.3")
    assert job.last_error is not None
    page.goto(server.url)
    row = _failed_row(page, job.id)
    expect(row.locator(".error-code")).to_have_text(job.last_error.code)
    expect(row.locator(".error-message")).to_have_text(job.last_error.message)
    expect(row.locator(".attempts")).to_have_text(f"{job.attempts} / {job.max_attempts}")

    # the dialog asks first; keeping the job does nothing
    row.get_by_role("button", name=re.compile("^Rerun")).click()
    dialog = page.locator("dialog#confirm")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_role("heading")).to_have_text("Rerun this job?")
    expect(dialog).to_contain_text(f"{job.workflow_id} on {job.object_id}")
    dialog.get_by_role("button", name="Keep it").click()
    expect(dialog).to_be_hidden()
    assert board.calls == []
    assert board.jobs[job.id].status == "failed"

    row.get_by_role("button", name=re.compile("^Rerun")).click()
    dialog.get_by_role("button", name="Rerun job").click()
    expect(page.locator("#notice .notice.ok")).to_contain_text(
        f"{job.workflow_id} on {job.object_id} is pending again"
    )
    assert board.calls == [("rerun", job.id)]
    assert board.jobs[job.id].status == "pending"
    # the page follows at once: the job leaves the failed list, and the counts move
    expect(row).to_have_count(0)
    counts = page.locator('li.workflow[data-workflow="mgasm-1.0.3"]')
    expect(counts.locator('li.count[data-status="failed"] .n')).to_have_text("0")
    assert console.errors == []


def test_cancel_from_the_page_asks_a_claimed_jobs_holder_to_stop_and_cancels_a_pending_one(
    page: Page, server: BoardServer, board: InMemoryBoard, console: Console
) -> None:
    claimed = next(j for j in board.jobs.values() if j.status == "claimed" and j.workflow_id == "mgann-1.0.0")
    page.goto(server.url)
    row = page.locator(f'#claimed tr[data-job="{claimed.id}"]')
    row.get_by_role("button", name=re.compile("^Cancel")).click()
    dialog = page.locator("dialog#confirm")
    expect(dialog.get_by_role("heading")).to_have_text("Cancel this job?")
    expect(dialog).to_contain_text("told at its next heartbeat")
    dialog.get_by_role("button", name="Cancel job").click()
    expect(page.locator("#notice .notice.ok")).to_contain_text("told to stop at its next heartbeat")
    expect(row.locator(".tag.cancel-requested")).to_have_text("cancel requested")
    expect(row.get_by_role("button", name=re.compile("^Cancel"))).to_have_count(0)
    assert board.calls == [("cancel", claimed.id)]
    assert board.jobs[claimed.id].cancel_requested

    pending = next(j for j in board.jobs.values() if j.status == "pending" and j.workflow_id == "mags-1.0.4")
    page.goto(f"{server.url}/?workflow=mags-1.0.4&status=pending")
    row = page.locator(f'#jobs tr[data-job="{pending.id}"]')
    row.get_by_role("button", name=re.compile("^Cancel")).click()
    expect(dialog).to_contain_text("no site will claim it")
    dialog.get_by_role("button", name="Cancel job").click()
    expect(page.locator("#notice .notice.ok")).to_contain_text("is cancelled")
    expect(row).to_have_count(0)  # no longer pending
    assert board.jobs[pending.id].status == "cancelled"
    assert console.errors == []


def test_a_refused_action_shows_why(page: Page, server: BoardServer, board: InMemoryBoard) -> None:
    job = _first_failed(board, "readqc-1.0.6")
    page.goto(server.url)
    # someone else reran it since the page was drawn: the page still offers a rerun
    board.rerun(job.id)
    board.calls.clear()
    page.locator("#live-toggle").uncheck()
    _failed_row(page, job.id).get_by_role("button", name=re.compile("^Rerun")).click()
    page.locator("dialog#confirm").get_by_role("button", name="Rerun job").click()
    refused = page.locator("#notice .notice.refused")
    expect(refused).to_contain_text("is pending; only done, failed or cancelled jobs can be rerun")
    assert board.calls == [("rerun", job.id)]


def test_the_filters_are_in_the_url_and_survive_a_reload(
    page: Page, server: BoardServer, board: InMemoryBoard, console: Console
) -> None:
    page.goto(server.url)
    page.get_by_label("Workflow", exact=True).select_option("readqc-1.0.6")
    page.get_by_label("Status", exact=True).select_option("claimed")
    page.get_by_label("Site", exact=True).select_option("jgi")
    page.get_by_role("button", name="Apply").click()
    # only the filters that are set, so that the address can be shared as it is
    expect(page).to_have_url(f"{server.url}/?workflow=readqc-1.0.6&status=claimed&site=jgi")

    def shows_the_filtered_view() -> None:
        expect(page.get_by_label("Workflow", exact=True)).to_have_value("readqc-1.0.6")
        expect(page.get_by_label("Status", exact=True)).to_have_value("claimed")
        expect(page.get_by_label("Site", exact=True)).to_have_value("jgi")
        expect(page.locator("#failed")).to_have_count(0)  # status: claimed only
        expected = board.overview(Filters(workflow="readqc-1.0.6", status="claimed", site="jgi")).claimed
        assert expected
        rows = page.locator("#claimed tbody tr")
        expect(rows).to_have_count(len(expected))
        for job in expected:
            expect(page.locator(f'#claimed tr[data-job="{job.id}"]')).to_have_count(1)

    shows_the_filtered_view()
    page.reload()
    shows_the_filtered_view()
    # after a live refresh too: the poll asks with the same filters
    page.wait_for_timeout(REFRESH_SECONDS * 2500)
    shows_the_filtered_view()

    # an object id: every job of that object, whatever its status
    chain_root = next(
        j for j in board.jobs.values() if j.workflow_id == "readqc-1.0.6" and j.parent_job_id is None
    )
    page.goto(server.url)
    page.get_by_label("Object id", exact=True).fill(chain_root.object_id)
    page.get_by_label("Object id", exact=True).press("Enter")
    expect(page).to_have_url(re.compile(r"/\?object_id=nmdc%3Adobj-11-"))
    page.reload()
    expect(page.get_by_label("Object id", exact=True)).to_have_value(chain_root.object_id)
    expect(page.locator(f'#jobs tr[data-job="{chain_root.id}"]')).to_have_count(1)
    # a filter is removed from its chip
    page.get_by_role("link", name="Remove the object filter").click()
    expect(page).to_have_url(f"{server.url}/")
    assert console.errors == []


def test_the_page_refreshes_itself_says_when_and_can_be_paused(
    page: Page, server: BoardServer, board: InMemoryBoard, console: Console
) -> None:
    page.goto(server.url)
    refreshed = page.locator("#refreshed time")
    first = refreshed.get_attribute("datetime")
    expect(refreshed).not_to_have_attribute("datetime", first or "", timeout=REFRESH_SECONDS * 4000)

    now = datetime.now(UTC)
    newly = FakeJob(
        id=job_id("mgrba-1.0.2", "nmdc:dobj-11-newfail1"),
        workflow_id="mgrba-1.0.2",
        object_id="nmdc:dobj-11-newfail1",
        status="failed",
        created_at=now - timedelta(hours=1),
        updated_at=now,
        attempts=3,
        last_error=JobError(code="command_failed", message="gottcha2 exited 1"),
    )
    board.add(newly)
    expect(_failed_row(page, newly.id)).to_contain_text("gottcha2 exited 1", timeout=REFRESH_SECONDS * 4000)

    # paused: nothing moves until live is on again
    page.get_by_role("checkbox", name=re.compile("Live")).uncheck()
    page.wait_for_timeout(REFRESH_SECONDS * 1500)  # a poll already in flight may still land
    paused_at = refreshed.get_attribute("datetime")
    board.jobs[newly.id].status = "pending"
    page.wait_for_timeout(REFRESH_SECONDS * 2500)
    assert refreshed.get_attribute("datetime") == paused_at
    expect(_failed_row(page, newly.id)).to_have_count(1)
    expect(page.locator("#refreshed")).to_have_class(re.compile("paused"))
    page.get_by_role("checkbox", name=re.compile("Live")).check()
    expect(_failed_row(page, newly.id)).to_have_count(0, timeout=REFRESH_SECONDS * 4000)
    assert console.errors == []


def test_a_refresh_keeps_focus_and_what_was_opened(
    page: Page, server: BoardServer, board: InMemoryBoard
) -> None:
    """Keyboard users must not be thrown back to the top of the page every few seconds."""
    job = _first_failed(board, "mgasm-1.0.3")
    page.goto(server.url)
    page.locator("#idle-workflows summary").click()
    link = page.locator(f"#failed-job-{job.id}")
    link.focus()
    refreshed = page.locator("#refreshed time")
    for _ in range(2):
        before = refreshed.get_attribute("datetime") or ""
        expect(refreshed).not_to_have_attribute("datetime", before, timeout=REFRESH_SECONDS * 4000)
    expect(link).to_be_focused()
    expect(page.locator("#idle-workflows")).to_have_attribute("open", "")


def test_a_refresh_the_store_fails_keeps_what_was_shown_and_says_so(
    page: Page, server: BoardServer, board: InMemoryBoard, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = _first_failed(board, "mgasm-1.0.3")
    page.goto(server.url)
    expect(_failed_row(page, job.id)).to_have_count(1)

    def busy(filters: Filters) -> None:
        raise RetryableStoreError("the store is busy")

    monkeypatch.setattr(board, "overview", busy)
    expect(page.locator("#refreshed")).to_contain_text("could not refresh", timeout=REFRESH_SECONDS * 4000)
    expect(_failed_row(page, job.id)).to_have_count(1)
    monkeypatch.undo()
    # and it recovers by itself
    expect(page.locator("#refreshed")).not_to_contain_text(
        "could not refresh", timeout=REFRESH_SECONDS * 4000
    )


def test_a_refresh_that_fails_is_shown(page: Page, board: InMemoryBoard) -> None:
    from jobtriggers.board.server import BoardConfig, create_app

    app = create_app(board, board, BoardConfig(source_label="test", refresh_seconds=REFRESH_SECONDS))
    server = BoardServer(app).start()
    page.goto(server.url)
    server.stop()
    expect(page.locator("#refreshed")).to_contain_text("could not refresh", timeout=REFRESH_SECONDS * 5000)


def test_a_lease_near_its_end_stands_out_in_words(
    page: Page, server: BoardServer, board: InMemoryBoard
) -> None:
    page.goto(server.url)
    claimed = board.overview(Filters()).claimed
    soon = [c for c in claimed if 0 < c.seconds_left < 120]
    ended = [c for c in claimed if c.seconds_left <= 0]
    calm = [c for c in claimed if c.seconds_left > 0.1 * c.lease_seconds]
    assert soon and ended and calm
    for c in soon:
        row = page.locator(f'#claimed tr[data-job="{c.id}"]')
        expect(row).to_have_class(re.compile("lease-soon"))
        expect(row.locator(".lease")).to_contain_text("expires soon")
    for c in ended:
        expect(page.locator(f'#claimed tr[data-job="{c.id}"] .lease')).to_contain_text("lease ended")
    for c in calm:
        row = page.locator(f'#claimed tr[data-job="{c.id}"]')
        expect(row).not_to_have_class(re.compile("lease-soon"))
        expect(row.locator(".lease")).not_to_contain_text("expires soon")
    # the soonest end is listed first
    expect(page.locator("#claimed tbody tr").first).to_have_attribute("data-job", claimed[0].id)
    # sites: what each holds and its claims in the last hour
    for site in board.overview(Filters()).sites:
        row = page.locator(f'#sites tr[data-site="{site.id}"]')
        expect(row.locator("td.held")).to_have_text(str(site.jobs_held))
        expect(row.locator("td.this-hour")).to_have_text(str(site.claims_this_hour))
        expect(row.locator("td.previous-hour")).to_have_text(str(site.claims_previous_hour))


def test_a_jobs_page_shows_its_operations_lineage_and_events(
    page: Page, server: BoardServer, board: InMemoryBoard, console: Console
) -> None:
    mags = _first_failed(board, "mags-1.0.4")
    page.goto(server.url)
    _failed_row(page, mags.id).get_by_role("link").click()
    expect(page).to_have_url(f"{server.url}/jobs/{mags.id}")
    expect(page.get_by_role("heading", level=1)).to_contain_text(f"{mags.workflow_id} on {mags.object_id}")
    expect(page.locator(".last-error")).to_contain_text("lease_expired")
    ops = page.locator("#operations tbody tr")
    expect(ops).to_have_count(len(mags.operations))
    for row, op in zip(ops.all(), mags.operations, strict=True):
        expect(row.locator("td").first).to_have_text(op.id)
        expect(row.locator("td").nth(1)).to_have_text(op.site_id)
    # lineage: the chain from reads QC down to this job, each a link but this one
    chain = ["readqc-1.0.6", "mgasm-1.0.3", "mgann-1.0.0", "mags-1.0.4"]
    nodes = page.locator("#lineage .node")
    expect(nodes).to_have_count(len(chain))
    for node, workflow in zip(nodes.all(), chain, strict=True):
        expect(node).to_contain_text(workflow)
    expect(page.locator("#lineage [aria-current=page]")).to_contain_text("mags-1.0.4")
    expect(page.locator("#lineage a")).to_have_count(len(chain) - 1)
    events = page.locator("#events li .event-type")
    expect(events).to_have_text([e.type.replace("_", " ") for e in mags.events])

    # an ancestor's page shows its descendants as a tree
    page.locator("#lineage a", has_text="readqc-1.0.6").click()
    expect(page.locator("#lineage .node")).to_contain_text(
        ["readqc-1.0.6", "mgasm-1.0.3", "mgann-1.0.0", "mags-1.0.4", "mgrba-1.0.2"]
    )
    assert console.errors == []


def test_keyboard_alone_opens_answers_and_dismisses_the_confirmation(
    page: Page, server: BoardServer, board: InMemoryBoard, console: Console
) -> None:
    job = _first_failed(board, "readqc-1.0.6")
    page.goto(server.url)
    page.locator("#live-toggle").focus()  # start of the page's controls, then only keys
    target = f"failed-rerun-{job.id}"
    for _ in range(80):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == target:
            break
    else:
        raise AssertionError(f"Tab never reached the Rerun button {target}")

    def focused() -> str:
        return str(page.evaluate("document.activeElement.id || document.activeElement.tagName"))

    page.keyboard.press("Enter")
    dialog = page.locator("dialog#confirm")
    expect(dialog).to_be_visible()
    assert focused() == "confirm-no"  # the safe choice has focus
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    assert focused() == target  # focus is back where it was
    assert board.calls == []

    page.keyboard.press("Enter")
    expect(dialog).to_be_visible()
    page.keyboard.press("Tab")
    assert focused() == "confirm-yes"
    # the page behind the modal dialog is inert: Tab past its last button never lands there
    page.keyboard.press("Tab")
    assert page.evaluate(
        """() => { const a = document.activeElement;
                   return !a || a === document.body || document.getElementById('confirm').contains(a); }"""
    )
    page.keyboard.press("Shift+Tab")
    assert focused() == "confirm-yes"
    page.keyboard.press("Enter")
    expect(page.locator("#notice .notice.ok")).to_contain_text("is pending again")
    assert board.calls == [("rerun", job.id)]
    # the button is gone with the row: focus goes to the result, not nowhere
    expect(_failed_row(page, job.id)).to_have_count(0)
    expect(page.locator("#notice")).to_be_focused()
    assert console.errors == []


def test_no_console_errors_and_nothing_from_outside(
    page: Page, server: BoardServer, board: InMemoryBoard, console: Console
) -> None:
    page.goto(server.url)
    page.wait_for_timeout(REFRESH_SECONDS * 2500)  # some polls
    page.goto(f"{server.url}/?status=done&site=nersc")
    job = next(iter(board.jobs))
    page.goto(f"{server.url}/jobs/{job}")
    page.wait_for_timeout(REFRESH_SECONDS * 1500)
    page.locator("#raw summary").click()
    expect(page.locator("#raw pre")).to_contain_text(f'"id": "{job}"')
    assert console.errors == []
    # every request went to the board itself (no CDN: the machines have no internet)
    outside = [
        u for u in console.requests if not u.startswith(server.url + "/") and not u.startswith("data:")
    ]
    assert outside == []
    assert any(u.endswith("/static/htmx-2.0.11.min.js") for u in console.requests)


def test_landmarks_labels_and_names(page: Page, server: BoardServer) -> None:
    page.goto(server.url)
    for role in ("banner", "main", "contentinfo", "search"):
        expect(page.get_by_role(role)).to_have_count(1)
    for label in ("Workflow", "Status", "Site", "Object id"):
        expect(page.get_by_label(label, exact=True)).to_have_count(1)
    # every button and link has a name a screen reader can say
    unnamed = page.evaluate(
        """() => [...document.querySelectorAll('button, a[href], select, input')]
              .filter(e => e.type !== 'hidden')
              .filter(e => !(e.labels && e.labels.length) && !(e.getAttribute('aria-label'))
                           && !(e.textContent || '').trim())
              .map(e => e.outerHTML.slice(0, 80))"""
    )
    assert unnamed == []
    # the action buttons say which job they act on
    first_rerun = page.locator("#failed button[data-action=rerun]").first
    expect(first_rerun).to_have_accessible_name(re.compile(r"^Rerun \S+ on nmdc:"))
    # headings in order: one h1, sections as h2
    assert page.locator("h1").count() == 1
    assert page.locator("main h2").count() >= 4


_CONTRAST_SCRIPT = """
() => {
  const parse = (c) => c.match(/[\\d.]+/g).slice(0, 3).map(Number);
  const bg = (e) => {
    for (let n = e; n; n = n.parentElement) {
      const c = getComputedStyle(n).backgroundColor;
      if (c && !c.startsWith('rgba(0, 0, 0, 0)') && c !== 'transparent') return parse(c);
    }
    return [255, 255, 255];
  };
  const sel = ['body', '.panel h2', '.panel-meta', '.wf-title', '.count a', '.count.zero a', 'th',
               'td', '.error-code', '.error-message', '.lease-end', '.oldest', 'a.wf-name', '.tag',
               '.button', '.button.secondary', '.lease.soon strong', '.source', '.refreshed',
               'label', 'tr.lease-soon td'];
  return sel.flatMap(s => [...document.querySelectorAll(s)].slice(0, 3).map(e => ({
    sel: s, fg: parse(getComputedStyle(e).color), bg: bg(e)})));
}
"""


def _luminance(rgb: list[float]) -> float:
    def channel(c: float) -> float:
        c /= 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def _contrast(a: list[float], b: list[float]) -> float:
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def test_text_contrast_in_light_and_dark(page: Page, server: BoardServer) -> None:
    schemes: tuple[Literal["light", "dark"], ...] = ("light", "dark")
    for scheme in schemes:
        page.emulate_media(color_scheme=scheme)
        page.goto(server.url)
        samples = page.evaluate(_CONTRAST_SCRIPT)
        assert len(samples) > 20
        low = [
            (s["sel"], round(_contrast(s["fg"], s["bg"]), 2))
            for s in samples
            if _contrast(s["fg"], s["bg"]) < 4.5
        ]
        assert low == [], f"{scheme}: text below 4.5:1 contrast: {low}"
        body = page.evaluate("getComputedStyle(document.body).backgroundColor")
        dark = _luminance([float(x) for x in re.findall(r"[\d.]+", body)[:3]]) < 0.1
        assert dark == (scheme == "dark"), f"{scheme} scheme has body background {body}"


def test_usable_on_a_small_laptop_screen(page: Page, server: BoardServer) -> None:
    page.set_viewport_size({"width": 1280, "height": 720})
    page.goto(server.url)
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"the page scrolls sideways by {overflow}px at 1280 wide"
    page.set_viewport_size({"width": 1024, "height": 700})
    page.goto(server.url)
    # the action buttons stay on screen
    box = page.locator("#failed button[data-action=rerun]").first.bounding_box()
    assert box is not None and box["x"] + box["width"] <= 1024
