"""Issue 9 done-when: NMDC's workflow automation (`nmdc_automation`) runs on the local runtime unchanged.

`AutomationClient` sends what `NmdcRuntimeApi` (nmdc_automation/api/nmdcapi.py, read at cc7055b1)
sends, the way it sends it: `requests`, a form-encoded token request whose `expires` dict is summed,
`Content-Type: application/json` on every later call, bodies as `json.dumps` text, `list_jobs` with
`filter` as a query parameter (requests encodes it), `list_ops` with the filter appended to the URL as
raw JSON, `claim_job` reading a 409 as "already claimed", `release_job` reading a 404 as "not found
or already released", and `update_op` doing GET-then-PATCH of the whole metadata with `extra` added.
The scheduler's and the watcher's calls are those of sched.py and watch_nmdc.py. The site is made
with `jobtriggers sites create --can-create-jobs`.
"""

from __future__ import annotations

import copy
import json
import time
import uuid
from pathlib import Path
from typing import Any

import requests
from typer.testing import CliRunner

from jobtriggers.cli import app as cli
from jobtriggers.local.runtime import LocalRuntime
from tests.conftest import ROOT
from tests.faults import ALL_KINDS, FaultInjector

_SHARED = ROOT.parent / "shared" / "reference" / "nmdc-automation-job.json"
REFERENCE_JOB = _SHARED if _SHARED.exists() else ROOT / "tests" / "data" / "nmdc-automation-job.json"
SECONDS_IN_DAY = 86400


class AutomationClient:
    """The calls of nmdc_automation's NmdcRuntimeApi, as it makes them (without its tenacity
    decorators: the test retries where the scheduler's would, and says so)."""

    def __init__(self, base_url: str, client_id: str, client_secret: str) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        self.client_id = client_id
        self.client_secret = client_secret
        self.token: str | None = None
        self.expires_at = 0.0
        self.header: dict[str, str] = {}

    def get_token(self) -> dict[str, Any]:
        h = {"accept": "application/json", "Content-Type": "application/x-www-form-urlencoded"}
        data = {
            "grant_type": "client_credentials",
            "client_id": self.client_id,
            "client_secret": self.client_secret,
        }
        resp = requests.post(self.base_url + "token", headers=h, data=data, timeout=10)
        resp.raise_for_status()
        body: dict[str, Any] = resp.json()
        expires = 0
        for unit, seconds in (("days", SECONDS_IN_DAY), ("hours", 3600), ("minutes", 60), ("seconds", 1)):
            if unit in body["expires"]:
                expires += int(body["expires"][unit]) * seconds
        self.expires_at = time.time() + expires
        self.token = body["access_token"]
        self.header = {
            "accept": "application/json",
            "Content-Type": "application/json",
            "Authorization": f"Bearer {self.token}",
        }
        return body

    def _fresh(self) -> None:
        if not self.token or self.expires_at < time.time() + 60:
            self.get_token()

    def create_job(self, job_obj: dict[str, Any]) -> requests.Response:
        self._fresh()
        resp = requests.post(
            f"{self.base_url}jobs", headers=self.header, data=json.dumps(job_obj), timeout=10
        )
        resp.raise_for_status()
        return resp

    def list_jobs(
        self, filt: dict[str, Any] | None = None, max: int = 100
    ) -> tuple[list[dict[str, Any]], int]:
        """The jobs, following next_page_token; also how many pages it took."""
        self._fresh()
        params: dict[str, Any] = {"max_page_size": max}
        if filt:
            params["filter"] = json.dumps(filt)
        results: list[dict[str, Any]] = []
        pages = 0
        while True:
            resp = requests.get(f"{self.base_url}jobs", headers=self.header, params=params, timeout=10)
            assert resp.status_code == 200, resp.text
            body = resp.json()
            pages += 1
            results.extend(body["resources"])
            next_token = body.get("next_page_token")
            if not next_token:
                return results, pages
            params["page_token"] = next_token

    def claim_job(self, job_id: str) -> dict[str, Any]:
        self._fresh()
        resp = requests.post(f"{self.base_url}jobs/{job_id}:claim", headers=self.header, timeout=10)
        data: dict[str, Any] = resp.json()
        data["claimed"] = resp.status_code == 409
        return data

    def release_job(self, job_id: str) -> dict[str, Any] | None:
        self._fresh()
        resp = requests.post(f"{self.base_url}jobs/{job_id}:release", headers=self.header, timeout=10)
        if resp.status_code == 404:
            return None  # "not found or already released"
        body: dict[str, Any] = resp.json()
        return body

    def list_ops(self, filt: dict[str, Any] | None = None, max_page_size: int = 40) -> list[dict[str, Any]]:
        self._fresh()
        url = f"{self.base_url}operations?max_page_size={max_page_size}"
        if filt:
            url += f"&filter={json.dumps(filt)}"
        orig_url = url
        results: list[dict[str, Any]] = []
        while True:
            resp = requests.get(url, headers=self.header, timeout=10).json()
            assert "resources" in resp, resp
            results.extend(resp["resources"])
            if not resp.get("next_page_token"):
                return results
            url = orig_url + f"&page_token={resp['next_page_token']}"

    def get_op(self, opid: str) -> dict[str, Any]:
        self._fresh()
        resp = requests.get(f"{self.base_url}operations/{opid}", headers=self.header, timeout=10)
        resp.raise_for_status()
        body: dict[str, Any] = resp.json()
        return body

    def update_op(
        self, opid: str, done: bool | None = None, results: Any = None, meta: Any = None
    ) -> dict[str, Any]:
        self._fresh()
        d: dict[str, Any] = {}
        if done is not None:
            d["done"] = done
        if results:
            d["result"] = results
        if meta:
            cur = self.get_op(opid)
            d["metadata"] = cur["metadata"]
            d["metadata"]["extra"] = meta
        resp = requests.patch(
            f"{self.base_url}operations/{opid}", headers=self.header, data=json.dumps(d), timeout=10
        )
        resp.raise_for_status()
        body: dict[str, Any] = resp.json()
        return body


