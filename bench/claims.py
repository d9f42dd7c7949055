"""Figure 3: many sites draining one queue, with `POST /jobs:claim` and NMDC-style list-then-claim.

A fresh LocalRuntime per run; S sites (one thread, one HTTP client and one token each) drain J
pending jobs of one workflow (written straight into the jobs table: setup, not measured).

- claim_next: `POST /jobs:claim {"workflow_id"}` until the answer is 204 three times in a row.
  Conflicts are the claim writes DynamoDB refused (a conditional check or a cancelled
  transaction), counted where the API's worker processes reach DynamoDB (the runtime's proxy),
  plus any 409. The runtime runs as many API workers as there are sites, warm before the clock,
  so the 16 sites' claims race as they would in 16 Lambda containers.
- list_then_claim: what an NMDC-style site does: `GET /jobs?workflow_id&status=pending`, then
  `POST /jobs/{id}:claim` on each listed job in order; a 409 is a conflict; until the list is empty.

Correctness: every job claimed by exactly one site, checked from the answers (no job id won twice)
and from the table (each job `claimed`, with one claim).
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from bench.common import TAG_WORKFLOW, not_measured, progress, step, summarize
from bench.counting import RequestCounter

MODES = ("claim_next", "list_then_claim", "claim_next_service")
LIST_PAGE = 20  # the API's default page, as an NMDC-style site lists


@dataclass(frozen=True)
class ClaimsConfig:
    sites: int = 16
    jobs: int = 1_000
    repetitions: int = 3
    # A mode that has not drained the queue by then stops (list-then-claim with 16 sites makes
    # about one request per conflict: thousands of 409s) and says how far it got.
    max_seconds: float = 100.0


def _seed_jobs(runtime: Any, label: str, count: int) -> list[str]:
    import boto3

    from jobtriggers.dal.dynamo import to_item
    from jobtriggers.dal.jobs import job_item
    from jobtriggers.models import Job, iso

    client = boto3.client("dynamodb", endpoint_url=runtime.dynamodb_endpoint)
    table = runtime.tables["JOBS_TABLE"]
    base = datetime(2025, 1, 1, tzinfo=UTC)
    items = []
    for i in range(count):
        job = Job.new(TAG_WORKFLOW, f"{label}-{i:05d}", iso(base + timedelta(milliseconds=i)))
        items.append(job_item(job.model_copy(update={"version": 1})))
    for start in range(0, len(items), 25):
        request: dict[str, Any] = {
            table: [{"PutRequest": {"Item": to_item(i)}} for i in items[start : start + 25]]
        }
        while request:
            request = client.batch_write_item(RequestItems=request).get("UnprocessedItems") or {}
    return [i["id"] for i in items]


def _final_state(runtime: Any, job_ids: list[str]) -> tuple[int, int]:
    """(jobs not claimed, jobs with more than one claim) as the table has them."""
    import boto3

    from jobtriggers.dal.dynamo import from_item, to_item
    from jobtriggers.models import job_key_from_id

    client = boto3.client("dynamodb", endpoint_url=runtime.dynamodb_endpoint)
    table = runtime.tables["JOBS_TABLE"]
    unclaimed = multiple = 0
    for start in range(0, len(job_ids), 100):
        keys = [to_item({"job_key": job_key_from_id(j)}) for j in job_ids[start : start + 100]]
        request: dict[str, Any] = {table: {"Keys": keys}}
        while request:
            resp = client.batch_get_item(RequestItems=request)
            for item in map(from_item, resp.get("Responses", {}).get(table, [])):
                if item["status"] != "claimed":
                    unclaimed += 1
                if len(item.get("claims", [])) > 1:
                    multiple += 1
            request = resp.get("UnprocessedKeys") or {}
    return unclaimed, multiple


class SiteWorker(threading.Thread):
    def __init__(
        self, base_url: str, creds: dict[str, str], mode: str, barrier: threading.Barrier, max_seconds: float
    ) -> None:
        super().__init__(daemon=True)
        self.max_seconds = max_seconds
        self.deadline = float("inf")
        self.base_url = base_url
        self.creds = creds
        self.mode = mode
        self.barrier = barrier
        self.won: list[str] = []
        self.conflicts = 0
        self.requests = 0
        self.retries = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with httpx.Client(base_url=self.base_url, timeout=120) as client:
                r = client.post(
                    "/token",
                    data={
                        "grant_type": "client_credentials",
                        "client_id": self.creds["client_id"],
                        "client_secret": self.creds["client_secret"],
                    },
                )
                r.raise_for_status()
                client.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
                # Warm-up before the clock (the workers are provisioned; this warms each one's
                # first request): steady state, not cold starts, is what this figure measures.
                self._send(client, "GET", "/jobs", params={"max_page_size": 1})
                self.barrier.wait()
                self.deadline = time.monotonic() + self.max_seconds
                if self.mode == "claim_next":
                    self._claim_next(client)
                elif self.mode == "list_then_claim":
                    self._list_then_claim(client)
                else:
                    self._claim_next_service()
        except BaseException as exc:
            self.error = exc
            with contextlib.suppress(threading.BrokenBarrierError):
                self.barrier.abort()

    def _send(self, client: httpx.Client, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One request, retried on a timeout or a dropped connection as a site's client does."""
        for attempt in range(5):
            try:
                return client.request(method, url, **kwargs)
            except httpx.TransportError:
                self.retries += 1
                time.sleep(0.5 * (attempt + 1))
        raise RuntimeError(f"{method} {url}: no answer after 5 attempts")

    def _claim_next(self, client: httpx.Client) -> None:
        empty = 0
        while empty < 3 and time.monotonic() < self.deadline:
            r = self._send(client, "POST", "/jobs:claim", json={"workflow_id": TAG_WORKFLOW})
            self.requests += 1
            if r.status_code == 200:
                self.won.append(r.json()["metadata"]["job"]["id"])
                empty = 0
            elif r.status_code == 204:
                empty += 1
                time.sleep(0.05)
            elif r.status_code == 409:
                self.conflicts += 1
            else:
                raise RuntimeError(f"POST /jobs:claim -> {r.status_code} {r.text[:200]}")

    def _claim_next_service(self) -> None:
        """The service's claim_next called directly, in parallel, in this process."""
        from jobtriggers import wiring
        from jobtriggers.logic.claims import SiteRef

        service = wiring.claim_service()
        site = SiteRef.of(self.creds["site_id"])
        empty = 0
        while empty < 3 and time.monotonic() < self.deadline:
            operation = service.claim_next(site, TAG_WORKFLOW)
            self.requests += 1
            if operation is None:
                empty += 1
                time.sleep(0.05)
                continue
            empty = 0
            self.won.append(operation.job_id)

    def _list_then_claim(self, client: httpx.Client) -> None:
        while time.monotonic() < self.deadline:
            r = self._send(
                client,
                "GET",
                "/jobs",
                params={"workflow_id": TAG_WORKFLOW, "status": "pending", "max_page_size": LIST_PAGE},
            )
            self.requests += 1
            if r.status_code != 200:
                raise RuntimeError(f"GET /jobs -> {r.status_code} {r.text[:200]}")
            listed = r.json()["resources"]
            if not listed:
                return
            for job in listed:
                if time.monotonic() >= self.deadline:
                    return
                c = self._send(client, "POST", f"/jobs/{job['id']}:claim")
                self.requests += 1
                if c.status_code == 200:
                    self.won.append(job["id"])
                elif c.status_code == 409:
                    self.conflicts += 1
                else:
                    raise RuntimeError(f"POST /jobs/{{id}}:claim -> {c.status_code} {c.text[:200]}")


