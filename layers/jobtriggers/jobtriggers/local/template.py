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
# The account id every local ARN names (moto accepts any).
LOCAL_ACCOUNT = "123456789012"
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


def event_bus_names_for(template: dict[str, Any], prefix: str) -> dict[str, str]:
    """Logical id -> local event bus name, e.g. JobEventsBus -> {prefix}-JobEventsBus (as tables)."""
    buses = resources_of_type(template, "AWS::Events::EventBus")
    return {logical: f"{prefix}-{logical}" for logical in buses}


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
    """The environment variables that name tables (REGISTRY_TABLE=...), resolved to names: those of
    Globals, and those a single function sets for itself (IDEMPOTENCY_TABLE on ApiFunction)."""
    envs = [template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})]
    envs += [spec.environment for spec in functions(template).values()]
    out: dict[str, str] = {}
    for env in envs:
        for var, value in env.items():
            if isinstance(value, dict) and "Ref" in value and value["Ref"] in names:
                out.setdefault(var, names[value["Ref"]])
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
    timeout: float = 3.0  # seconds; Lambda's default when neither Globals nor the function set one
    memory_size: int = 128


def functions(template: dict[str, Any]) -> dict[str, FunctionSpec]:
    globals_ = template.get("Globals", {}).get("Function", {})
    out = {}
    for logical, res in resources_of_type(template, "AWS::Serverless::Function").items():
        props = res["Properties"]
        out[logical] = FunctionSpec(
            logical_id=logical,
            code_uri=props["CodeUri"],
            handler=props["Handler"],
            environment=props.get("Environment", {}).get("Variables", {}),
            timeout=float(props.get("Timeout", globals_.get("Timeout", 3))),
            memory_size=int(props.get("MemorySize", globals_.get("MemorySize", 128))),
        )
    return out


# --------------------------------------------------------------------------- parameters and conditions


def parameter_values(template: dict[str, Any], overrides: dict[str, str] | None = None) -> dict[str, str]:
    """Every parameter's value: its override (as `sam deploy --parameter-overrides`), else its Default."""
    declared = template.get("Parameters", {})
    unknown = sorted(set(overrides or {}) - set(declared))
    if unknown:
        raise ValueError(
            f"template.yaml has no parameter {', '.join(unknown)}; it has {', '.join(sorted(declared))}"
        )
    out = {
        name: str(spec["Default"])
        for name, spec in declared.items()
        if isinstance(spec, dict) and "Default" in spec
    }
    out.update(overrides or {})
    return out


class Unresolvable(ValueError):
    """A template value that has no local meaning (a reference to an ARN, a secret, ...)."""


def resolve(
    template: dict[str, Any],
    value: Any,
    parameters: dict[str, str],
    names: dict[str, str] | None = None,
) -> Any:
    """A template value as CloudFormation would resolve it, as far as the local runtime can:
    parameters, table names (`names`: logical id -> physical name), conditions, Fn::If,
    Fn::Equals/Not/And/Or. Anything else raises Unresolvable."""
    if not isinstance(value, dict):
        return value
    if len(value) != 1:
        raise Unresolvable(f"not a single intrinsic function: {value!r}")
    ((fn, arg),) = value.items()
    if fn == "Ref":
        if arg in parameters:
            return parameters[arg]
        if names and arg in names:
            return names[arg]
        raise Unresolvable(f"Ref {arg} has no local value")
    if fn == "Condition":
        return condition(template, str(arg), parameters)
    if fn == "Fn::If":
        name, when_true, when_false = arg
        chosen = when_true if condition(template, name, parameters) else when_false
        return resolve(template, chosen, parameters, names)
    if fn == "Fn::Equals":
        left, right = (resolve(template, v, parameters, names) for v in arg)
        return str(left) == str(right)
    if fn == "Fn::Not":
        return not resolve(template, arg[0], parameters, names)
    if fn == "Fn::And":
        return all(resolve(template, v, parameters, names) for v in arg)
    if fn == "Fn::Or":
        return any(resolve(template, v, parameters, names) for v in arg)
    raise Unresolvable(f"{fn} has no local value")


