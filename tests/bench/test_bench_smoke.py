"""`make bench-smoke` keeps the benchmarks working: run it small and check what it writes.

Nothing here is timed; the assertions are about shape and about the invariants a benchmark must
never break (one job per tag, flat cost for this project, a growing one for the NMDC sensor).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from tests.conftest import ROOT

# The smoke run is every figure small, the chain's included: allow it more than the default 300 s.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    out = tmp_path_factory.mktemp("bench")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_ENDPOINT_URL", "SIGNING_KEY"))}
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--out", str(out), "--markdown", str(out / "b.md")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "latest.json").read_text()), (out / "b.md").read_text()


def _is_summary(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and {"median", "min", "max", "runs"} <= value.keys()
        and value["min"] <= value["median"] <= value["max"]
    )


def test_every_figure_is_measured_or_says_why(smoke: tuple[dict[str, Any], str]) -> None:
    # Given the smoke run's results
    results, _ = smoke
    # Then each figure is there, and one that was not measured carries a reason
    for figure in ("latency", "cost", "claims", "coldstart", "filters", "board", "chain"):
        assert figure in results
        if not results[figure]["measured"]:
            assert results[figure]["reason"], figure
    assert results["machine"]["cpus"] >= 1
    assert results["versions"]["boto3"] != "not installed"


def test_cost_figure_counts_one_job_per_tag_and_a_flat_cost(smoke: tuple[dict[str, Any], str]) -> None:
    # Given the cost figure at two store sizes
    cost = smoke[0]["cost"]
    assert cost["measured"], cost.get("reason")
    small, large = cost["sizes"]
    # Then every new tag made exactly one job, in both designs
    assert cost["exactly_one_job_per_tag"] is True
    # And this project's reads per new job do not depend on the store, while the sensor's grow with it
    assert small["ours_items_read_per_new_job"]["median"] == large["ours_items_read_per_new_job"]["median"]
    assert (
        large["baseline_items_read_per_new_job"]["median"]
        > 2 * small["baseline_items_read_per_new_job"]["median"]
    )
    assert all(_is_summary(s["baseline_items_read_per_tick"]) for s in cost["sizes"])


def test_latency_figure_pairs_every_tag_with_its_job(smoke: tuple[dict[str, Any], str]) -> None:
    # Given the latency figure
    latency = smoke[0]["latency"]
    assert latency["measured"], latency.get("reason")
    # Then each tag produced one job and the percentiles are ordered and positive
    assert latency["jobs_per_tag"]["median"] == 1.0, (
        latency["objects_without_job"],
        latency["dead_letters"],
        latency["stream_stats_when_missing"],
    )
    t = latency["tag_to_job_ms"]
    assert 0 < t["p50"]["median"] <= t["p95"]["median"] <= t["p99"]["median"]
    assert all(_is_summary(latency["floor_ms"][q]) for q in ("p50", "p95", "p99"))
    assert latency["dead_letters"] == 0


def test_cold_start_figure_measures_handlers_against_boto3(smoke: tuple[dict[str, Any], str]) -> None:
    # Given the cold start figure
    cold = smoke[0]["coldstart"]
    assert cold["measured"], cold.get("reason")
    # Then each measured handler has an import time and a ratio to `import boto3`
    assert cold["handlers"]
    for handler in cold["handlers"].values():
        assert handler["import_ms"]["median"] > 0
        assert handler["ratio_to_boto3"]["median"] > 0


def test_claims_figure_is_well_formed(smoke: tuple[dict[str, Any], str]) -> None:
    # Given the claims figure
    claims = smoke[0]["claims"]
    # Then every measured mode states claims/s, conflicts per claim and an exactly-once verdict
    for mode in claims["modes"].values():
        if mode["measured"]:
            assert mode["claims_per_s"]["median"] > 0
            assert mode["conflicts_per_claim"]["median"] >= 0
            assert mode["no_double_claims"] is True
            assert mode["exactly_once"] is True  # the smoke queue is small enough to drain
        else:
            assert mode["reason"]


def test_filters_figure_finds_every_match_once_within_its_budget(smoke: tuple[dict[str, Any], str]) -> None:
    # Given the filters figure (the watcher's and the scheduler's listings, read to their end)
    fig = smoke[0]["filters"]
    assert fig["measured"], fig.get("reason")
    jobs = fig["config"]["jobs"]
    watcher, scheduler = fig["filters"]["watcher"], fig["filters"]["scheduler"]
    # Then each found every match exactly once
    assert watcher["exact"] and scheduler["exact"]
    # And the watcher read only its workflows' jobs, the scheduler every job (a few re-read at page ends)
    share = fig["config"]["allowed"] / fig["config"]["workflows"]
    assert watcher["detail"]["items_read"] <= 1.1 * share * jobs
    assert jobs <= scheduler["detail"]["items_read"] <= 1.1 * jobs
    assert all(
        d["detail"]["items_read_per_page"] <= fig["budget"]["items"] + 100 for d in (watcher, scheduler)
    )


def test_chain_figure_pairs_each_completion_with_the_jobs_its_outputs_start(
    smoke: tuple[dict[str, Any], str],
) -> None:
    # Given the chain figure: a few roots through NMDC's chain
    chain = smoke[0]["chain"]
    assert chain["measured"], chain.get("reason")
    [run] = chain["runs"]
    chains = chain["config"]["chains"]
    # Then every chain ran its five jobs, each completion registering all of its declared outputs
    assert run["jobs_run"] == 5 * chains and run["outputs_registered"] == 58 * chains
    # And each chain gave one tag -> job and four completion -> next job latencies
    assert run["samples"] == {"tag_to_job": chains, "completion_to_job": 4 * chains}
    assert set(run["by_link_p50_ms"]) == {
        "readqc-1.0.6 -> mgasm-1.0.3",
        "readqc-1.0.6 -> mgrba-1.0.2",
        "mgasm-1.0.3 -> mgann-1.0.0",
        "mgann-1.0.0 -> mags-1.0.4",
    }
    for figure in ("tag_to_job_ms", "completion_to_job_ms"):
        assert 0 < chain[figure]["p50"]["median"] <= chain[figure]["p99"]["median"]
    assert chain["dead_letters"] == 0


def test_markdown_report_has_the_targets_and_every_figure(smoke: tuple[dict[str, Any], str]) -> None:
    # Given the Markdown report
    _, markdown = smoke
    # Then it names the machine, the targets and each figure's section
    for heading in (
        "## Targets",
        "## 1. Trigger latency",
        "## 2. Cost per tagged object",
        "## 3. Claims",
        "## 4. Cold start",
        "## 5. Filters",
        "## 6. The job board",
        "## 7. Chain overhead",
    ):
        assert heading in markdown
    assert "Machine:" in markdown


def test_moto_fastpath_rolls_back_a_cancelled_transaction_exactly() -> None:
    # Given moto with the benchmark's transaction backup, in a fresh interpreter (it patches moto)
    # When a tag transaction on a missing object is cancelled after a good one
    proc = subprocess.run(
        [sys.executable, "-m", "tests.bench.fastpath_probe"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    # Then the cancelled one left no assignment and no stream record; the good one left both
    assert out == {"error": "TransactionCanceledException", "assignments": 1, "stream_records": 1}


def test_board_figure_reads_indexes_and_counts_and_reports_what_it_read(
    smoke: tuple[dict[str, Any], str],
) -> None:
    # Given the board figure, small
    board = smoke[0]["board"]
    assert board["measured"], board.get("reason")
    http = board["http"]
    # Then the board showed the jobs' own counts, the same with and without the index shortcut
    assert board["counts_match_jobs"] is True
    assert board["same_answers_with_index_queries"] is True
    # And it never scanned the jobs table, and said exactly what each refresh read
    assert http["jobs_table_scans"] == 0
    assert http["items_read_honest"] is True
    assert http["per_refresh"]["items_read_reported"] > 0
    assert _is_summary(http["first_paint_s"])
    assert "## 6. The job board" in smoke[1]
