"""The seeder custom resource: on each `sam deploy` that carries changed seed content, load it.

CloudFormation sends Create/Update/Delete; we answer through the pre-signed ResponseURL. A seed
that fails validation fails the deploy with every problem listed, and nothing is written.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from jobtriggers.errors import SeedError
from jobtriggers.logic.seed import load_seed_dir, sync_registry
from jobtriggers.observability import logger

PHYSICAL_ID = "jobtriggers-registry-seed"
# CloudFormation shows at most 4 KiB of reason; keep ours readable within it.
MAX_REASON = 3500

Responder = Callable[[str, Mapping[str, Any]], None]


def send_response(url: str, body: Mapping[str, Any]) -> None:
    """PUT the custom resource's answer to CloudFormation's pre-signed S3 URL."""
    data = json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method="PUT", headers={"Content-Type": "", "Content-Length": str(len(data))}
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        resp.read()


def handle_seed_event(
    event: Mapping[str, Any],
    seed_dir: Path,
    services: Callable[[], tuple[Any, Any, Any]],
    respond: Responder = send_response,
) -> dict[str, Any]:
    """Answer CloudFormation whatever happens. `services` builds (registry store, trigger resolver,
    assignments) inside the answer's try, so that even a missing table name is a FAILED reason
    instead of a crash CloudFormation waits an hour for."""
    request_type = event.get("RequestType")
    base = {
        "StackId": event.get("StackId"),
        "RequestId": event.get("RequestId"),
        "LogicalResourceId": event.get("LogicalResourceId"),
        "PhysicalResourceId": event.get("PhysicalResourceId") or PHYSICAL_ID,
    }
    body: dict[str, Any]
    try:
        if request_type == "Delete":
            # The registry tables are retained with the stack's data; nothing to undo.
            body = {**base, "Status": "SUCCESS", "Data": {}}
        else:
            registry = load_seed_dir(seed_dir)
            store, resolver, objects = services()
            report = sync_registry(registry, store, resolver, objects)
            summary = report.summary()
            logger.info("seed loaded", extra={"seed": summary})
            data = {
                "ContentHash": report.content_hash,
                "Added": sum(len(v) for v in summary["added"].values()),
                "Changed": sum(len(v) for v in summary["changed"].values()),
                "Removed": sum(len(v) for v in summary["removed"].values()),
                "BackfilledJobs": sum(report.backfilled.values()),
            }
            body = {**base, "Status": "SUCCESS", "Data": data}
    except SeedError as exc:
        problems = exc.detail if isinstance(exc.detail, list) else [str(exc.detail)]
        logger.error("seed rejected", extra={"problems": problems})
        body = {
            **base,
            "Status": "FAILED",
            "Reason": ("seed/ is invalid: " + "; ".join(problems))[:MAX_REASON],
        }
    except Exception as exc:
        logger.exception("seed load failed")
        body = {**base, "Status": "FAILED", "Reason": f"seed load failed: {exc}"[:MAX_REASON]}
    respond(str(event.get("ResponseURL", "")), body)
    return body