def watcher_filter(allowed: list[str]) -> dict[str, Any]:
    """watch_nmdc.RuntimeApiHandler.get_unclaimed_jobs: jobs of its workflows with no claim, or
    whose claims are all cancelled."""
    return {
        "$and": [
            {"workflow.id": {"$in": allowed}},
            {
                "$or": [
                    {"claims": {"$size": 0}},
                    {"claims": {"$not": {"$elemMatch": {"cancelled": {"$ne": True}}}}},
                ]
            },
        ]
    }


def scheduler_record(reference: dict[str, Any], **config: Any) -> dict[str, Any]:
    """A job record as sched.Scheduler.create_job_rec builds it: workflow, config, claims (no id,
    no created_at)."""
    record = {
        "workflow": dict(reference["workflow"]),
        "config": copy.deepcopy(reference["config"]),
        "claims": [],
    }
    record["config"].update(config)
    return record


def automation_site(local_runtime: LocalRuntime, *, can_create_jobs: bool = True) -> AutomationClient:
    site_id = f"jgi-{uuid.uuid4().hex[:6]}"
    args = ["sites", "create", site_id, "--json"] + (["--can-create-jobs"] if can_create_jobs else [])
    made = CliRunner().invoke(cli, args, env=dict(local_runtime.tables))
    assert made.exit_code == 0, made.output
    creds = json.loads(made.stdout)
    return AutomationClient(local_runtime.base_url, creds["client_id"], creds["client_secret"])