STORE_CONFLICTS = ("ConditionalCheckFailedException", "TransactionCanceledException")


def _store_counts(runtime: Any, counter: RequestCounter) -> tuple[int, int]:
    """(requests, refused conditional writes) so far: the functions' (through the runtime's proxy)
    plus this process's own (claim_next_service)."""
    functions = runtime.proxy.stats()
    here = counter.snapshot()
    refused = sum(functions["errors"].get(code, 0) for code in STORE_CONFLICTS) + here.conditional_failures
    return functions["total"] + here.total_requests, refused


def _provision(runtime: Any, sites: int) -> None:
    """One warm worker per site for the claim route's function and the authorizer (Lambda's
    provisioned concurrency): cold starts are not what this figure measures."""
    from jobtriggers.local.template import api_routes, authorizer_function

    functions = {r.function for r in api_routes(runtime.template) if r.path == "/jobs:claim"}
    functions.add(authorizer_function(runtime.template) or "")
    for function in sorted(functions - {""}):
        runtime.pool.provision(function, sites)


def one_mode(runtime: Any, counter: RequestCounter, config: ClaimsConfig, mode: str, run_no: int) -> dict:
    job_ids = _seed_jobs(runtime, f"{mode}-{run_no}", config.jobs)
    sites = [runtime.create_site(f"bench-{mode}-{run_no}-{i:02d}") for i in range(config.sites)]
    if mode != "claim_next_service":
        _provision(runtime, config.sites)
    barrier = threading.Barrier(config.sites + 1)
    workers = [SiteWorker(runtime.base_url, creds, mode, barrier, config.max_seconds) for creds in sites]
    for w in workers:
        w.start()
    barrier.wait()  # every site has its token: the clock starts now
    requests_before, refused_before = _store_counts(runtime, counter)
    started = time.perf_counter()
    for w in workers:
        w.join()
    seconds = time.perf_counter() - started
    requests_after, refused_after = _store_counts(runtime, counter)
    errors = [w.error for w in workers if w.error]
    if errors:
        raise RuntimeError(f"{mode}: a site failed: {errors[0]!r}") from errors[0]
    won = [j for w in workers for j in w.won]
    wanted = set(job_ids)
    won_ours = [j for j in won if j in wanted]
    if len(won_ours) != len(won):
        # Its queue held jobs it did not seed (tables an earlier mode left): its conflicts and
        # requests per claim would count races for them too.
        raise RuntimeError(f"{mode}: claimed {len(won) - len(won_ours)} jobs it did not seed")
    http_conflicts = sum(w.conflicts for w in workers)
    store_conflicts = refused_after - refused_before if mode != "list_then_claim" else 0
    unclaimed, multiple = _final_state(runtime, job_ids)
    double = (len(won_ours) - len(set(won_ours))) + multiple
    claims = max(len(won_ours), 1)
    drained = unclaimed == 0
    out = {
        "claims": len(won_ours),
        "seconds": seconds,
        "claims_per_s": len(won_ours) / seconds,
        "conflicts": http_conflicts + store_conflicts,
        "conflicts_per_claim": (http_conflicts + store_conflicts) / claims,
        "requests_per_claim": sum(w.requests for w in workers) / claims,
        "dynamodb_requests_per_claim": (requests_after - requests_before) / claims,
        "double_claims": double,
        "client_retries": sum(w.retries for w in workers),
        "unclaimed": unclaimed,
        "drained": drained,
    }
    progress(
        f"  {mode} run {run_no}: {out['claims_per_s']:.1f} claims/s, "
        f"{out['conflicts_per_claim']:.3f} conflicts/claim, double {double}, "
        f"{'drained' if drained else f'{unclaimed} left at the {config.max_seconds:.0f} s cap'}"
    )
    return out