def condition(template: dict[str, Any], name: str, parameters: dict[str, str]) -> bool:
    """A named condition of the template, evaluated at these parameter values."""
    spec = template.get("Conditions", {}).get(name)
    if spec is None:
        raise Unresolvable(f"no condition {name}")
    return bool(resolve(template, spec, parameters))


def function_environment(
    template: dict[str, Any], function: str, parameters: dict[str, str], names: dict[str, str]
) -> tuple[dict[str, str], list[str]]:
    """What a function's process finds in its environment: Globals' variables, then its own,
    resolved. Returns (variables, names of those that have no local value and were left out)."""
    declared = dict(
        template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
    )
    spec = functions(template).get(function)
    declared.update(spec.environment if spec else {})
    env: dict[str, str] = {}
    left_out: list[str] = []
    for var, value in declared.items():
        try:
            resolved = resolve(template, value, parameters, names)
        except Unresolvable:
            left_out.append(var)
            continue
        env[var] = "true" if resolved is True else "false" if resolved is False else str(resolved)
    return env, left_out


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


@dataclass(frozen=True)
class ScheduleEvent:
    """A function's `Type: Schedule` event, resolved at the template's parameter values."""

    function: str
    name: str
    expression: str
    enabled: bool
    event_input: str | None = None  # the rule's Input (a JSON document), if it sets one

    @property
    def interval_seconds(self) -> float | None:
        """Seconds between runs of a rate(...) schedule; None for expressions run only on demand."""
        return rate_seconds(self.expression)


_RATE_UNITS = {"minute": 60, "minutes": 60, "hour": 3600, "hours": 3600, "day": 86400, "days": 86400}


def rate_seconds(expression: str) -> float | None:
    """`rate(5 minutes)` -> 300.0; a cron(...) expression -> None. EventBridge's rules: a positive
    whole number, singular unit for 1 (`rate(1 hour)`), plural otherwise."""
    text = expression.strip()
    if not text.startswith("rate(") or not text.endswith(")"):
        if text.startswith("cron(") and text.endswith(")"):
            return None
        raise ValueError(f"not a schedule expression: {expression!r} (rate(...) or cron(...))")
    parts = text[5:-1].split()
    if len(parts) != 2 or not parts[0].isdigit() or int(parts[0]) < 1 or parts[1] not in _RATE_UNITS:
        raise ValueError(f"invalid rate expression {expression!r}: e.g. rate(1 hour), rate(5 minutes)")
    value, unit = int(parts[0]), parts[1]
    if (value == 1) != (not unit.endswith("s")):
        raise ValueError(f"invalid rate expression {expression!r}: rate(1 minute), rate(2 minutes)")
    return float(value * _RATE_UNITS[unit])


def schedule_events(
    template: dict[str, Any], parameters: dict[str, str] | None = None
) -> list[ScheduleEvent]:
    """Every `Type: Schedule` event of every function. A rule is enabled unless `Enabled: false` or
    `State: DISABLED` says otherwise (both may be conditions, resolved at the parameter values)."""
    params = parameters if parameters is not None else parameter_values(template)
    out = []
    for logical, res in resources_of_type(template, "AWS::Serverless::Function").items():
        for name, event in res["Properties"].get("Events", {}).items():
            if event.get("Type") != "Schedule":
                continue
            props = event.get("Properties", {})
            enabled = True
            if "Enabled" in props:
                enabled = str(resolve(template, props["Enabled"], params)).lower() == "true"
            if "State" in props:
                enabled = str(resolve(template, props["State"], params)).upper().startswith("ENABLED")
            out.append(
                ScheduleEvent(
                    function=logical,
                    name=name,
                    expression=str(resolve(template, props["Schedule"], params)),
                    enabled=enabled,
                    event_input=props.get("Input"),
                )
            )
    return out


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
