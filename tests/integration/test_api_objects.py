"""POST /objects and the /objects/{id}/types family, through ApiFunction's handler, against moto."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from jobtriggers.dal.assignments import AssignmentRepository
from jobtriggers.dal.objects import ObjectRepository
from jobtriggers.dal.registry import RegistryRepository
from jobtriggers.errors import ConflictError
from jobtriggers.logic.objects import ObjectTagger
from jobtriggers.models import ObjectTypeAssignment
from tests.api_events import (
    HOST,
    ApiCaller,
    drs_object_body,
    load_function,
    module_tables,
    unique,
    use_tables,
)

MG = "metagenome_sequencing_activity_set"
DB = "schema#/definitions/Database"
OBJ = "/objects/{object_id}"
TYPES = "/objects/{object_id}/types"
ONE_TYPE = "/objects/{object_id}/types/{type_id}"


@pytest.fixture(scope="module")
def api() -> ApiCaller:
    return ApiCaller(load_function("api"))


@pytest.fixture(scope="module")
def registry_tables(dynamo_endpoint: str) -> dict[str, str]:
    return module_tables()


@pytest.fixture(autouse=True)
def seeded(registry_tables: dict[str, str]) -> None:
    use_tables(registry_tables)


@pytest.fixture
def obj(api: ApiCaller) -> Iterator[str]:
    """A fresh object (its own id and checksum) for one test."""
    status, body = api("POST", "/objects", body=drs_object_body(id=unique("obj"), checksum=unique("md5")))
    assert status == 201
    yield body["id"]


def _assignments(object_id: str) -> list[ObjectTypeAssignment]:
    return AssignmentRepository().types_of(object_id)


# --------------------------------------------------------------------------- POST /objects


def test_create_object_generates_id_and_records_site(api: ApiCaller) -> None:
    # When a site posts an object without an id
    md5 = unique("md5")
    status, body = api("POST", "/objects", body=drs_object_body(checksum=md5), site_id="nersc")
    # Then it is created with a generated URL-safe id, a DRS self URI, and the creating site
    assert status == 201
    assert body["id"].startswith("sys0") and body["id"].isalnum()
    assert body["self_uri"] == f"drs://{HOST}/{body['id']}"
    assert body["created_by"] == "nersc"
    assert body["checksums"] == [{"type": "md5", "checksum": md5}]
    # And it can be read back
    assert ObjectRepository().get(body["id"]).name == "reads.fastq.gz"


def test_create_object_keeps_given_id_and_extra_fields(api: ApiCaller) -> None:
    status, body = api(
        "POST",
        "/objects",
        body=drs_object_body(id="nmdc:dobj-11-abc", checksum=unique("md5"), version="2", aliases=["a1"]),
    )
    assert status == 201
    assert (body["id"], body["version"], body["aliases"]) == ("nmdc:dobj-11-abc", "2", ["a1"])


def test_existing_id_is_a_conflict(obj: str, api: ApiCaller) -> None:
    status, body = api("POST", "/objects", body=drs_object_body(id=obj, checksum=unique("md5")))
    assert status == 409
    assert body["detail"] == f"object '{obj}' already exists"


def test_shared_checksum_is_a_conflict_naming_it_and_nothing_is_written(api: ApiCaller) -> None:
    # Given an object with an md5
    md5 = unique("md5")
    first = api("POST", "/objects", body=drs_object_body(checksum=md5))[1]["id"]
    # When another object arrives with a new sha256 and the same md5
    checksums = [{"type": "sha256", "checksum": unique("sha")}, {"type": "md5", "checksum": md5}]
    second = unique("obj")
    status, body = api("POST", "/objects", body=drs_object_body(id=second, checksums=checksums))
    # Then 409 names the checksum and the object that has it
    assert status == 409
    assert f"md5:{md5}" in body["detail"] and f"'{first}'" in body["detail"]
    # And neither the object nor its new checksum guard was written
    status, _ = api("GET", OBJ, {"object_id": second})
    assert status == 404
    status, _ = api("POST", "/objects", body=drs_object_body(checksums=checksums[:1]))
    assert status == 201


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (drs_object_body(checksums=[]), ["body", "checksums"]),
        (drs_object_body(size=-1), ["body", "size"]),
        (drs_object_body(size="12"), ["body", "size"]),
        (drs_object_body(id="has space"), ["body", "id"]),
        (drs_object_body(unknown_field=1), ["body", "unknown_field"]),
        ({"size": 1}, ["body", "checksums"]),
    ],
)
def test_invalid_object_is_422_naming_the_field(api: ApiCaller, body: dict, field: list) -> None:
    status, resp = api("POST", "/objects", body=body)
    assert status == 422
    assert field in [e["loc"] for e in resp["detail"]]
    assert all(e["msg"] for e in resp["detail"])


def test_body_that_is_not_json_is_422(api: ApiCaller) -> None:
    status, resp = api("POST", "/objects", raw_body='{"size": 1,')
    assert status == 422
    assert "not valid JSON" in resp["detail"][0]["msg"]


def test_create_object_without_site_is_401(api: ApiCaller) -> None:
    status, resp = api("POST", "/objects", body=drs_object_body(), site_id=None)
    assert status == 401
    assert "Bearer" in resp["detail"]


# --------------------------------------------------------------------------- GET /objects/{id}


def test_get_object_lists_its_types(obj: str, api: ApiCaller) -> None:
    api("PUT", TYPES, {"object_id": obj}, body=[MG])
    status, body = api("GET", OBJ, {"object_id": obj})
    assert status == 200
    assert body["id"] == obj and body["types"] == [MG]


def test_get_unknown_object_is_404(api: ApiCaller) -> None:
    status, body = api("GET", OBJ, {"object_id": "nope"})
    assert (status, body["detail"]) == (404, "object 'nope' does not exist")


def test_get_object_with_invalid_id_is_422(api: ApiCaller) -> None:
    status, body = api("GET", OBJ, {"object_id": "x" * 201})
    assert status == 422
    assert body["detail"][0]["loc"] == ["path", "object_id"]


def test_get_object_without_site_is_401(obj: str, api: ApiCaller) -> None:
    assert api("GET", OBJ, {"object_id": obj}, site_id=None)[0] == 401


# --------------------------------------------------------------------------- types


def test_put_types_replaces_the_set_and_get_returns_records(obj: str, api: ApiCaller) -> None:
    # Given an object with the Database type
    api("PUT", TYPES, {"object_id": obj}, body=[DB])
    # When the set is replaced by [MG]
    status, body = api("PUT", TYPES, {"object_id": obj}, body=[MG])
    # Then MG was added and DB removed, and the answer lists type records
    assert status == 200
    assert [t["id"] for t in body] == [MG]
    assert set(body[0]) >= {"id", "name", "description", "created_at"}
    assert [a.object_type_id for a in _assignments(obj)] == [MG]
    status, body = api("GET", TYPES, {"object_id": obj})
    assert (status, [t["id"] for t in body]) == (200, [MG])


def test_put_unchanged_types_writes_nothing(obj: str, api: ApiCaller) -> None:
    api("PUT", TYPES, {"object_id": obj}, body=[MG])
    before = _assignments(obj)
    # When the same set is sent again
    status, _ = api("PUT", TYPES, {"object_id": obj}, body=[MG], site_id="other-site")
    # Then the assignment was not rewritten (its writer and time are the first request's)
    assert status == 200
    assert _assignments(obj) == before
    assert before[0].assigned_by == "site-a"


def test_put_unknown_types_is_422_naming_them_and_nothing_is_written(obj: str, api: ApiCaller) -> None:
    status, body = api("PUT", TYPES, {"object_id": obj}, body=[MG, "no-such-type", "nor-this"])
    assert status == 422
    assert "no-such-type" in body["detail"][0]["msg"] and "nor-this" in body["detail"][0]["msg"]
    assert _assignments(obj) == []


@pytest.mark.parametrize("payload", [{"types": [MG]}, [1, 2], "x", [""]])
def test_put_types_body_must_be_a_list_of_ids(obj: str, api: ApiCaller, payload: object) -> None:
    status, body = api("PUT", TYPES, {"object_id": obj}, body=payload)
    assert status == 422
    assert body["detail"][0]["loc"][0] == "body"
    assert _assignments(obj) == []


def test_put_types_of_unknown_object_is_404(api: ApiCaller) -> None:
    ghost = unique("ghost")
    status, body = api("PUT", TYPES, {"object_id": ghost}, body=[MG])
    assert (status, body["detail"]) == (404, f"object '{ghost}' does not exist")
    assert _assignments(ghost) == []


def test_get_types_of_unknown_object_is_404(api: ApiCaller) -> None:
    assert api("GET", TYPES, {"object_id": "ghost"})[0] == 404


@pytest.mark.parametrize(
    ("method", "resource"), [("GET", TYPES), ("PUT", TYPES), ("PUT", ONE_TYPE), ("DELETE", ONE_TYPE)]
)
def test_types_routes_without_site_are_401(obj: str, api: ApiCaller, method: str, resource: str) -> None:
    status, _ = api(
        method,
        resource,
        {"object_id": obj, "type_id": MG},
        body=[MG] if method == "PUT" else None,
        site_id=None,
    )
    assert status == 401
    assert _assignments(obj) == []


def test_add_and_remove_one_type_are_idempotent_with_encoded_ids(obj: str, api: ApiCaller) -> None:
    params = {"object_id": obj, "type_id": DB}
    # When the Database type (`#` and `/` in its id, URL-encoded) is added twice
    first = api("PUT", ONE_TYPE, params)
    second = api("PUT", ONE_TYPE, params)
    # Then both succeed and the object has it once
    assert first == second and first[0] == 200
    assert [t["id"] for t in first[1]] == [DB]
    assert [a.object_type_id for a in _assignments(obj)] == [DB]
    # When it is removed twice
    assert api("DELETE", ONE_TYPE, params) == (200, [])
    assert api("DELETE", ONE_TYPE, params) == (200, [])
    assert _assignments(obj) == []


def test_add_unknown_type_is_422_and_unknown_object_404(obj: str, api: ApiCaller) -> None:
    status, body = api("PUT", ONE_TYPE, {"object_id": obj, "type_id": "nope"})
    assert status == 422 and "nope" in body["detail"][0]["msg"]
    assert api("PUT", ONE_TYPE, {"object_id": "ghost", "type_id": MG})[0] == 404
    assert api("DELETE", ONE_TYPE, {"object_id": "ghost", "type_id": MG})[0] == 404


# --------------------------------------------------------------------------- concurrency


class FlakyAssignments:
    """The real repository, but the first `apply` loses a race to another writer."""

    def __init__(self) -> None:
        self.real = AssignmentRepository()
        self.calls = 0

    def types_of(self, object_id: str) -> list[ObjectTypeAssignment]:
        return self.real.types_of(object_id)

    def apply(self, object_id: str, add: list[str], remove: list[str], by: str | None) -> None:
        self.calls += 1
        if self.calls == 1:
            # Another writer adds the Database type between our read and our write
            self.real.apply(object_id, [DB], [], by="someone-else")
            raise ConflictError("changed concurrently")
        self.real.apply(object_id, add, remove, by)


def test_replace_retries_after_a_concurrent_writer(obj: str) -> None:
    flaky = FlakyAssignments()
    tagger = ObjectTagger(ObjectRepository(), flaky, RegistryRepository(), sleep=lambda _s: None)
    # When the replace loses the first race
    result = tagger.replace(obj, [MG], by="site-a")
    # Then it re-read and converged on the requested set (the concurrent DB removed again)
    assert result == [MG]
    assert flaky.calls == 2
    assert [a.object_type_id for a in _assignments(obj)] == [MG]


def test_concurrent_conflicts_give_up_after_bounded_attempts(obj: str) -> None:
    class AlwaysConflicting(FlakyAssignments):
        def apply(self, object_id: str, add: list[str], remove: list[str], by: str | None) -> None:
            self.calls += 1
            raise ConflictError("changed concurrently")

    always = AlwaysConflicting()
    tagger = ObjectTagger(ObjectRepository(), always, RegistryRepository(), sleep=lambda _s: None)
    with pytest.raises(ConflictError):
        tagger.add(obj, MG, by="site-a")
    assert always.calls == 5
