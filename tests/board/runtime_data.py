"""A local runtime filled with real work, for the board's screenshot: three sites register and tag
objects over HTTP (the stream makes the jobs, in several workflows of the NMDC registry), claim
them, report results and errors, and an operator cancels one. Everything goes through the API (and
JobSteering for the operator), so the counts, events and indexes are the service's own.

One lease nears its end while the picture is taken: the runtime is given seed/ with MAGs' lease cut
to LEASE_NEAR_END_SECONDS (`near_end_seed`), and a MAGs job is claimed first and never renewed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from jobtriggers.local.runtime import LocalRuntime

SEED = Path(__file__).resolve().parents[2] / "seed"
SITES = ("emsl", "jgi", "nersc")
SHORT_LEASE_WORKFLOW = "mags-1.0.4"
# Just over the board's one-minute warning: the lease is "expires soon" a few seconds after the claim.
LEASE_NEAR_END_SECONDS = 75

# object type -> how many objects get it (seed/triggers.json: the workflows each starts)
TAGS: dict[str, int] = {
    "metagenome_sequencing_activity_set": 14,  # readqc-1.0.6 and metag-1.0.0
    "read_qc_analysis_activity_set": 9,  # mgasm-1.0.3 and mgrba-1.0.2
    "metagenome_assembly_set": 6,  # mgann-1.0.0
    "metagenome_annotation_activity_set": 4,  # mags-1.0.4
    "nom-input": 5,  # nom-1.0.0
    "gcms-metab-input": 3,  # gcms-metab-1.0.0
}


def nmdc_id(kind: str, n: int) -> str:
    digest = hashlib.sha256(f"{kind}{n}".encode()).digest()
    alphabet = "0123456789abcdefghjkmnpqrstvwxyz"
    return f"nmdc:{kind}-11-" + "".join(alphabet[b % 32] for b in digest[:8])


@contextmanager
def near_end_seed(directory: Path) -> Iterator[Path]:
    """seed/ with the MAGs workflow's lease cut short (the rest as it is)."""
    target = directory / "seed"
    shutil.copytree(SEED, target)
    workflows = json.loads((target / "workflows.json").read_text())
    for workflow in workflows:
        if workflow["id"] == SHORT_LEASE_WORKFLOW:
            workflow["lease_seconds"] = LEASE_NEAR_END_SECONDS
    (target / "workflows.json").write_text(json.dumps(workflows, indent=2))
    yield target


@dataclass
class Site:
    id: str
    headers: dict[str, str]


@dataclass
class Filled:
    jobs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # by workflow
    short_lease_claimed_at: float = 0.0


class Work:
    def __init__(self, runtime: LocalRuntime) -> None:
        self.runtime = runtime
        self.api = httpx.Client(base_url=runtime.base_url, timeout=30)
        self.sites: dict[str, Site] = {}

    def site(self, site_id: str) -> Site:
        if site_id not in self.sites:
            creds = self.runtime.create_site(site_id, [])
            token = self.api.post(
                "/token",
                data={
                    "grant_type": "client_credentials",
                    "client_id": creds["client_id"],
                    "client_secret": creds["client_secret"],
                },
            ).json()["access_token"]
            self.sites[site_id] = Site(site_id, {"Authorization": f"Bearer {token}"})
        return self.sites[site_id]

    def ok(self, response: httpx.Response) -> Any:
        assert response.status_code < 300, (
            f"{response.request.method} {response.request.url}: {response.text}"
        )
        return response.json() if response.content else None

    def tag(self, site: Site, object_type: str, n: int) -> None:
        object_id = nmdc_id("dobj", n)
        self.ok(
            self.api.post(
                "/objects",
                json={
                    "id": object_id,
                    "name": f"{object_type}.json",
                    "size": 2048 + n,
                    "checksums": [{"type": "md5", "checksum": uuid.uuid4().hex}],
                    "created_time": "2024-05-01T12:00:00Z",
                    "access_methods": [
                        {"access_url": {"url": f"https://data.microbiomedata.org/data/{object_id}"}}
                    ],
                },
                headers=site.headers,
            )
        )
        self.ok(self.api.put(f"/objects/{object_id}/types/{object_type}", headers=site.headers))

    def jobs_of(self, site: Site, workflow_id: str) -> list[dict[str, Any]]:
        body = self.ok(
            self.api.get(
                "/jobs", params={"workflow_id": workflow_id, "max_page_size": 100}, headers=site.headers
            )
        )
        return sorted(body["resources"], key=lambda j: j["created_at"])

    def claim(self, site: Site, job: dict[str, Any]) -> dict[str, Any]:
        return dict(self.ok(self.api.post(f"/jobs/{job['id']}:claim", headers=site.headers)))

    def report(self, site: Site, op: dict[str, Any], result: Any) -> None:
        self.ok(
            self.api.patch(
                f"/operations/{op['id']}", json={"done": True, "result": result}, headers=site.headers
            )
        )

    def done(self, site: Site, job: dict[str, Any]) -> None:
        self.report(site, self.claim(site, job), {"outputs": []})

    def fail(self, site: Site, job: dict[str, Any], code: str, message: str, attempts: int) -> None:
        for _ in range(attempts):
            self.report(site, self.claim(site, job), {"code": code, "message": message})


