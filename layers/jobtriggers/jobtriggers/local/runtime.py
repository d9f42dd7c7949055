"""The whole service in one process, wired from template.yaml: moto as DynamoDB (and its streams),
the registry loaded from seed/ as a deploy loads it, the stream poller in front of TriggerResolver,
and the HTTP gateway in front of the API, token and authorizer functions.

`jobtriggers local` runs it until Ctrl-C; the e2e tests start it in-process on free ports.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, cast

import boto3
from botocore.exceptions import ClientError

from jobtriggers.dal.tables import reset_clients
from jobtriggers.local.gateway import Gateway, api_settings
from jobtriggers.local.invoke import FunctionNotAvailable, FunctionPool
from jobtriggers.local.store import (
    LOCAL_REGION,
    EmbeddedDynamo,
    PortInUseError,
    create_tables,
    ensure_port_free,
    point_boto3_at,
    start_embedded_dynamo,
    stream_arn,
)
from jobtriggers.local.stream_poller import StreamMapping, StreamPoller, StreamsClient
from jobtriggers.local.template import (
    LOCAL_TABLE_PREFIX,
    api_routes,
    authorizer_function,
    find_template,
    functions,
    global_environment,
    load_template,
    stream_sources,
    table_environment,
    table_names_for,
)
from jobtriggers.settings import reset_settings_cache

# Not under "jobtriggers": Powertools' Logger owns that name and would format these as a function's.
log = logging.getLogger("local_runtime")

__all__ = ["LocalConfig", "LocalRuntime", "PortInUseError"]


@dataclass
class LocalConfig:
    host: str = "127.0.0.1"
    port: int = 3000  # 0: any free port
    dynamodb_port: int = 8000  # 0: any free port
    seed_dir: Path | None = None  # None: seed/ beside template.yaml
    poll_interval: float = 0.25
    table_prefix: str = LOCAL_TABLE_PREFIX
    # A DynamoDB endpoint that is already running (tests share one moto server); None: start moto.
    dynamodb_endpoint: str | None = None
    template_path: Path | None = None
    log_level: str | None = None


@dataclass
class SeedSummary:
    counts: dict[str, int] = field(default_factory=dict)
    backfilled: dict[str, int] = field(default_factory=dict)


# moto keeps every shard iterator it ever issued (one per GetRecords, four a second); DynamoDB's
# expire after 15 minutes. The runtime drops all but the newest now and then.
ITERATORS_KEPT = 1000
ITERATOR_TRIM_SECONDS = 60.0


def trim_stream_iterators(keep: int = ITERATORS_KEPT) -> int:
    """Forget the oldest shard iterators of the in-process moto server; how many were dropped."""
    from moto.dynamodbstreams.models import dynamodbstreams_backends

    dropped = 0
    for regions in dynamodbstreams_backends.values():
        for backend in regions.values():
            iterators = backend.shard_iterators
            for key in list(iterators)[: max(0, len(iterators) - keep)]:
                if iterators.pop(key, None) is not None:
                    dropped += 1
    return dropped


def _timeouts(template: dict[str, Any]) -> dict[str, float]:
    default = float(template.get("Globals", {}).get("Function", {}).get("Timeout", 3))
    out = {}
    for logical, res in template.get("Resources", {}).items():
        if res.get("Type") == "AWS::Serverless::Function":
            out[logical] = float(res.get("Properties", {}).get("Timeout", default))
    return out


def _function_environment(template: dict[str, Any], names: list[str]) -> dict[str, str]:
    """The plain (or parameter-default) variables of the functions that run locally.

    References to resources (the signing key's secret) have no local meaning and are left out.
    """
    params = template.get("Parameters", {})
    specs = functions(template)
    out: dict[str, str] = {}
    for name in names:
        spec = specs.get(name)
        for var, value in (spec.environment if spec else {}).items():
            if isinstance(value, dict):
                ref = value.get("Ref")
                if ref not in params or "Default" not in params[ref]:
                    continue
                value = params[ref]["Default"]
            if var in out and out[var] != str(value):
                log.warning("functions disagree on %s; using %s", var, out[var])
                continue
            out[var] = str(value)
    return out


class LocalRuntime:
    """Start with `start()` (or `with LocalRuntime(...) as rt:`), stop with `stop()`."""

    def __init__(self, config: LocalConfig | None = None) -> None:
        self.config = config or LocalConfig()
        self.template_path = self.config.template_path or find_template()
        self.template = load_template(self.template_path)
        self.root = self.template_path.parent
        self.seed_dir = self.config.seed_dir or self.root / "seed"
        self.dynamo: EmbeddedDynamo | None = None
        self.dynamodb_endpoint = ""
        self.tables: dict[str, str] = {}
        self.seed = SeedSummary()
        self.pool: FunctionPool | None = None
        self.poller: StreamPoller | None = None
        self.gateway: Gateway | None = None
        self.unavailable: dict[str, str] = {}
        self._stopped = threading.Event()
        self._environment_before: dict[str, str] | None = None

    # ------------------------------------------------------------------ what tests and people use

    @property
    def base_url(self) -> str:
        if not self.gateway:
            raise RuntimeError("the local runtime is not running")
        return self.gateway.base_url

    @property
    def dlq(self) -> list[dict[str, Any]]:
        return self.poller.dlq if self.poller else []

    def stats(self) -> dict[str, Any]:
        out = self.poller.stats() if self.poller else {}
        out["gateway_requests"] = self.gateway.requests_served if self.gateway else 0
        return out

    @property
    def signing_key(self) -> str:
        """The key tokens are signed with (tests forge tokens with it); never printed."""
        return os.environ["SIGNING_KEY"]

    def wait_for_stream(self, timeout: float = 10.0) -> bool:
        """Wait until every record written so far has been through TriggerResolver (or the DLQ)."""
        return self.poller.wait_until_idle(timeout) if self.poller else True

    def create_site(self, site_id: str, capability_ids: list[str] | None = None) -> dict[str, str]:
        """A site and its credentials, as `jobtriggers sites create` makes them."""
        from jobtriggers.dal.registry import RegistryRepository
        from jobtriggers.dal.sites import SiteRepository
        from jobtriggers.logic.sites import create_site

        creds = create_site(
            SiteRepository(self.tables["SITES_TABLE"]),
            RegistryRepository(self.tables["REGISTRY_TABLE"]),
            site_id,
            list(capability_ids or []),
        )
        return creds.model_dump()

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> LocalRuntime:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, restore_environment: bool = False) -> LocalRuntime:
        """Start everything. `restore_environment`: `stop()` puts os.environ back as it was (tests)."""
        cfg = self.config
        if restore_environment:
            self._environment_before = dict(os.environ)
        # Both ports are checked before anything starts, so a taken port fails fast and clean.
        ensure_port_free(cfg.host, cfg.port)
        if not cfg.dynamodb_endpoint:
            ensure_port_free("127.0.0.1", cfg.dynamodb_port)
        try:
            self._start_store()
            self._configure_environment()
            self._load_seed()
            self._start_functions()
            self._start_gateway()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop accepting requests, let the poller finish its batch, then stop the store."""
        self._stopped.set()
        if self.gateway:
            self.gateway.stop()
        if self.poller:
            self.poller.stop()
        if self.dynamo:
            self.dynamo.stop()
            self.dynamo = None
        if self._environment_before is not None:
            os.environ.clear()
            os.environ.update(self._environment_before)
            self._environment_before = None
            reset_settings_cache()
            reset_clients()

    def serve_forever(self) -> None:
        """Block until Ctrl-C (SIGINT) or SIGTERM, then stop everything."""
        previous: dict[signal.Signals, Any] = {}

        def on_signal(signum: int, frame: FrameType | None) -> None:
            log.info("stopping (%s)", signal.Signals(signum).name)
            self._stopped.set()

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, on_signal)
        try:
            last_trim = time.monotonic()
            while not self._stopped.wait(0.5):
                if self.dynamo and time.monotonic() - last_trim > ITERATOR_TRIM_SECONDS:
                    trim_stream_iterators()
                    last_trim = time.monotonic()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.stop()

    # ------------------------------------------------------------------ steps

    def _start_store(self) -> None:
        cfg = self.config
        if cfg.dynamodb_endpoint:
            self.dynamodb_endpoint = cfg.dynamodb_endpoint
        else:
            self.dynamo = start_embedded_dynamo("127.0.0.1", cfg.dynamodb_port)
            self.dynamodb_endpoint = self.dynamo.endpoint
        point_boto3_at(self.dynamodb_endpoint)
        try:
            self.tables = create_tables(cfg.table_prefix, self.template)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ResourceInUseException":
                raise
            # The tables exist on a shared server: use them as they are.
            self.tables = table_environment(self.template, table_names_for(self.template, cfg.table_prefix))
            os.environ.update(self.tables)
            log.info("using the existing %s-* tables", cfg.table_prefix)

    def _configure_environment(self) -> None:
        local_functions = [r.function for r in api_routes(self.template)]
        local_functions += [s.function for s in stream_sources(self.template)]
        authorizer = authorizer_function(self.template)
        if authorizer:
            local_functions.append(authorizer)
        for var, value in {
            **global_environment(self.template),
            **_function_environment(self.template, local_functions),
        }.items():
            os.environ.setdefault(var, value)
        os.environ["POWERTOOLS_TRACE_DISABLED"] = "true"  # no X-Ray daemon here
        # EMF lines on every invocation drown the log; POWERTOOLS_METRICS_DISABLED=false shows them.
        os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
        warnings.filterwarnings("ignore", message="No application metrics to publish")
        if self.config.log_level:
            os.environ["POWERTOOLS_LOG_LEVEL"] = self.config.log_level.upper()
            from jobtriggers.observability import logger

            logger.setLevel(self.config.log_level.upper())
        # Locally the token key is generated per run and handed over in the environment, never
        # printed; on AWS it comes from Secrets Manager.
        os.environ.pop("SIGNING_KEY_SECRET_ARN", None)
        os.environ.setdefault("SIGNING_KEY", secrets.token_urlsafe(48))
        reset_settings_cache()
        reset_clients()

    def _load_seed(self) -> None:
        from jobtriggers.dal.assignments import AssignmentRepository
        from jobtriggers.dal.jobs import JobRepository
        from jobtriggers.dal.registry import RegistryRepository
        from jobtriggers.logic.seed import load_seed_dir, sync_registry
        from jobtriggers.logic.triggering import TriggerResolver

        registry = load_seed_dir(self.seed_dir)
        report = sync_registry(
            registry,
            RegistryRepository(),
            TriggerResolver(RegistryRepository(), JobRepository()),
            AssignmentRepository(),
        )
        self.seed = SeedSummary(
            counts={kind: len(entries) for kind, entries in registry.entries().items()},
            backfilled=report.backfilled,
        )

    def _start_functions(self) -> None:
        self.pool = FunctionPool(
            functions(self.template), self.root, self.config.table_prefix, _timeouts(self.template)
        )
        # Import every handler once now, so a broken one shows at start; a missing one is loaded
        # when first called (others may still be writing it).
        wanted = {r.function for r in api_routes(self.template)}
        wanted |= {s.function for s in stream_sources(self.template)}
        authorizer = authorizer_function(self.template)
        if authorizer:
            wanted.add(authorizer)
        for name in sorted(wanted):
            try:
                with self.pool.container(name):
                    pass
            except FunctionNotAvailable as exc:
                self.unavailable[name] = str(exc)
                log.warning("%s is not available yet: %s", name, exc)
            except Exception as exc:  # a handler that fails to import must not stop the rest
                self.unavailable[name] = f"{type(exc).__name__}: {exc}"
                log.exception("%s failed to load", name)

        names = table_names_for(self.template, self.config.table_prefix)
        mappings = []
        for source in stream_sources(self.template):
            mappings.append(
                StreamMapping.from_source(
                    source,
                    stream_arn(names[source.table]),
                    region=os.environ.get("AWS_DEFAULT_REGION", LOCAL_REGION),
                    function_arn=self.pool.context(source.function).invoked_function_arn,
                )
            )
        self.poller = StreamPoller(
            mappings,
            {m.function: self.pool.handler_for(m.function) for m in mappings},
            cast(StreamsClient, boto3.client("dynamodbstreams")),
            poll_interval=self.config.poll_interval,
            context_factory=self.pool.context,
        )
        self.poller.start()

    def _start_gateway(self) -> None:
        assert self.pool is not None and self.poller is not None
        poller = self.poller
        self.gateway = Gateway(
            api_routes(self.template),
            self.pool.invoke,
            authorizer=authorizer_function(self.template),
            settings=api_settings(self.template),
            local_routes={"/local/dlq": lambda: poller.dlq, "/local/stats": self.stats},
            region=os.environ.get("AWS_DEFAULT_REGION", LOCAL_REGION),
        )
        self.gateway.start(self.config.host, self.config.port)

    # ------------------------------------------------------------------ for people

    def banner(self) -> str:
        counts = self.seed.counts
        backfilled = sum(self.seed.backfilled.values())
        lines = [
            "jobtriggers local runtime",
            f"  API       {self.base_url}   (/docs, /local/dlq, /local/stats)",
            f"  DynamoDB  {self.dynamodb_endpoint}   (tables {self.config.table_prefix}-*)",
            f"  Registry  {counts.get('object_type', 0)} object types, "
            f"{counts.get('workflow', 0)} workflows, {counts.get('trigger', 0)} triggers from {self.seed_dir}"
            + (f"; {backfilled} jobs backfilled" if backfilled else ""),
        ]
        for name, why in sorted(self.unavailable.items()):
            lines.append(f"  (not available: {name}: {why})")
        lines += [
            "Next:",
            f"  jobtriggers sites create my-site --endpoint-url {self.dynamodb_endpoint}",
            f"  curl -s -u CLIENT_ID:CLIENT_SECRET -d grant_type=client_credentials {self.base_url}/token",
            "Ctrl-C stops.",
        ]
        return "\n".join(lines)
