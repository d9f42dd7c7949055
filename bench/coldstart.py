"""Figure 4: cold start of each handler, as a ratio to a bare `import boto3` measured in the same run.

For every functions/<name>/app.py, in a fresh interpreter each time, with the environment
template.yaml's Globals give every function:
- the CPU time of loading the handler module (its imports and whatever it builds at import), over
  the CPU time of an `import boto3` run just before it, both in processes without `-X importtime`:
  the ratio the targets are checked on. CPU time, because on a shared machine the wall time of a
  0.2 s import measures the neighbours too (bare `import boto3` took 0.2-0.9 s wall in one run at a
  load average of 7);
- `python -X importtime`: the import time of what the handler imports (the sum of the cumulative
  wall times of its top-level imports), its ratio to boto3's (shown beside the CPU ratio) and where
  it goes, per package;
- the wall time of its first invocation with a representative event (against a moto server this
  process starts; the seeder, a CloudFormation custom resource, is imported only).
Bytecode is cached for every package alike (one unmeasured round writes it first).
And the size of the built layer (.aws-sam/build/JobTriggersLayer) when `sam build` has run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from bench.common import FUNCTIONS_DIR, ROOT, SEED_DIR, TAG_TYPE, progress, step, summarize

STREAM_HANDLERS = frozenset({"trigger_resolver"})
API_HANDLERS = frozenset({"api", "token", "authorizer"})
STREAM_ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/2025-01-01T00:00:00.000"
TARGET_RATIO = {"stream": 1.5, "api": 2.0}

_IMPORTTIME = re.compile(r"^import time:\s+(\d+)\s+\|\s+(\d+)\s+\|(\s+)(\S+)")

# Runs in the fresh interpreter under `-X importtime`: load the handler file as Lambda does (module
# `app`), then invoke it once. Markers on fd 2 (unbuffered, as importtime's own lines are) tell the
# handler's imports from the probe's and from what the first invocation imports lazily.
_PROBE = r"""
import importlib.util, json, os, sys, time, uuid
os.write(2, b"PROBE-LOAD-START\n")
t0 = time.perf_counter()
c0 = time.process_time()
if sys.argv[1] == "boto3":
    import boto3
else:
    spec = importlib.util.spec_from_file_location("app", sys.argv[1])
    module = importlib.util.module_from_spec(spec)
    sys.modules["app"] = module
    spec.loader.exec_module(module)
t1 = time.perf_counter()
c1 = time.process_time()
os.write(2, b"PROBE-LOAD-END\n")
out = {"load_s": t1 - t0, "load_cpu_s": c1 - c0}
if sys.argv[2] != "null":
    class Context:
        function_name = "cold-start"
        memory_limit_in_mb = 512
        invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:cold-start"
        aws_request_id = str(uuid.uuid4())
        function_version = "$LATEST"
        log_group_name = log_stream_name = "local"
        def get_remaining_time_in_millis(self):
            return 10000
    event = json.loads(sys.argv[2])
    t2 = time.perf_counter()
    try:
        result = module.lambda_handler(event, Context())
        out["outcome"] = str(result.get("statusCode", "ok")) if isinstance(result, dict) else "ok"
    except Exception as exc:
        out["outcome"] = type(exc).__name__
    out["first_invoke_s"] = time.perf_counter() - t2
print("PROBE " + json.dumps(out))
"""


@dataclass(frozen=True)
class ColdStartConfig:
    repetitions: int = 5
    handlers: tuple[str, ...] = ()  # empty: every functions/*/app.py


def _rest_event(
    method: str, path: str, body: str | None = None, headers: dict[str, str] | None = None
) -> dict:
    headers = headers or {}
    return {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": path,
            "httpMethod": method,
            "path": f"/v1{path}",
            "stage": "v1",
            "requestId": "cold-start",
            "accountId": "123456789012",
            "apiId": "local",
            "identity": {"sourceIp": "127.0.0.1"},
        },
        "body": body,
        "isBase64Encoded": False,
    }


def handler_events() -> dict[str, dict[str, Any] | None]:
    """A representative first event per handler (None: import only)."""
    return {
        "trigger_resolver": {
            "Records": [
                {
                    "eventID": "1",
                    "eventName": "INSERT",
                    "eventVersion": "1.1",
                    "eventSource": "aws:dynamodb",
                    "awsRegion": "us-east-1",
                    "dynamodb": {
                        "ApproximateCreationDateTime": time.time(),
                        "Keys": {"object_id": {"S": "cold-1"}, "object_type_id": {"S": TAG_TYPE}},
                        "NewImage": {
                            "object_id": {"S": "cold-1"},
                            "object_type_id": {"S": TAG_TYPE},
                            "assigned_at": {"S": "2025-01-01T00:00:00.000Z"},
                        },
                        "SequenceNumber": "100",
                        "SizeBytes": 120,
                        "StreamViewType": "NEW_AND_OLD_IMAGES",
                    },
                    "eventSourceARN": STREAM_ARN,
                }
            ]
        },
        "api": _rest_event("GET", "/health"),
        "token": _rest_event(
            "POST",
            "/token",
            body="grant_type=client_credentials&client_id=cold-start&client_secret=not-a-secret",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        ),
        "authorizer": {
            "type": "TOKEN",
            "authorizationToken": "Bearer not-a-token",
            "methodArn": "arn:aws:execute-api:us-east-1:123456789012:local/v1/GET/jobs",
        },
        "reconciler": {"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}},
        "seeder": None,
    }


def _top_level_imports(stderr: str) -> dict[str, int]:
    """{module: cumulative us} for the imports at the top level of an `-X importtime` trace."""
    out: dict[str, int] = {}
    for line in stderr.splitlines():
        m = _IMPORTTIME.match(line)
        if m and len(m.group(3)) == 1:
            out[m.group(4)] = int(m.group(2))
    return out


def _section_us(stderr: str, begin: str, end: str | None) -> int:
    """Sum of the top-level imports' cumulative times between two markers of the probe."""
    lines = stderr.splitlines()
    start = lines.index(begin) + 1 if begin in lines else len(lines)
    stop = lines.index(end) if end and end in lines else len(lines)
    return sum(_top_level_imports("\n".join(lines[start:stop])).values())