def test_nmdc_automation_schedules_claims_reports_and_releases_unchanged(local_runtime: LocalRuntime) -> None:
    reference = json.loads(Path(REFERENCE_JOB).read_text())
    workflow = reference["workflow"]["id"]
    repo = reference["config"]["git_repo"]
    api = automation_site(local_runtime)

    # Token: the client sums `expires` and keeps the bearer token
    token = api.get_token()
    assert token["token_type"] == "bearer" and api.expires_at > time.time() + 60

    # Scheduler: the reference record, posted twice (a tenacity retry after a lost answer): one job
    record = scheduler_record(reference)
    first = api.create_job(record)
    again = api.create_job(record)
    assert (first.status_code, again.status_code) == (201, 200)
    job = first.json()
    assert again.json()["id"] == job["id"]
    assert job["workflow"] == {"id": workflow} and job["config"] == reference["config"]
    assert job["claims"] == [] and job["created_at"] and job["status"] == "pending"
    assert job["workflow_missing"] is False  # a name with a version: its creator's to claim

    # ... and four more jobs of the repository, and two of another workflow (a page is 2 jobs)
    others = [
        api.create_job(scheduler_record(reference, trigger_activity=f"nmdc:wfmgas-{n}", activity_id=f"a{n}"))
        for n in range(4)
    ]
    readqc = {"workflow": {"id": f"Read QC: v1.0.{uuid.uuid4().hex[:4]}"}, "claims": []}
    for n in range(2):
        api.create_job(
            {**readqc, "config": {"git_repo": "https://github.com/microbiomedata/ReadsQC", "n": n}}
        )
    ids = [job["id"], *(o.json()["id"] for o in others)]
    assert all(o.status_code == 201 for o in others) and len(set(ids)) == 5

    # Scheduler: its listing by config.git_repo, two at a time, following next_page_token
    listed, pages = api.list_jobs({"config.git_repo": repo}, max=2)
    assert sorted(j["id"] for j in listed) == sorted(ids)
    assert pages >= 3
    for j in listed:  # what it reads of each: config.trigger_activity, config.release, claims[]
        assert j["config"]["release"] == "v1.1.0" and j["config"]["trigger_activity"] and j["claims"] == []

    # Watcher: its filter finds the five unclaimed jobs
    allowed = [workflow, "Metagenome Assembly: v1.0.9"]
    unclaimed, _ = api.list_jobs(watcher_filter(allowed))
    assert sorted(j["id"] for j in unclaimed) == sorted(ids)

    # Watcher: claims one; the answer's `id` is the operation; the filter no longer finds the job
    claim = api.claim_job(job["id"])
    assert claim["claimed"] is False and claim["metadata"]["job"]["id"] == job["id"]
    opid = claim["id"]
    assert sorted(j["id"] for j in api.list_jobs(watcher_filter(allowed))[0]) == sorted(ids[1:])
    # The scheduler sees the claim and that its operation is live
    [claimed] = [j for j in api.list_jobs({"config.git_repo": repo}, max=2)[0] if j["id"] == job["id"]]
    assert [(c["op_id"], c["site_id"]) for c in claimed["claims"]] == [(opid, claim["metadata"]["site_id"])]
    assert api.get_op(opid)["done"] is False
    # Claiming it again is the same operation (the holder), not a 409
    assert api.claim_job(job["id"])["id"] == opid

    # Release: the job is unclaimed again for the watcher (its claim done and cancelled)
    released = api.release_job(job["id"])
    assert released is not None and released["id"] == opid and released["metadata"]["cancelled"] is True
    after = api.list_jobs(watcher_filter(allowed))[0]
    assert sorted(j["id"] for j in after) == sorted(ids)
    [relisted] = [j for j in after if j["id"] == job["id"]]
    assert relisted["claims"] == [
        {"op_id": opid, "site_id": claim["metadata"]["site_id"], "done": True, "cancelled": True}
    ]
    # A job that does not exist: 404, which the client reads as "not found or already released"
    assert api.release_job(ids[0][:-2] + "zz") is None

    # Watcher: claims three; operators release two in bulk (and an id that does not exist)
    ops = {i: api.claim_job(i)["id"] for i in ids[:3]}
    bulk = requests.post(
        f"{api.base_url}jobs/release",
        headers=api.header,
        data=json.dumps({"job_ids": [ids[0], ids[1], ids[0], "bm8tc3VjaC1qb2I"]}),
        timeout=10,
    )
    assert bulk.status_code == 200, bulk.text
    outcome = bulk.json()
    assert [(r["job_id"], r["released"], r["status_code"]) for r in outcome["results"]] == [
        (ids[0], True, 200),
        (ids[1], True, 200),
        ("bm8tc3VjaC1qb2I", False, 404),
    ]
    assert sorted(j["id"] for j in outcome["released"]) == sorted(ids[:2])
    assert all(j["claims"][-1]["cancelled"] is True for j in outcome["released"])
    assert sorted(j["id"] for j in api.list_jobs(watcher_filter(allowed))[0]) == sorted(
        [ids[0], ids[1], *ids[3:]]
    )

    # Watcher: the run of the third succeeded; update_op GETs the operation, sends its whole
    # metadata back with `extra`, and done
    extra = {"jaws_jobid": "12345", "outputs": [{"name": "proteins_faa", "id": "nmdc:dobj-11-tt8ykk73"}]}
    updated = api.update_op(ops[ids[2]], done=True, meta=extra)
    assert updated["done"] is True and updated["metadata"]["extra"] == extra
    assert updated["metadata"]["site_id"] == claim["metadata"]["site_id"]
    finished = api.list_jobs({"config.git_repo": repo, "status": "done"})[0]
    assert [j["id"] for j in finished] == [ids[2]]
    assert finished[0]["claims"][-1] == {
        "op_id": ops[ids[2]],
        "site_id": claim["metadata"]["site_id"],
        "done": True,
        "cancelled": False,
    }
    assert ids[2] not in {j["id"] for j in api.list_jobs(watcher_filter(allowed))[0]}

    # Operations: list_ops with a filter appended to the URL as raw JSON, 40 a page
    done_ops = api.list_ops({"done": True, "metadata.extra.jaws_jobid": "12345"})
    assert [o["id"] for o in done_ops] == [ops[ids[2]]]
    mine = api.list_ops({"metadata.job.workflow.id": workflow}, max_page_size=2)
    assert {ops[ids[0]], ops[ids[1]], ops[ids[2]], opid} <= {o["id"] for o in mine}
    assert len(mine) == 4


