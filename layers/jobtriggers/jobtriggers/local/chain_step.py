"""A stand-in for one workflow's run, for `make demo`, the chain's end-to-end tests and its benchmark.

`jobtriggers site work --workflow ID -- python -m jobtriggers.local.chain_step` runs it on each job:
it reads the job (stdin, as `site work` hands it over), looks up the workflow's declared outputs
(`GET /workflows/{id}`, public, at JOBTRIGGERS_URL), waits CHAIN_STEP_SECONDS (default 0: "the
work"), and prints `{"outputs": [...]}`: one plausible DRS object per declared output, with that
output's types and name, which `site work` reports as the job's result, registering them.

Nothing here is real data: names, sizes, checksums and URLs are made up, but unique per attempt
(derived from the job and its claim), so a retried job never collides with an earlier attempt.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from typing import Any

from jobtriggers.models import Workflow

# What an output's file is called and holds, by the words in its declared name.
_KINDS = (
    ("workflow_execution", ".json", "application/json"),
    ("contig", ".fna", "text/plain"),
    ("scaffold", ".fna", "text/plain"),
    ("bam", ".bam", "application/octet-stream"),
    ("faa", ".faa", "text/plain"),
    ("gff", ".gff", "text/plain"),
    ("tsv", ".tsv", "text/tab-separated-values"),
    ("html", ".html", "text/html"),
    ("zip", ".zip", "application/zip"),
    ("json", ".json", "application/json"),
    ("fq", ".fastq.gz", "application/gzip"),
    ("filtered_final", ".fastq.gz", "application/gzip"),
)


def _kind(output_name: str) -> tuple[str, str]:
    for word, suffix, mime in _KINDS:
        if word in output_name:
            return suffix, mime
    return ".txt", "text/plain"


def plausible_outputs(
    workflow: Workflow, job: dict[str, Any], names: list[str] | None = None
) -> list[dict[str, Any]]:
    """One object per declared output of `workflow` (or of those `names`), as a completion sends
    them: a DRS object (no id: the service derives one), its `types` and its `output_name`."""
    claims = job.get("claims") or [{}]
    attempt = str(claims[-1].get("op_id") or job.get("attempts") or "")
    tag = hashlib.sha256(f"{job['id']}#{attempt}".encode()).hexdigest()[:10]
    outputs = []
    for declared in workflow.outputs:
        if names is not None and declared.name not in names:
            continue
        suffix, mime = _kind(declared.name)
        digest = hashlib.sha256(f"{job['id']}#{attempt}#{declared.name}".encode()).hexdigest()
        file_name = f"nmdc_{workflow.id.split('-')[0]}_{tag}_{declared.name}{suffix}"
        outputs.append(
            {
                "name": file_name,
                "description": declared.description or declared.name,
                "size": 1024 + int(digest[:6], 16),
                "checksums": [{"type": "sha256", "checksum": digest}],
                "created_time": "2025-01-01T00:00:00Z",
                "access_methods": [{"access_url": {"url": f"https://data.example.org/{tag}/{file_name}"}}],
                "mime_type": mime,
                "types": list(declared.object_types),
                "output_name": declared.name,
            }
        )
    return outputs


def _workflow(url: str, workflow_id: str) -> Workflow:
    import httpx

    response = httpx.get(f"{url.rstrip('/')}/workflows/{workflow_id}", timeout=30)
    response.raise_for_status()
    return Workflow.model_validate(response.json())


def main() -> int:
    job = json.load(sys.stdin)
    workflow = _workflow(os.environ["JOBTRIGGERS_URL"], job["workflow"]["id"])
    config = job.get("config", {})
    print(
        f"{workflow.id} on {config.get('object_id')}: {len(config.get('inputs') or [])} inputs",
        file=sys.stderr,
    )
    time.sleep(float(os.environ.get("CHAIN_STEP_SECONDS", "0")))
    print(json.dumps({"outputs": plausible_outputs(workflow, job)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