def _by_package(stderr: str, begin: str, end: str) -> dict[str, int]:
    """Self import time (us) per top-level package between two markers: where the time goes."""
    lines = stderr.splitlines()
    if begin not in lines or end not in lines:
        return {}
    out: dict[str, int] = {}
    for line in lines[lines.index(begin) + 1 : lines.index(end)]:
        m = _IMPORTTIME.match(line)
        if m:
            package = m.group(4).split(".")[0]
            out[package] = out.get(package, 0) + int(m.group(1))
    return out


def _own_environment(handler: str) -> dict[str, str]:
    """The variables template.yaml sets for the function whose code is functions/<handler> alone
    (JobEventsFunction's bus, ApiFunction's idempotency table, ...), resolved to local names: each
    handler checks at import that its settings are there, as on Lambda."""
    from jobtriggers.local.template import (
        event_bus_names_for,
        function_environment,
        functions,
        load_template,
        table_names_for,
    )

    template = load_template()
    names = table_names_for(template, "coldstart") | event_bus_names_for(template, "coldstart")
    for spec in functions(template).values():
        if spec.code_uri.rstrip("/").endswith(f"functions/{handler}"):
            declared, _ = function_environment(template, spec.logical_id, {}, names)
            return {k: v for k, v in declared.items() if not k.startswith("POWERTOOLS_")}
    return {}


def _probe(
    target: str, event: dict[str, Any] | None, env: dict[str, str], trace_imports: bool = True
) -> dict[str, Any]:
    """One fresh interpreter: import time (us), load and first-invocation wall times (s), load CPU
    time (s). Without `trace_imports`, no `-X importtime` (whose per-import tracing costs CPU in
    proportion to the number of modules) and so no import times: for the CPU ratio."""
    trace = ["-X", "importtime"] if trace_imports else []
    proc = subprocess.run(
        [sys.executable, *trace, "-c", _PROBE, target, json.dumps(event)],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("PROBE ")), None)
    if line is None:
        raise RuntimeError(f"{target} did not load: {proc.stderr[-800:]}")
    out: dict[str, Any] = json.loads(line[6:])
    out["import_us"] = _section_us(proc.stderr, "PROBE-LOAD-START", "PROBE-LOAD-END")
    out["invoke_import_us"] = _section_us(proc.stderr, "PROBE-LOAD-END", None)
    out["by_package_us"] = _by_package(proc.stderr, "PROBE-LOAD-START", "PROBE-LOAD-END")
    return out


