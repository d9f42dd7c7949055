"""Issue "Trigger engine" done-when, as the NMDC Runtime's RuntimeApiSiteClient drives it.

The calls below are the ones its `get_token`, `create_object`, `get_object_info`,
`ensure_object_tag` and `list_jobs` make, sent the same way: `requests`, a form-encoded token
request, `expires` read as timedelta kwargs, JSON bodies for writes and query params for reads,
`filter` as a JSON string. The site is made with the `jobtriggers sites create` command.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
from typer.testing import CliRunner

from jobtriggers.cli import app as cli
from jobtriggers.dal.jobs import JobRepository
from jobtriggers.dal.registry import RegistryRepository
from jobtriggers.local.runtime import LocalRuntime
from jobtriggers.logic.seed import load_seed_dir
from jobtriggers.logic.triggering import TriggerEngine
from tests.conftest import SEED_DIR
from tests.stream_records import stream_records

TAG = "metagenome_raw_paired_end_reads"


class NmdcStyleSession:
    """What RuntimeApiClient does per request: ensure a token, then requests.request."""

    def __init__(self, base_url: str, client_id: str, client_secret: str) -> None:
        self.base_url = base_url
        self.body = {
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": client_secret,
        }
        self.headers: dict[str, str] = {}
        self.refresh_after: datetime | None = None

    def get_token(self) -> None:
        rv = requests.post(self.base_url + "/token", data=self.body, timeout=10)
        token = rv.json()
        assert "access_token" in token, token
        self.headers["Authorization"] = f"Bearer {token['access_token']}"
        self.refresh_after = datetime.now(UTC) + timedelta(**token["expires"]) - timedelta(seconds=5)

    def request(self, method: str, path: str, data: Any = None) -> requests.Response:
        if self.refresh_after is None or self.refresh_after < datetime.now(UTC):
            self.get_token()
        kwargs: dict[str, Any] = {"url": self.base_url + path, "headers": self.headers, "timeout": 10}
        if method.upper() == "GET":
            kwargs["params"] = data
        else:
            kwargs["json"] = data
        rv = requests.request(method, **kwargs)
        rv.raise_for_status()
        return rv

    def ensure_object_tag(self, object_id: str, tag_id: str) -> requests.Response | None:
        type_ids = [t["id"] for t in self.request("GET", f"/objects/{object_id}/types").json()]
        if tag_id not in type_ids:
            return self.request("PUT", f"/objects/{object_id}/types", [*type_ids, tag_id])
        return None

    def list_jobs(self, list_request: dict[str, Any]) -> requests.Response:
        if isinstance(list_request.get("filter"), dict):
            list_request["filter"] = json.dumps(list_request["filter"])
        return self.request("GET", "/jobs", list_request)


def test_a_site_made_by_the_cli_tags_an_object_and_gets_exactly_one_job_per_triggered_workflow(
    local_runtime: LocalRuntime,
) -> None:
    # Given a site created with `jobtriggers sites create` against the running local runtime
    site_id = f"nmdc-site-{uuid.uuid4().hex[:6]}"
    made = CliRunner().invoke(cli, ["sites", "create", site_id, "--json"], env=dict(local_runtime.tables))
    assert made.exit_code == 0, made.output
    creds = json.loads(made.stdout)
    assert set(creds) == {"site_id", "client_id", "client_secret"}
    site = NmdcStyleSession(local_runtime.base_url, creds["client_id"], creds["client_secret"])

    # When it registers an object (create_object) and reads it back (get_object_info)
    object_in = {
        "name": "reads.fastq.gz",
        "description": "raw reads",
        "size": 2048,
        "created_time": "2024-05-01T00:00:00Z",
        "checksums": [{"type": "sha256", "checksum": uuid.uuid4().hex}],
        "access_methods": [{"access_url": {"url": "https://data.example.org/reads.fastq.gz"}}],
    }
    created = site.request("POST", "/objects", object_in)
    assert created.status_code == 201
    object_id = created.json()["id"]
    info = site.request("GET", f"/objects/{object_id}").json()
    assert info["checksums"] == object_in["checksums"] and info["types"] == []

    # And tags it as the NMDC client does (ensure_object_tag: read the types, PUT the whole set)
    tagged_at = time.monotonic()
    assert site.ensure_object_tag(object_id, TAG) is not None

    # Then within 2 s, exactly one pending job exists for each workflow seed/ triggers from the type
    expected = sorted(t.workflow_id for t in load_seed_dir(SEED_DIR).triggers if t.object_type_id == TAG)
    assert expected == ["metag-1.0.0"]
    jobs: list[dict[str, Any]] = []
    while time.monotonic() - tagged_at < 2.0:
        jobs = site.list_jobs({"filter": {"config.object_id": object_id}, "max_page_size": 100}).json()[
            "resources"
        ]
        if len(jobs) >= len(expected):
            break
        time.sleep(0.05)
    elapsed = time.monotonic() - tagged_at
    assert sorted(j["workflow"]["id"] for j in jobs) == expected, f"after {elapsed:.2f}s: {jobs}"
    assert all(j["status"] == "pending" and j["config"]["object_id"] == object_id for j in jobs)
    print(f"tag -> {len(jobs)} job(s) visible in {elapsed:.2f}s")

    # When it tags again (ensure_object_tag is a no-op; a raw PUT of the same set writes nothing)
    assert site.ensure_object_tag(object_id, TAG) is None
    site.request("PUT", f"/objects/{object_id}/types", [TAG])
    # And the stream batch that carried the tag is delivered again to the trigger resolver
    local_runtime.wait_for_stream()
    records = [
        r
        for r in stream_records(local_runtime.tables["OBJECT_TYPES_TABLE"])
        if r["dynamodb"]["Keys"]["object_id"]["S"] == object_id
    ]
    assert [r["eventName"] for r in records] == ["INSERT"]
    replay = TriggerEngine(RegistryRepository(), JobRepository()).handle_stream_record(records[0])

    # Then no job was added
    assert replay.created == [] and len(replay.already_present) == len(expected)
    by_workflow = site.list_jobs(
        {"filter": {"workflow.id": "metag-1.0.0", "config.object_id": object_id}}
    ).json()
    assert [j["id"] for j in by_workflow["resources"]] == [j["id"] for j in jobs]
    assert local_runtime.dlq == []
