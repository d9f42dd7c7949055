"""The whole local runtime in this process: seed loaded, gateway + real handlers, poller + TriggerEngine."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from typer.testing import CliRunner

from jobtriggers.cli import app as cli
from jobtriggers.local.runtime import LocalConfig, LocalRuntime
from jobtriggers.local.template import load_template, resources_of_type
from jobtriggers.logic.seed import load_seed_dir

TYPE = "metagenome_sequencing_activity_set"


@pytest.fixture(scope="module")
def runtime(dynamo_endpoint: str) -> Iterator[LocalRuntime]:
    rt = LocalRuntime(
        LocalConfig(port=0, dynamodb_endpoint=dynamo_endpoint, table_prefix=f"rt{uuid.uuid4().hex[:8]}")
    )
    rt.start(restore_environment=True)
    yield rt
    rt.stop()


def _token(http: httpx.Client, creds: dict[str, str]) -> dict[str, str]:
    r = http.post(
        "/token",
        data={
            "grant_type": "client_credentials",
            "client_id": creds["client_id"],
            "client_secret": creds["client_secret"],
        },
    )
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def _jobs(http: httpx.Client, headers: dict[str, str], object_id: str) -> list[dict]:
    r = http.get("/jobs", params={"object_id": object_id, "max_page_size": 100}, headers=headers)
    assert r.status_code == 200, r.text
    return list(r.json()["resources"])


def test_a_tagged_object_has_its_jobs_within_two_seconds_and_never_twice(runtime: LocalRuntime) -> None:
    # Given a site with a token, and the workflows seed/ triggers from the type
    expected = {t.workflow_id for t in load_seed_dir(runtime.seed_dir).triggers if t.object_type_id == TYPE}
    with httpx.Client(base_url=runtime.base_url, timeout=10) as http:
        headers = _token(http, runtime.create_site(f"site-{uuid.uuid4().hex[:6]}"))
        body = {
            "name": "reads.fastq",
            "size": 10,
            "checksums": [{"type": "sha256", "checksum": uuid.uuid4().hex}],
            "created_time": "2024-01-01T00:00:00Z",
            "access_methods": [{"access_url": {"url": "https://example.org/reads.fastq"}}],
        }
        created = http.post("/objects", json=body, headers=headers)
        assert created.status_code == 201, created.text
        object_id = created.json()["id"]
        # When the site tags the object over HTTP
        started = time.monotonic()
        tagged = http.put(f"/objects/{object_id}/types", json=[TYPE], headers=headers)
        assert tagged.status_code == 200, tagged.text
        jobs: list[dict] = []
        while len(jobs) < len(expected) and time.monotonic() - started < 2.0:
            time.sleep(0.05)
            jobs = _jobs(http, headers, object_id)
        latency = time.monotonic() - started
        # Then within 2 s there is one pending job per triggered workflow
        print(f"tag over HTTP -> jobs visible over HTTP: {latency * 1000:.0f} ms")
        assert sorted(j["workflow"]["id"] for j in jobs) == sorted(expected)
        assert {j["status"] for j in jobs} == {"pending"}
        # And tagging again adds none
        again = http.put(f"/objects/{object_id}/types/{TYPE}", headers=headers)
        assert again.status_code in (200, 204), again.text
        assert runtime.wait_for_stream(5)
        assert len(_jobs(http, headers, object_id)) == len(expected)
        stats = http.get("/local/stats").json()
        assert stats["batches"] >= 1
        assert http.get("/local/dlq").json() == []


def test_the_runtime_loaded_the_seed_and_serves_the_registry(runtime: LocalRuntime) -> None:
    # When the public registry is read
    with httpx.Client(base_url=runtime.base_url, timeout=10) as http:
        r = http.get("/object_types/schema%23%2Fdefinitions%2FDatabase")
    # Then the seed is there, the URL-encoded id works, and the banner says what was loaded
    assert r.status_code == 200, r.text
    assert r.json()["id"] == "schema#/definitions/Database"
    assert f"{len(load_seed_dir(runtime.seed_dir).triggers)} triggers" in runtime.banner()
    assert runtime.signing_key not in runtime.banner()


def test_the_runtime_reads_functions_and_tables_from_the_template(runtime: LocalRuntime) -> None:
    # Then every table of the template exists under the runtime's prefix, and no function is missing
    template = load_template()
    assert len(runtime.tables) == len(resources_of_type(template, "AWS::DynamoDB::Table"))
    assert all(name.startswith(runtime.config.table_prefix) for name in runtime.tables.values())
    assert runtime.unavailable == {}


def test_a_taken_port_stops_the_command_with_exit_code_2() -> None:
    # Given a port that something else holds
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # When `jobtriggers local` is told to use it
        result = CliRunner().invoke(cli, ["local", "--port", str(port), "--dynamodb-port", "0"])
    # Then it exits 2 naming the port, before starting anything
    assert result.exit_code == 2
    assert f"127.0.0.1:{port} is already in use" in result.output


def test_a_parameter_the_template_lacks_stops_the_command_with_exit_code_2() -> None:
    # When `jobtriggers local` is given a parameter override the template has no parameter for
    result = CliRunner().invoke(
        cli, ["local", "--port", "0", "--dynamodb-port", "0", "--parameter", "Nope=1"]
    )
    # Then it exits 2 naming it, before starting anything
    assert result.exit_code == 2
    assert "template.yaml has no parameter Nope" in result.output