def layer_size() -> dict[str, Any]:
    layer = ROOT / ".aws-sam" / "build" / "JobTriggersLayer"
    if not layer.is_dir():
        return {"measured": False, "reason": "no .aws-sam/build/JobTriggersLayer: run `make build` first"}
    files = [p for p in layer.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    packages = {}
    site = layer / "python"
    if site.is_dir():
        for entry in site.iterdir():
            if entry.is_dir() and not entry.name.endswith((".dist-info", "__pycache__")):
                packages[entry.name] = sum(p.stat().st_size for p in entry.rglob("*") if p.is_file())
    biggest = dict(sorted(packages.items(), key=lambda kv: -kv[1])[:6])
    return {"measured": True, "bytes": size, "files": len(files), "largest_packages_bytes": biggest}


def handler_kind(name: str) -> str:
    if name in STREAM_HANDLERS:
        return "stream"
    if name in API_HANDLERS:
        return "api"
    return "other"


def run(config: ColdStartConfig) -> dict[str, Any]:
    from bench.cost import Store
    from jobtriggers.local.template import global_environment, load_template

    store = Store()  # tables + registry for the first invocations
    try:
        env = dict(os.environ)
        # The environment template.yaml gives every function (Globals), as Lambda starts them.
        env.update(global_environment(load_template()))
        env.update({"POWERTOOLS_TRACE_DISABLED": "true", "POWERTOOLS_METRICS_DISABLED": "true"})
        env.setdefault("SIGNING_KEY", "cold-start-signing-key-" + "x" * 40)
        env.pop("SIGNING_KEY_SECRET_ARN", None)
        # Bytecode cached for every package alike (boto3's is, in any venv): whether the caller's
        # shell sets PYTHONDONTWRITEBYTECODE must not decide whether jobtriggers is compiled per run.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        events = handler_events()
        names = sorted(p.parent.name for p in FUNCTIONS_DIR.glob("*/app.py"))
        if config.handlers:
            names = [n for n in names if n in config.handlers]
        env_of = {name: {**_own_environment(name), **env} for name in names}  # what is set wins
        boto3_us: list[float] = []
        per: dict[str, dict[str, list[float]]] = {
            n: {
                "import_us": [],
                "load_cpu_s": [],
                "boto3_cpu_s": [],
                "first_invoke_s": [],
                "invoke_import_us": [],
            }
            for n in names
        }
        outcomes: dict[str, str] = {}
        packages: dict[str, dict[str, int]] = {}
        with step(f"cold start: boto3 and {len(names)} handlers x {config.repetitions} fresh processes"):
            # One unmeasured round first: it writes the bytecode caches and warms the file cache.
            _probe("boto3", None, env)
            for name in names:
                _probe(str(FUNCTIONS_DIR / name / "app.py"), events.get(name), env_of[name])
            for _ in range(config.repetitions):
                boto3_us.append(_probe("boto3", None, env)["import_us"])
                for name in names:
                    handler = str(FUNCTIONS_DIR / name / "app.py")
                    # Each handler's CPU time is paired with a bare boto3 import measured just
                    # before it: what the neighbours take from this machine changes over seconds
                    # (boto3 alone ranged 138-200 ms CPU within one run), so a ratio of two
                    # adjacent processes cancels most of it, and one boto3 per round did not.
                    paired = _probe("boto3", None, env, trace_imports=False)["load_cpu_s"]
                    per[name]["boto3_cpu_s"].append(paired)
                    untraced = _probe(handler, events.get(name), env_of[name], trace_imports=False)
                    per[name]["load_cpu_s"].append(untraced["load_cpu_s"])
                    probe = _probe(handler, events.get(name), env_of[name])
                    per[name]["import_us"].append(probe["import_us"])
                    packages[name] = probe["by_package_us"]
                    if "first_invoke_s" in probe:
                        per[name]["first_invoke_s"].append(probe["first_invoke_s"])
                        per[name]["invoke_import_us"].append(probe["invoke_import_us"])
                        outcomes[name] = probe.get("outcome", "")
        boto3_median = summarize(boto3_us)["median"]
        handlers = {}
        for name in names:
            imp = summarize(per[name]["import_us"])
            wall_ratios = [v / b for v, b in zip(per[name]["import_us"], boto3_us, strict=True)]
            cpu_ratios = [
                v / b for v, b in zip(per[name]["load_cpu_s"], per[name]["boto3_cpu_s"], strict=True)
            ]
            kind = handler_kind(name)
            ratio = summarize(cpu_ratios)
            target = TARGET_RATIO.get(kind)
            handlers[name] = {
                "kind": kind,
                "import_ms": {
                    k: (v / 1000 if k != "runs" else [x / 1000 for x in v]) for k, v in imp.items()
                },
                "load_cpu_ms": summarize([v * 1000 for v in per[name]["load_cpu_s"]]),
                "ratio_to_boto3": ratio,
                "wall_ratio_to_boto3": summarize(wall_ratios),
                "first_invoke_ms": (
                    {
                        k: (v * 1000 if k != "runs" else [x * 1000 for x in v])
                        for k, v in summarize(per[name]["first_invoke_s"]).items()
                    }
                    if per[name]["first_invoke_s"]
                    else None
                ),
                "first_invoke_outcome": outcomes.get(name),
                "first_invoke_lazy_import_ms": (
                    summarize(per[name]["invoke_import_us"])["median"] / 1000
                    if per[name]["invoke_import_us"]
                    else None
                ),
                "heaviest_packages_ms": {
                    k: round(v / 1000, 1)
                    for k, v in sorted(packages.get(name, {}).items(), key=lambda kv: -kv[1])[:5]
                },
                "target_ratio": target,
                "met": None if target is None else ratio["median"] <= target,
            }
            progress(
                f"  {name}: import {imp['median'] / 1000:.0f} ms; CPU {ratio['median']:.2f}x boto3 "
                f"(wall {summarize(wall_ratios)['median']:.2f}x)"
            )
        return {
            "measured": True,
            "config": {"repetitions": config.repetitions, "handlers": names},
            "python": sys.version.split()[0],
            "boto3_import_ms": summarize([v / 1000 for v in boto3_us]),
            "boto3_import_ms_median": boto3_median / 1000,
            "boto3_load_cpu_ms": summarize([v * 1000 for n in names for v in per[n]["boto3_cpu_s"]]),
            "handlers": handlers,
            "layer": layer_size(),
            "seed_dir": str(SEED_DIR.relative_to(ROOT)),
        }
    finally:
        store.stop()
