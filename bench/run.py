"""Run the benchmarks: `python -m bench.run` (make bench) or `python -m bench.run --smoke` (make bench-smoke).

Writes <out>/latest.json and the Markdown report (docs/benchmarks.md for a full run). A figure
that fails or cannot run is reported as "not measured: <reason>", never left out or made up.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import DOCS_DIR, RESULTS_DIR, ROOT, not_measured, progress, quiet_lambda_environment

FIGURES = ("latency", "cost", "claims", "coldstart", "filters", "board", "chain")
# Repetitions of a full run, chosen so that `make bench` ends inside 15 minutes on this 2-core
# machine; `python -m bench.run --repetitions N` asks for more where there is time.
REPS = {"latency": 1, "claims": 1}


def configs(smoke: bool, repetitions: int | None = None) -> dict[str, Any]:
    """Sizes and repetitions. Full: chosen so that `make bench` ends well inside 15 minutes on 2 cores."""
    from bench.board import BoardConfig
    from bench.chain import ChainConfig
    from bench.claims import ClaimsConfig
    from bench.coldstart import ColdStartConfig
    from bench.cost import CostConfig
    from bench.filters import FiltersConfig
    from bench.latency import LatencyConfig

    if smoke:
        chosen: dict[str, Any] = {
            "latency": LatencyConfig(objects=40, threads=4, repetitions=1),
            "cost": CostConfig(sizes=(50, 200), new_tags=10, repetitions=1),
            "claims": ClaimsConfig(sites=4, jobs=30, repetitions=1, max_seconds=60),
            "coldstart": ColdStartConfig(repetitions=1, handlers=("api", "trigger_resolver")),
            "filters": FiltersConfig(jobs=500, workflows=5, allowed=2, page_size=20),
            "board": BoardConfig(jobs=500, repetitions=2, browser=False),
            "chain": ChainConfig(chains=4, concurrency=2, repetitions=1),
        }
    else:
        chosen = {
            "latency": LatencyConfig(objects=2_000, threads=4, repetitions=REPS["latency"]),
            # Counts are deterministic: one run; more would only repeat the same numbers.
            "cost": CostConfig(sizes=(1_000, 10_000, 50_000), new_tags=200, repetitions=1),
            "claims": ClaimsConfig(sites=16, jobs=1_000, repetitions=REPS["claims"]),
            # 7: the CPU ratios are medians of 7 adjacent (boto3, handler) pairs; about 1.5 minutes.
            "coldstart": ColdStartConfig(repetitions=7),
            # Counts are deterministic: one run.
            "filters": FiltersConfig(jobs=10_000),
            # 10,000 jobs (the size); 20 page loads, and 5 in Chromium
            "board": BoardConfig(jobs=10_000, repetitions=20, browser=True, browser_repetitions=5),
            # 50 chains of 5 jobs: 200 completion -> next job links beside 50 tag -> job latencies.
            "chain": ChainConfig(chains=50, concurrency=4, repetitions=1),
        }
    if repetitions:
        chosen = {k: dataclasses.replace(v, repetitions=repetitions) for k, v in chosen.items()}
    return chosen


def _runner(name: str) -> Callable[[Any], dict[str, Any]]:
    if name == "latency":
        from bench import latency

        return latency.run
    if name == "cost":
        from bench import cost

        return cost.run
    if name == "claims":
        from bench import claims

        return claims.run
    if name == "filters":
        from bench import filters

        return filters.run
    if name == "board":
        from bench import board

        return board.run
    if name == "chain":
        from bench import chain

        return chain.run
    from bench import coldstart

    return coldstart.run


NOTES = [
    "moto's TransactWriteItems deep-copies every table it touches (stream records included) before "
    "it runs, so a tag costs O(store) in the emulator: about 0.5 s at 2,000 objects. The benchmark "
    "process replaces that backup with one of the touched items only (bench/moto_fastpath.py; the "
    "embedded server handles one request at a time, so this is equivalent). Without it, the local "
    "runtime's tag throughput falls as its store grows, and `make run` users will see that.",
    "Also bench-only, for speed, results unchanged: moto's key comparisons return strings without "
    "five type tests, and bulk setup (the preloaded stores, the objects to tag) is written "
    "into moto's backend directly; every measured request goes over HTTP.",
    "moto answers ReturnConsumedCapacity with a constant 1.0 per request, so capacity units are not "
    "taken from it; items read and written are counted from the requests and responses instead.",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="small sizes, one run each (checks it works)")
    parser.add_argument("--out", type=Path, help="directory for latest.json (default bench/results)")
    parser.add_argument("--markdown", type=Path, help="report path (default docs/benchmarks.md)")
    parser.add_argument("--repetitions", type=int, help="runs per figure (default: chosen per figure)")
    parser.add_argument("--only", choices=FIGURES, action="append", help="run only these figures")
    parser.add_argument(
        "--render", type=Path, help="only re-render the Markdown report from this latest.json"
    )
    parser.add_argument(
        "--merge-into",
        type=Path,
        help="with --only: replace those figures in this latest.json (the others keep their run) and "
        "re-render docs/benchmarks.md from it; --why says why they were re-measured",
    )
    parser.add_argument("--why", default="", help="with --merge-into: why the figures were re-measured")
    args = parser.parse_args(argv)
    if args.merge_into and not args.only:
        parser.error("--merge-into needs --only (the figures to re-measure)")
    if args.render:
        from bench import report

        results = json.loads(args.render.read_text())
        results["notes"] = NOTES  # the method notes as the code now states them
        args.render.write_text(json.dumps(results, indent=2) + "\n")
        (args.markdown or DOCS_DIR / "benchmarks.md").write_text(report.render_markdown(results))
        return 0

    quiet_lambda_environment()
    from bench import moto_fastpath

    moto_fastpath.install()
    out_dir = args.out or (RESULTS_DIR / "smoke" if args.smoke else RESULTS_DIR)
    markdown = args.markdown or (out_dir / "benchmarks.md" if args.smoke else DOCS_DIR / "benchmarks.md")
    cfgs = configs(args.smoke, args.repetitions)
    started = time.monotonic()
    figures: dict[str, Any] = {}
    command = "make bench-smoke" if args.smoke else "make bench"
    from bench import report

    # Handlers print EMF metric lines on stdout; progress goes to stderr.
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        for name in args.only or FIGURES:
            progress(f"figure {name}: {cfgs[name]}")
            try:
                figures[name] = _runner(name)(cfgs[name])
            except Exception as exc:  # one broken figure must not hide the others
                traceback.print_exc()
                figures[name] = not_measured(f"{type(exc).__name__}: {exc}")
                progress(f"figure {name} failed: {exc}")
            # What is done so far is on disk, should a later figure be interrupted.
            partial = report.envelope(command, time.monotonic() - started, figures, NOTES)
            report.write(partial, out_dir / "partial.json", out_dir / "partial.md")
    runtime = time.monotonic() - started
    if args.merge_into:
        results = json.loads(args.merge_into.read_text())
        rerun = report.envelope(command + " --only " + ",".join(args.only), runtime, {}, NOTES)
        for name in args.only:
            results[name] = figures[name]
            results[f"{name}_rerun"] = {
                "generated_at": rerun["generated_at"],
                "runtime_s": runtime,
                "load_average_1_5_15": rerun["machine"]["load_average_1_5_15"],
                "versions": rerun["versions"],
                "why": args.why,
            }
        results["notes"] = NOTES
        report.write(results, args.merge_into, args.markdown or DOCS_DIR / "benchmarks.md")
        progress(f"merged {', '.join(args.only)} into {args.merge_into} in {runtime / 60:.1f} min")
        for target, measured, verdict in report.targets(results):
            progress(f"  {target}: {measured} -> {verdict}")
        return 0
    results = report.envelope(command, runtime, figures, NOTES)
    json_path = out_dir / "latest.json"
    results["json_path"] = (
        str(json_path.relative_to(ROOT)) if json_path.is_relative_to(ROOT) else str(json_path)
    )
    report.write(results, out_dir / "latest.json", markdown)
    for leftover in (out_dir / "partial.json", out_dir / "partial.md"):
        leftover.unlink(missing_ok=True)
    progress(f"wrote {out_dir / 'latest.json'} and {markdown} in {runtime / 60:.1f} min")
    for target, measured, verdict in report.targets(results):
        progress(f"  {target}: {measured} -> {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
