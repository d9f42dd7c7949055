"""The public registry routes, /health, /openapi.json, /docs and unknown routes, through ApiFunction."""

from __future__ import annotations

import pytest

from jobtriggers.logic.seed import load_seed_dir
from tests.api_events import ROOT, ApiCaller, load_function, module_tables, rest_event, use_tables

SEED_DIR = ROOT / "seed"
DB = "schema#/definitions/Database"
MG = "metagenome_sequencing_activity_set"


@pytest.fixture(scope="module")
def api() -> ApiCaller:
    return ApiCaller(load_function("api"))


@pytest.fixture(scope="module")
def registry_tables(dynamo_endpoint: str) -> dict[str, str]:
    return module_tables()


@pytest.fixture(autouse=True)
def seeded(registry_tables: dict[str, str]) -> None:
    use_tables(registry_tables)


@pytest.mark.parametrize(
    ("resource", "kind"),
    [("/object_types", "object_type"), ("/workflows", "workflow"), ("/triggers", "trigger")],
)
def test_lists_are_public_and_complete(api: ApiCaller, resource: str, kind: str) -> None:
    # When an anonymous caller lists a registry kind
    status, body = api("GET", resource, site_id=None)
    # Then exactly the entries of seed/ are there
    assert status == 200
    seeded = load_seed_dir(SEED_DIR).entries()[kind]
    assert sorted(e["id"] for e in body) == sorted(e.id for e in seeded)


def test_url_encoded_object_type_id(api: ApiCaller) -> None:
    # Given the id schema#/definitions/Database, sent as schema%23%2Fdefinitions%2FDatabase
    event = rest_event("GET", "/object_types/{type_id}", {"type_id": DB}, site_id=None)
    assert event["path"] == "/object_types/schema%23%2Fdefinitions%2FDatabase"
    # When it is requested
    status, body = api("GET", "/object_types/{type_id}", {"type_id": DB}, site_id=None)
    # Then the type is found under its decoded id
    assert status == 200
    assert body["id"] == DB


def test_url_encoded_id_also_works_when_the_gateway_decodes_the_path(api: ApiCaller) -> None:
    # Given a gateway that hands over the decoded path (as HTTP APIs and some local gateways do)
    event = rest_event("GET", "/object_types/{type_id}", {"type_id": DB}, site_id=None)
    event["path"] = f"/object_types/{DB}"
    # Then the route still matches, because it is rebuilt from resource + pathParameters
    response = api.raw(event)
    assert response["statusCode"] == 200
    assert '"schema#/definitions/Database"' in response["body"]


def test_object_type_workflows_and_back(api: ApiCaller) -> None:
    status, workflows = api("GET", "/object_types/{type_id}/workflows", {"type_id": MG}, site_id=None)
    assert status == 200
    assert "metag-1.0.0" in [w["id"] for w in workflows]
    status, types = api(
        "GET", "/workflows/{workflow_id}/object_types", {"workflow_id": "metag-1.0.0"}, site_id=None
    )
    assert status == 200
    assert MG in [t["id"] for t in types]


def test_get_workflow_and_trigger(api: ApiCaller) -> None:
    status, wf = api("GET", "/workflows/{workflow_id}", {"workflow_id": "metag-1.0.0"}, site_id=None)
    assert (status, wf["id"]) == (200, "metag-1.0.0")
    trigger_id = f"{MG}--metag-1.0.0"
    status, trigger = api("GET", "/triggers/{trigger_id}", {"trigger_id": trigger_id}, site_id=None)
    assert status == 200
    assert (trigger["object_type_id"], trigger["workflow_id"]) == (MG, "metag-1.0.0")


@pytest.mark.parametrize(
    ("resource", "param", "label"),
    [
        ("/object_types/{type_id}", "type_id", "object type"),
        ("/object_types/{type_id}/workflows", "type_id", "object type"),
        ("/workflows/{workflow_id}", "workflow_id", "workflow"),
        ("/workflows/{workflow_id}/object_types", "workflow_id", "workflow"),
        ("/triggers/{trigger_id}", "trigger_id", "trigger"),
    ],
)
def test_unknown_ids_are_404_with_a_message(api: ApiCaller, resource: str, param: str, label: str) -> None:
    status, body = api("GET", resource, {param: "no/such#thing"}, site_id=None)
    assert status == 404
    assert body["detail"] == f"{label} 'no/such#thing' does not exist"


@pytest.mark.parametrize("bad", ["x" * 300, " padded", "tab\there"])
def test_invalid_ids_are_422(api: ApiCaller, bad: str) -> None:
    status, body = api("GET", "/workflows/{workflow_id}", {"workflow_id": bad}, site_id=None)
    assert status == 422
    assert body["detail"][0]["loc"] == ["path", "workflow_id"]


def test_health(api: ApiCaller) -> None:
    assert api("GET", "/health", site_id=None) == (200, {"status": "ok"})


def test_openapi_document_lists_the_routes_and_the_token_scheme(api: ApiCaller) -> None:
    status, doc = api("GET", "/openapi.json", site_id=None)
    assert status == 200
    assert doc["openapi"].startswith("3.")
    assert {"/objects", "/objects/{object_id}/types", "/jobs", "/object_types/{type_id}"} <= set(doc["paths"])
    assert doc["components"]["securitySchemes"]["siteToken"]["scheme"] == "bearer"
    assert doc["paths"]["/jobs"]["get"]["security"] == [{"siteToken": []}]
    # And its server is the stage the request came through (as on AWS: /v1/openapi.json)
    assert doc["servers"] == [{"url": "/v1"}]


def test_docs_serve_swagger_ui(api: ApiCaller) -> None:
    response = api.raw(rest_event("GET", "/docs", site_id=None))
    assert response["statusCode"] == 200
    assert "swagger" in response["body"].lower()
    assert response["multiValueHeaders"]["Content-Type"] == ["text/html"]


def test_unknown_route_is_404_json(api: ApiCaller) -> None:
    status, body = api("GET", "/no/such/route", site_id=None)
    assert status == 404
    assert body == {"detail": "no route for GET /no/such/route"}