def test_only_an_allowed_site_creates_jobs_and_only_their_creator_claims_them(
    local_runtime: LocalRuntime,
) -> None:
    reference = json.loads(Path(REFERENCE_JOB).read_text())
    scheduler, other = automation_site(local_runtime), automation_site(local_runtime, can_create_jobs=False)
    record = scheduler_record(reference, activity_id=f"nmdc:wfmgan-{uuid.uuid4().hex[:8]}")
    # A site without the permission: 403 naming it, and nothing written
    other._fresh()
    refused = requests.post(
        f"{other.base_url}jobs", headers=other.header, data=json.dumps(record), timeout=10
    )
    assert refused.status_code == 403 and "can_create_jobs" in refused.json()["detail"]
    assert scheduler.list_jobs({"config.activity_id": record["config"]["activity_id"]})[0] == []
    # The allowed one creates it; the other site can neither claim nor cancel it
    job = scheduler.create_job(record).json()
    stolen = other.claim_job(job["id"])
    assert "id" not in stolen and "only the site that created it" in stolen["detail"]
    other._fresh()
    cancel = requests.post(f"{other.base_url}jobs/{job['id']}:cancel", headers=other.header, timeout=10)
    assert cancel.status_code == 403
    # Its creator may cancel it: then the watcher's claim is refused
    scheduler._fresh()
    cancelled = requests.post(
        f"{scheduler.base_url}jobs/{job['id']}:cancel", headers=scheduler.header, timeout=10
    )
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"


def test_the_schedulers_retries_under_store_faults_make_each_job_once(local_runtime: LocalRuntime) -> None:
    # Given the scheduler posting ten records, retrying each on a 5xx or a dropped connection as
    # its tenacity decorator does, while 30 % of the service's DynamoDB calls fail (lost answers
    # included: the job was written, the answer never came back)
    reference = json.loads(Path(REFERENCE_JOB).read_text())
    api = automation_site(local_runtime)
    api.get_token()
    batch = uuid.uuid4().hex[:8]
    records = [scheduler_record(reference, activity_id=f"nmdc:wfmgan-{batch}-{n}") for n in range(10)]
    answers: list[int] = []
    with FaultInjector(rate=0.3, seed=9, kinds=ALL_KINDS).attached(local_runtime.proxy) as faults:
        for record in records:
            for _attempt in range(6):
                try:
                    resp = requests.post(
                        f"{api.base_url}jobs", headers=api.header, data=json.dumps(record), timeout=30
                    )
                except requests.ConnectionError:
                    continue
                if resp.status_code < 500:
                    answers.append(resp.status_code)
                    break
    # Then every record was answered, and each is exactly one job
    assert faults.injected > 0 and len(answers) == 10 and set(answers) <= {200, 201}
    for record in records:
        found, _ = api.list_jobs({"config.activity_id": record["config"]["activity_id"]})
        assert len(found) == 1