def run(config: ClaimsConfig) -> dict[str, Any]:
    from jobtriggers.dal.dynamo import dynamodb
    from jobtriggers.local.runtime import LocalConfig, LocalRuntime

    per_mode: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    failures: dict[str, str] = {}
    for run_no in range(1, config.repetitions + 1):
        for mode_no, mode in enumerate(MODES, start=1):
            if mode in failures:
                continue
            # A fresh runtime and fresh tables per mode: moto's queries cost O(table), and the
            # jobs an earlier mode left pending would be claimed (and raced for) by the later one.
            # moto's state is per process, so a runtime started on tables of the same names finds
            # them as the last one left them: the prefix names the mode.
            runtime = LocalRuntime(
                LocalConfig(
                    port=0,
                    dynamodb_port=0,
                    table_prefix=f"claims{run_no}m{mode_no}",
                    echo_function_logs=False,
                    max_workers=max(config.sites, 1),
                )
            )
            runtime.start(restore_environment=True)
            counter = RequestCounter()
            counter.attach(dynamodb())
            try:
                with step(f"claims run {run_no}: {config.sites} sites drain {config.jobs:,} jobs, {mode}"):
                    per_mode[mode].append(one_mode(runtime, counter, config, mode, run_no))
            except Exception as exc:
                failures[mode] = f"{type(exc).__name__}: {exc}"
                progress(f"  {mode} failed: {failures[mode]}")
            finally:
                counter.detach()
                runtime.stop()
    modes: dict[str, Any] = {}
    for mode in MODES:
        runs = per_mode[mode]
        if not runs:
            modes[mode] = not_measured(failures.get(mode, "no run"))
            continue
        modes[mode] = {
            "measured": True,
            "claims_per_s": summarize([r["claims_per_s"] for r in runs]),
            "conflicts_per_claim": summarize([r["conflicts_per_claim"] for r in runs]),
            "requests_per_claim": summarize([r["requests_per_claim"] for r in runs]),
            "dynamodb_requests_per_claim": summarize([r["dynamodb_requests_per_claim"] for r in runs]),
            "double_claims": sum(r["double_claims"] for r in runs),
            "unclaimed": sum(r["unclaimed"] for r in runs),
            "exactly_once": all(r["double_claims"] == 0 and r["unclaimed"] == 0 for r in runs),
            "no_double_claims": all(r["double_claims"] == 0 for r in runs),
            "drained": all(r["drained"] for r in runs),
            "claimed": sum(r["claims"] for r in runs),
            "runs": runs,
        }
    return {
        "measured": any(m.get("measured") for m in modes.values()),
        "reason": "; ".join(f"{k}: {v}" for k, v in failures.items()),
        "config": dataclasses.asdict(config),
        "modes": modes,
        "notes": [
            "claim_next conflicts are claim writes the store refused inside the service (the site "
            "sees one 200 per claim); list_then_claim conflicts are the 409s a site receives.",
            "The local runtime runs each function in worker processes of its own, one request at a "
            "time each, as Lambda runs containers; here with one warm API worker per site, so the "
            "sites' claims through HTTP race for real, as 16 Lambda containers would. "
            "claim_next_service calls the same ClaimService from one thread per site in the "
            "benchmark's own process: the service's contention without HTTP, gateway or workers.",
            "Jobs are written straight into the jobs table before the clock starts (setup).",
        ],
    }
