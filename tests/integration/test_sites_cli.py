"""`jobtriggers sites ...` against moto: credentials shown once, hashed at rest, rotate, list, delete."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from jobtriggers.cli.site_admin import app
from jobtriggers.dal.sites import SiteRepository
from jobtriggers.logic.tokens import verify_secret
from tests.api_events import module_tables, unique, use_tables

runner = CliRunner()


@pytest.fixture(scope="module")
def cli_tables(dynamo_endpoint: str) -> dict[str, str]:
    return module_tables()


@pytest.fixture(autouse=True)
def _tables(cli_tables: dict[str, str]) -> None:
    use_tables(cli_tables)


def _json(args: list[str]) -> dict:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_create_prints_credentials_once_and_stores_a_hash() -> None:
    site_id = unique("nersc")
    # When an operator creates a site with a capability
    creds = _json(["create", site_id, "--capability", "metag-1.0.0"])
    # Then the credentials are printed, and the store keeps only a salted hash of the secret
    assert set(creds) == {"site_id", "client_id", "client_secret"}
    assert creds["site_id"] == site_id
    client = SiteRepository().get_client(creds["client_id"])
    assert client is not None and client.site_id == site_id
    assert creds["client_secret"] not in json.dumps(client.secret_hash)
    assert verify_secret(creds["client_secret"], client.secret_hash)
    # And show/list never print a secret
    shown = _json(["show", site_id])
    assert shown["capability_ids"] == ["metag-1.0.0"]
    assert "client_secret" not in shown and "secret_hash" not in json.dumps(shown)
    assert site_id in [s["id"] for s in _json(["list"])]


def test_create_existing_site_fails_clearly() -> None:
    site_id = unique("site")
    _json(["create", site_id])
    result = runner.invoke(app, ["create", site_id])
    assert result.exit_code == 1
    assert "already exists" in result.output and "rotate-secret" in result.output


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["create", "bad/site"], "site id 'bad/site'"),
        (
            ["create", "ok-site", "--capability", "no-such-capability"],
            "unknown capability ids: no-such-capability",
        ),
        (["rotate-secret", "ghost-site"], "site 'ghost-site' does not exist"),
        (["show", "ghost-site"], "site 'ghost-site' does not exist"),
        (["delete", "ghost-site", "--yes"], "site 'ghost-site' does not exist"),
    ],
)
def test_bad_requests_fail_with_a_message(args: list[str], fragment: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert fragment in " ".join(result.output.split())


def test_rotate_secret_keeps_client_id_and_replaces_the_secret() -> None:
    site_id = unique("site")
    first = _json(["create", site_id])
    second = _json(["rotate-secret", site_id])
    assert second["client_id"] == first["client_id"]
    assert second["client_secret"] != first["client_secret"]
    client = SiteRepository().get_client(first["client_id"])
    assert client is not None and client.credential_version == 2
    assert verify_secret(second["client_secret"], client.secret_hash)
    assert not verify_secret(first["client_secret"], client.secret_hash)


def test_delete_removes_site_and_client() -> None:
    site_id = unique("site")
    creds = _json(["create", site_id])
    assert _json(["delete", site_id, "--yes"]) == {"deleted": site_id}
    assert SiteRepository().get_site(site_id) is None
    assert SiteRepository().get_client(creds["client_id"]) is None


def test_table_output_for_people_warns_that_the_secret_is_shown_once() -> None:
    result = runner.invoke(app, ["create", unique("site")])
    assert result.exit_code == 0
    assert "client_secret" in result.output and "shown only now" in result.output


def test_job_creation_is_granted_at_creation_or_later_and_revoked() -> None:
    # Given a site created with --can-create-jobs and one created without
    allowed, plain = unique("jgi"), unique("nersc")
    _json(["create", allowed, "--can-create-jobs"])
    _json(["create", plain])
    assert _json(["show", allowed])["can_create_jobs"] is True
    assert _json(["show", plain])["can_create_jobs"] is False
    # When an operator grants the second and revokes the first
    assert _json(["allow-job-creation", plain]) == {"site_id": plain, "can_create_jobs": True}
    revoked = _json(["allow-job-creation", allowed, "--revoke"])
    assert revoked == {"site_id": allowed, "can_create_jobs": False}
    # Then the records say so (credentials untouched), and the listing shows it
    assert SiteRepository().require_site(plain).can_create_jobs is True
    assert SiteRepository().require_site(allowed).can_create_jobs is False
    assert SiteRepository().require_site(allowed).credential_version == 1
    listed = {s["id"]: s["can_create_jobs"] for s in _json(["list"])}
    assert (listed[plain], listed[allowed]) == (True, False)
    # And a site that does not exist is an error naming it
    missing = runner.invoke(app, ["allow-job-creation", unique("nobody")])
    assert missing.exit_code == 1 and "does not exist" in missing.output
