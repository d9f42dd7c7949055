"""The whole service on this machine, wired from template.yaml, run the way Lambda runs it.

- DynamoDB: moto's server on loopback (jobtriggers.local.store), with the template's tables and
  the registry loaded from seed/ as a deploy loads it. The same server is EventBridge, with the
  template's event buses (jobtriggers.local.events): `events()` and `GET /local/events` list what
  was put on them.
- Functions: each in worker processes of its own (jobtriggers.local.invoke), with its environment
  from template.yaml (Globals + its own Environment, resolved at the parameters' defaults), one
  invocation at a time per process, more processes for concurrent invocations. They reach
  DynamoDB and EventBridge through a loopback proxy (jobtriggers.local.proxy), where tests inject
  faults and the runtime counts requests.
- Event sources: the HTTP gateway in front of the API, token and authorizer functions; the stream
  poller in front of the stream consumers (TriggerResolver, JobEvents); the scheduler for
  `Type: Schedule` events.

`jobtriggers local` runs it until Ctrl-C; the e2e tests start it in-process on free ports.
"""

from __future__ import annotations

import gc
import logging
import os
import secrets
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, cast

import boto3
from botocore.exceptions import ClientError

from jobtriggers.dal.dynamo import reset_clients
from jobtriggers.local.events import EventBuses
from jobtriggers.local.gateway import Gateway, api_settings
from jobtriggers.local.invoke import DEFAULT_MAX_WORKERS, FunctionLogs, FunctionPool
from jobtriggers.local.proxy import DynamoDBProxy
from jobtriggers.local.schedules import Scheduler
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
    LOCAL_ACCOUNT,
    LOCAL_TABLE_PREFIX,
    ScheduleEvent,
    api_routes,
    authorizer_function,
    event_bus_names_for,
    find_template,
    function_environment,
    functions,
    global_environment,
    load_template,
    parameter_values,
    schedule_events,
    stream_sources,
    table_environment,
    table_names_for,
)
from jobtriggers.settings import reset_settings_cache

# Not under "jobtriggers": Powertools' Logger owns that name and would format these as a function's.
log = logging.getLogger("local_runtime")

__all__ = ["LocalConfig", "LocalRuntime", "PortInUseError"]

# What a secret's ARN becomes locally: the runtime hands the value itself to the functions that
# read the secret (never on argv, never logged); on AWS it comes from Secrets Manager.
SECRET_VALUES = {"SIGNING_KEY_SECRET_ARN": "SIGNING_KEY"}


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
    # Worker processes per function at most (Lambda: reserved concurrency); each costs ~70 MB.
    max_workers: int = DEFAULT_MAX_WORKERS
    # As `sam deploy --parameter-overrides`: e.g. {"EnableScheduledReconcile": "true"}.
    parameter_overrides: dict[str, str] = field(default_factory=dict)
    # Variables every function gets on top of the template's (as `sam local --env-vars`).
    environment: dict[str, str] = field(default_factory=dict)
    # Echo the functions' output to this process's stdout (it is collected in `logs` either way).
    echo_function_logs: bool = True
    # An invocation is cut off at this multiple of its Timeout (Lambda: 1); past 1x the log says
    # Lambda would have failed it. This machine shares 2 cores among every function.
    timeout_factor: float = 3.0


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


