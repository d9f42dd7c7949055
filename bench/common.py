"""What every figure shares: paths, the process environment, progress lines and summary statistics."""

from __future__ import annotations

import os
import statistics
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SEED_DIR = ROOT / "seed"
FUNCTIONS_DIR = ROOT / "functions"
RESULTS_DIR = ROOT / "bench" / "results"
DOCS_DIR = ROOT / "docs"

# The object type the figures tag: seed/ links it to exactly one workflow (metag-1.0.0), so one tag
# makes one job and tag->job latencies pair up one to one.
TAG_TYPE = "metagenome_raw_paired_end_reads"
TAG_WORKFLOW = "metag-1.0.0"


def quiet_lambda_environment() -> None:
    """What the local runtime sets for handlers, minus per-job INFO lines that would bury progress."""
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "local")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "local")
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        os.environ.pop(var, None)
    os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "jobtriggers")
    os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "JobTriggers")
    os.environ["POWERTOOLS_TRACE_DISABLED"] = "true"
    os.environ["POWERTOOLS_METRICS_DISABLED"] = "true"
    os.environ["POWERTOOLS_LOG_LEVEL"] = "WARNING"
    warnings.filterwarnings("ignore", message="No application metrics to publish")


_started = time.monotonic()


def progress(message: str) -> None:
    """One line per step on stderr, with the time since the run began (make bench shows it)."""
    print(f"[bench {time.monotonic() - _started:6.1f}s] {message}", file=sys.stderr, flush=True)


@contextmanager
def step(message: str) -> Iterator[None]:
    progress(f"{message} ...")
    started = time.monotonic()
    yield
    progress(f"{message}: done in {time.monotonic() - started:.1f}s")


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of nothing")
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """Median and spread (min, max) over repeated runs, plus the runs themselves."""
    vals = [float(v) for v in values]
    return {
        "median": statistics.median(vals),
        "min": min(vals),
        "max": max(vals),
        "runs": vals,
    }


def not_measured(reason: str) -> dict[str, Any]:
    return {"measured": False, "reason": reason}


def backend_put(table: str, items: list[dict[str, Any]]) -> None:
    """Bulk setup straight into the in-process moto server's backend (never a measured path:
    100,000 items over HTTP would take minutes of the benchmark's 15)."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.dynamodb.models import dynamodb_backends
    from moto.dynamodb.models.dynamo_type import DynamoType, Item, LimitedSizeDict

    from jobtriggers.dal.dynamo import to_item

    backend = dynamodb_backends[DEFAULT_ACCOUNT_ID][os.environ.get("AWS_DEFAULT_REGION", "us-east-1")]
    target: Any = backend.get_table(table)
    for data in items:
        # moto's put_item validates, looks up, and re-sizes the item once per attribute: minutes
        # for 100,000 items. These are well-formed, new and small, so build moto's Item directly.
        attrs = {k: DynamoType(v) for k, v in to_item(data).items()}
        item: Any = Item.__new__(Item)
        item.hash_key = attrs[target.hash_key_attr]
        item.range_key = attrs[target.range_key_attr] if target.range_key_attr else None
        item.attrs = LimitedSizeDict()
        dict.update(item.attrs, attrs)
        if item.range_key is not None:
            target.items[item.hash_key][item.range_key] = item
        else:
            target.items[item.hash_key] = item
