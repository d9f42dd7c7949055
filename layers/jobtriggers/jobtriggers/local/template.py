"""template.yaml as data: the one source of truth for tables, functions, routes and stream rules.

The local runtime and the tests create their tables and wire their handlers from here, so there is
no second copy of the schema to drift.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEFAULT_TEMPLATE = Path(__file__).resolve().parents[4] / "template.yaml"
LOCAL_TABLE_PREFIX = "jobtriggers-local"


class _CfnLoader(yaml.SafeLoader):
    """A YAML loader that turns CloudFormation's short tags (!Ref, !GetAtt, !Sub ...) into their long form."""


def _cfn_tag(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> Any:
    name = "Ref" if tag_suffix == "Ref" else f"Fn::{tag_suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if tag_suffix == "GetAtt":
            value = str(value).split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {name: value}


_CfnLoader.add_multi_constructor("!", _cfn_tag)


def load_template(path: str | Path | None = None) -> dict[str, Any]:
    p = Path(path) if path else find_template()
    with p.open(encoding="utf-8") as fh:
        return yaml.load(fh, Loader=_CfnLoader)


def find_template() -> Path:
    """template.yaml of this checkout (editable install), else of the working directory."""
    if DEFAULT_TEMPLATE.exists():
        return DEFAULT_TEMPLATE
    cwd = Path.cwd() / "template.yaml"
    if cwd.exists():
        return cwd
    raise FileNotFoundError("template.yaml not found: run from the project's top level")


def resources_of_type(template: dict[str, Any], type_name: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template.get("Resources", {}).items() if v.get("Type") == type_name}


def table_names_for(template: dict[str, Any], prefix: str) -> dict[str, str]:
    """Logical id -> physical table name, e.g. JobsTable -> {prefix}-JobsTable."""
    return {logical: f"{prefix}-{logical}" for logical in resources_of_type(template, "AWS::DynamoDB::Table")}


def create_table_requests(template: dict[str, Any], names: dict[str, str]) -> list[dict[str, Any]]:
    """CreateTable arguments for every AWS::DynamoDB::Table, as the template declares them."""
    requests = []
    for logical, res in resources_of_type(template, "AWS::DynamoDB::Table").items():
        props = res["Properties"]
        req: dict[str, Any] = {
            "TableName": names[logical],
            "AttributeDefinitions": props["AttributeDefinitions"],
            "KeySchema": props["KeySchema"],
            "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
        }
        if props.get("GlobalSecondaryIndexes"):
            req["GlobalSecondaryIndexes"] = [
                {"IndexName": g["IndexName"], "KeySchema": g["KeySchema"], "Projection": g["Projection"]}
                for g in props["GlobalSecondaryIndexes"]
            ]
        if props.get("StreamSpecification"):
            req["StreamSpecification"] = {"StreamEnabled": True, **props["StreamSpecification"]}
        requests.append(req)
    return requests


def table_environment(template: dict[str, Any], names: dict[str, str]) -> dict[str, str]:
    """The Globals environment variables that name tables (REGISTRY_TABLE=...), resolved to names."""
    env = template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
    out: dict[str, str] = {}
    for var, value in env.items():
        if isinstance(value, dict) and "Ref" in value and value["Ref"] in names:
            out[var] = names[value["Ref"]]
    return out


def global_environment(template: dict[str, Any]) -> dict[str, str]:
    """The Globals environment variables that are plain strings (POWERTOOLS_* and the like)."""
    env = template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
    return {k: str(v) for k, v in env.items() if not isinstance(v, dict)}


@dataclass
class ApiRoute:
    function: str
    method: str
    path: str
    authorized: bool


@dataclass
class StreamSource:
    function: str
    table: str
    properties: dict[str, Any]


@dataclass
class FunctionSpec:
    logical_id: str
    code_uri: str
    handler: str
    environment: dict[str, Any] = field(default_factory=dict)


def functions(template: dict[str, Any]) -> dict[str, FunctionSpec]:
    out = {}
    for logical, res in resources_of_type(template, "AWS::Serverless::Function").items():
        props = res["Properties"]
        out[logical] = FunctionSpec(
            logical_id=logical,
            code_uri=props["CodeUri"],
            handler=props["Handler"],
            environment=props.get("Environment", {}).get("Variables", {}),
        )
    return out


def api_routes(template: dict[str, Any]) -> list[ApiRoute]:
    routes = []
    for logical, res in resources_of_type(template, "AWS::Serverless::Function").items():
        for event in res["Properties"].get("Events", {}).values():
            if event.get("Type") != "Api":
                continue
            props = event["Properties"]
            auth = props.get("Auth", {}).get("Authorizer")
            routes.append(
                ApiRoute(logical, props["Method"].upper(), props["Path"], authorized=auth != "NONE")
            )
    return routes


def authorizer_function(template: dict[str, Any]) -> str | None:
    """The logical id of the function behind the API's default authorizer."""
    for res in resources_of_type(template, "AWS::Serverless::Api").values():
        auth = res["Properties"].get("Auth", {})
        default = auth.get("DefaultAuthorizer")
        if default:
            arn = auth["Authorizers"][default]["FunctionArn"]
            return str(arn["Fn::GetAtt"][0])
    return None


def stream_sources(template: dict[str, Any]) -> list[StreamSource]:
    out = []
    for logical, res in resources_of_type(template, "AWS::Serverless::Function").items():
        for event in res["Properties"].get("Events", {}).values():
            if event.get("Type") != "DynamoDB":
                continue
            props = event["Properties"]
            table = props["Stream"]["Fn::GetAtt"][0]
            out.append(StreamSource(function=logical, table=table, properties=props))
    return out