class LocalRuntime:
    """Start with `start()` (or `with LocalRuntime(...) as rt:`), stop with `stop()`."""

    def __init__(self, config: LocalConfig | None = None) -> None:
        self.config = config or LocalConfig()
        self.template_path = self.config.template_path or find_template()
        self.template = load_template(self.template_path)
        self.root = self.template_path.parent
        self.seed_dir = self.config.seed_dir or self.root / "seed"
        self.parameters = parameter_values(self.template, self.config.parameter_overrides)
        self.region = os.environ.get("AWS_DEFAULT_REGION", LOCAL_REGION)
        self.dynamo: EmbeddedDynamo | None = None
        self.dynamodb_endpoint = ""
        self.tables: dict[str, str] = {}
        self.seed = SeedSummary()
        self.logs = FunctionLogs(echo=self.config.echo_function_logs)
        self.proxy: DynamoDBProxy | None = None
        self.pool: FunctionPool | None = None
        self.poller: StreamPoller | None = None
        self.gateway: Gateway | None = None
        self.scheduler: Scheduler | None = None
        self.buses: EventBuses | None = None
        self.unavailable: dict[str, str] = {}
        self._signing_key = os.environ.get("SIGNING_KEY") or secrets.token_urlsafe(48)
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
        out["dynamodb"] = self.proxy.stats() if self.proxy else {}
        if self.pool:
            out["workers"] = {name: self.pool.workers(name) for name in self.pool.functions}
        out["schedules"] = self.scheduler.stats() if self.scheduler else {}
        return out

    @property
    def signing_key(self) -> str:
        """The key tokens are signed with (tests forge tokens with it); never printed."""
        return self._signing_key

    @property
    def schedules(self) -> list[ScheduleEvent]:
        return self.scheduler.schedules if self.scheduler else []

    def wait_for_stream(self, timeout: float = 10.0) -> bool:
        """Wait until every record written so far has been through the stream consumers (or a DLQ)."""
        return self.poller.wait_until_idle(timeout) if self.poller else True

    def events(self, job_id: str | None = None) -> list[dict[str, Any]]:
        """What was put on the template's event buses, in order, as a rule's target receives it
        (EventBridge's envelope, `detail` holding the job event); one job's only, when asked."""
        return self.buses.events(job_id=job_id) if self.buses else []

    def _local_events(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        """GET /local/events[?job_id=...]"""
        unknown = sorted(set(query) - {"job_id"})
        if unknown:
            raise ValueError(f"/local/events takes only job_id, not {', '.join(unknown)}")
        job_ids = query.get("job_id", [])
        if len(job_ids) > 1:
            raise ValueError("/local/events takes one job_id")
        return self.events(job_id=job_ids[0] if job_ids else None)

    def invoke(self, function: str, event: dict[str, Any]) -> Any:
        """Invoke a function in its worker, as `aws lambda invoke` would."""
        if not self.pool:
            raise RuntimeError("the local runtime is not running")
        return self.pool.invoke(function, event)

    def run_schedule(self, function: str, name: str | None = None) -> Any:
        """Fire the function's `Type: Schedule` event now (enabled or not); what it returned."""
        if not self.scheduler:
            raise RuntimeError("the local runtime is not running")
        return self.scheduler.run(function, name)

    def create_site(
        self, site_id: str, capability_ids: list[str] | None = None, *, can_create_jobs: bool = False
    ) -> dict[str, str]:
        """A site and its credentials, as `jobtriggers sites create` makes them."""
        from jobtriggers.dal.registry import RegistryRepository
        from jobtriggers.dal.sites import SiteRepository
        from jobtriggers.logic.sites import create_site

        creds = create_site(
            SiteRepository(self.tables["SITES_TABLE"]),
            RegistryRepository(self.tables["REGISTRY_TABLE"]),
            site_id,
            list(capability_ids or []),
            can_create_jobs=can_create_jobs,
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
            self._load_seed()
            self._start_functions()
            self._start_gateway()
            self._start_scheduler()
        except BaseException:
            self.stop()
            raise
        # What is loaded by now (modules, botocore's service models, the seed) lives as long as the
        # process: out of the garbage collector's sight, a full collection walks only what requests
        # make, and pauses the store, the poller and the gateway for that long (docs/benchmarks.md).
        gc.freeze()
        return self

    def stop(self) -> None:
        """Stop accepting requests and events, let the poller finish its batch, end the workers,
        then stop the store."""
        self._stopped.set()
        if self.gateway:
            self.gateway.stop()
        if self.scheduler:
            self.scheduler.stop()
        if self.poller:
            self.poller.stop()
        if self.pool:
            self.pool.stop()
        if self.proxy:
            self.proxy.stop()
        if self.buses:
            self.buses.stop()
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

    # ------------------------------------------------------------------ the functions' environment

    def environment_for(self, function: str) -> dict[str, str]:
        """Everything a function's process finds in its environment, as Lambda would set it."""
        assert self.proxy is not None
        prefix = self.config.table_prefix
        names = table_names_for(self.template, prefix) | event_bus_names_for(self.template, prefix)
        declared, left_out = function_environment(self.template, function, self.parameters, names)
        # (The function's own identity, AWS_LAMBDA_FUNCTION_NAME and the like, the pool adds.)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "TZ": "UTC",
            # Powertools' warning when a read-only request publishes no metric: noise here.
            "PYTHONWARNINGS": "ignore:No application metrics to publish",
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            # Credentials of the function's role: moto takes any. Nothing from this machine's own
            # AWS configuration reaches a function.
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
            # The functions' way to DynamoDB and EventBridge: through the proxy, so that requests
            # to both are counted (GET /local/stats) and faults can be injected in either.
            # (botocore names a service's endpoint variable after its service id: EVENTBRIDGE.)
            "AWS_ENDPOINT_URL_DYNAMODB": self.proxy.endpoint,
            "AWS_ENDPOINT_URL_DYNAMODB_STREAMS": self.proxy.endpoint,
            "AWS_ENDPOINT_URL_EVENTBRIDGE": self.proxy.endpoint,
            **declared,
            "POWERTOOLS_TRACE_DISABLED": "true",  # no X-Ray daemon here
            # EMF lines on every invocation drown the log; POWERTOOLS_METRICS_DISABLED=false shows them.
            "POWERTOOLS_METRICS_DISABLED": "true",
        }
        if os.environ.get("PYTHONPATH"):
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]  # the same package this process runs
        for var in left_out:
            if var in SECRET_VALUES:
                env[SECRET_VALUES[var]] = self._signing_key
        # POWERTOOLS_* of this process win over the template's (a quieter or louder run).
        env.update({k: v for k, v in os.environ.items() if k.startswith("POWERTOOLS_")})
        if self.config.log_level:
            env["POWERTOOLS_LOG_LEVEL"] = self.config.log_level.upper()
        env.update(self.config.environment)
        return env

    # ------------------------------------------------------------------ steps

    def _start_store(self) -> None:
        cfg = self.config
        if cfg.dynamodb_endpoint:
            self.dynamodb_endpoint = cfg.dynamodb_endpoint
        else:
            self.dynamo = start_embedded_dynamo("127.0.0.1", cfg.dynamodb_port)
            self.dynamodb_endpoint = self.dynamo.endpoint
        # This process (the seed load, the poller, tests' own checks) talks to the store directly,
        # and logs as the service does (POWERTOOLS_SERVICE_NAME and the like, unless set already).
        point_boto3_at(self.dynamodb_endpoint)
        for var, value in global_environment(self.template).items():
            os.environ.setdefault(var, value)
        try:
            self.tables = create_tables(cfg.table_prefix, self.template)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ResourceInUseException":
                raise
            # The tables exist on a shared server: use them as they are.
            self.tables = table_environment(self.template, table_names_for(self.template, cfg.table_prefix))
            os.environ.update(self.tables)
            reset_settings_cache()
            log.info("using the existing %s-* tables", cfg.table_prefix)
        self.proxy = DynamoDBProxy(self.dynamodb_endpoint)
        self.proxy.start()
        self.buses = EventBuses(
            self.dynamodb_endpoint, event_bus_names_for(self.template, cfg.table_prefix), region=self.region
        ).create()
        self.buses.start_draining()

    def _load_seed(self) -> None:
        from jobtriggers import wiring
        from jobtriggers.logic.seed import load_seed_dir, sync_registry

        registry = load_seed_dir(self.seed_dir)
        report = sync_registry(
            registry,
            wiring.registry(),
            wiring.backfill_engine(),
            wiring.assignments(),
        )
        self.seed = SeedSummary(
            counts={kind: len(entries) for kind, entries in registry.entries().items()},
            backfilled=report.backfilled,
        )

    def _event_functions(self) -> list[str]:
        """The functions some event source of the template invokes."""
        wanted = {r.function for r in api_routes(self.template)}
        wanted |= {s.function for s in stream_sources(self.template)}
        authorizer = authorizer_function(self.template)
        if authorizer:
            wanted.add(authorizer)
        wanted |= {s.function for s in schedule_events(self.template, self.parameters) if s.enabled}
        return sorted(wanted)

    def _start_functions(self) -> None:
        self.pool = FunctionPool(
            functions(self.template),
            self.root,
            self.environment_for,
            name_prefix=self.config.table_prefix,
            max_workers=self.config.max_workers,
            logs=self.logs,
            region=self.region,
            timeout_factor=self.config.timeout_factor,
        )
        # One warm worker per function now, all at once: a broken handler shows at start, and the
        # first requests do not all pay a cold start. A missing one is tried again when first
        # invoked (others may still be writing it).
        self.unavailable = self.pool.warm(self._event_functions())
        for name, why in sorted(self.unavailable.items()):
            log.warning("%s is not available: %s", name, why)

        names = table_names_for(self.template, self.config.table_prefix)
        mappings = [
            StreamMapping.from_source(
                source,
                stream_arn(names[source.table]),
                region=self.region,
                function_arn=self.pool.context(source.function).invoked_function_arn,
            )
            for source in stream_sources(self.template)
        ]
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
            settings=api_settings(self.template, self.parameters),
            local_routes={"/local/dlq": lambda: poller.dlq, "/local/stats": self.stats},
            local_query_routes={"/local/events": self._local_events},
            region=self.region,
        )
        self.gateway.start(self.config.host, self.config.port)

    def _start_scheduler(self) -> None:
        assert self.pool is not None
        self.scheduler = Scheduler(
            schedule_events(self.template, self.parameters),
            self.pool.invoke,
            region=self.region,
            account=LOCAL_ACCOUNT,
            rule_prefix=self.config.table_prefix,
        )
        self.scheduler.start()

    # ------------------------------------------------------------------ for people

    def banner(self, also: Sequence[str] = ()) -> str:
        """What `jobtriggers local` prints once started; `also`: lines about what was started beside
        it (the job board), shown with the runtime's own."""
        counts = self.seed.counts
        backfilled = sum(self.seed.backfilled.values())
        lines = [
            "jobtriggers local runtime",
            f"  API       {self.base_url}   (/docs, /local/dlq, /local/stats, /local/events)",
            f"  DynamoDB  {self.dynamodb_endpoint}   (tables {self.config.table_prefix}-*; EventBridge too)",
            f"  Registry  {counts.get('object_type', 0)} object types, "
            f"{counts.get('workflow', 0)} workflows, {counts.get('trigger', 0)} triggers from {self.seed_dir}"
            + (f"; {backfilled} jobs backfilled" if backfilled else ""),
            f"  Functions each in its own processes, up to {self.config.max_workers} per function",
        ]
        for s in self.schedules:
            state = (
                "on" if s.enabled and s.interval_seconds else "on demand only" if s.enabled else "disabled"
            )
            lines.append(f"  Schedule  {s.function}.{s.name}: {s.expression} ({state})")
        for name, why in sorted(self.unavailable.items()):
            lines.append(f"  (not available: {name}: {why})")
        lines += [
            *also,
            "Next:",
            f"  jobtriggers sites create my-site --endpoint-url {self.dynamodb_endpoint}",
            f"  curl -s -u CLIENT_ID:CLIENT_SECRET -d grant_type=client_credentials {self.base_url}/token",
            "Ctrl-C stops.",
        ]
        return "\n".join(lines)