def fill(runtime: LocalRuntime) -> Filled:
    """Sites do a day's work on the runtime; returns the jobs by workflow."""
    work = Work(runtime)
    emsl, jgi, nersc = (work.site(s) for s in SITES)
    n = 0
    for object_type, count in TAGS.items():
        for _ in range(count):
            n += 1
            work.tag((emsl, jgi, nersc)[n % 3], object_type, n)
    runtime.wait_for_stream()
    jobs = {w: work.jobs_of(emsl, w) for w in ("readqc-1.0.6", "metag-1.0.0", "mgasm-1.0.3", "mgrba-1.0.2")}
    jobs |= {w: work.jobs_of(emsl, w) for w in ("mgann-1.0.0", "mags-1.0.4", "nom-1.0.0", "gcms-metab-1.0.0")}
    filled = Filled(jobs=jobs)

    # the lease that nears its end: claimed first, never renewed
    work.claim(emsl, jobs["mags-1.0.4"][0])
    filled.short_lease_claimed_at = time.monotonic()

    # a day's work: most done, some failed for good, some running
    for job in jobs["readqc-1.0.6"][:9]:
        work.done(jgi, job)
    work.fail(
        jgi,
        jobs["readqc-1.0.6"][9],
        "input_unavailable",
        "HTTP 404 for https://data.microbiomedata.org/data/nmdc:omprc-11-9q8e3t42/raw.fastq.gz",
        3,
    )
    for job in jobs["readqc-1.0.6"][10:12]:
        work.claim(nersc, job)
    for job in jobs["metag-1.0.0"][:6]:
        work.done(nersc, job)
    for job in jobs["metag-1.0.0"][6:9]:
        work.claim(nersc, job)
    for job in jobs["mgasm-1.0.3"][:4]:
        work.done(nersc, job)
    work.fail(
        nersc,
        jobs["mgasm-1.0.3"][4],
        "command_failed",
        "metaSPAdes exited 137 (killed: out of memory, 118 GiB) after 3 h 12 m",
        3,
    )
    work.claim(nersc, jobs["mgasm-1.0.3"][5])
    for job in jobs["mgrba-1.0.2"][:5]:
        work.done(jgi, job)
    work.claim(jgi, jobs["mgrba-1.0.2"][5])
    for job in jobs["mgann-1.0.0"][:2]:
        work.done(emsl, job)
    work.claim(emsl, jobs["mgann-1.0.0"][2])
    # an attempt that failed, the job pending again with its error
    work.fail(emsl, jobs["mgann-1.0.0"][3], "timeout", "prodigal ran past its 6 h limit", 1)
    for job in jobs["nom-1.0.0"][:3]:
        work.done(emsl, job)
    work.claim(emsl, jobs["nom-1.0.0"][3])
    work.done(emsl, jobs["gcms-metab-1.0.0"][0])

    # an operator cancels a pending job nobody should run
    from jobtriggers import wiring

    wiring.job_steering().cancel(jobs["metag-1.0.0"][-1]["id"], by="operator:screenshot")
    runtime.wait_for_stream()
    work.api.close()
    return filled
