"""The embedded DynamoDB: moto's server on loopback (which serves EventBridge too), with the
template's tables, made to keep DynamoDB's rules where moto does not (atomic conditional writes
here, key and item sizes and ClientRequestToken in jobtriggers.local.store_rules).

boto3 reaches it over HTTP through AWS_ENDPOINT_URL_DYNAMODB and AWS_ENDPOINT_URL_DYNAMODB_STREAMS,
exactly as production code reaches DynamoDB; nothing is patched in-process.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config

from jobtriggers.dal.dynamo import reset_clients
from jobtriggers.local import store_rules
from jobtriggers.local.template import (
    create_table_requests,
    load_template,
    table_environment,
    table_names_for,
)
from jobtriggers.settings import reset_settings_cache

LOCAL_REGION = "us-east-1"


class PortInUseError(RuntimeError):
    pass


def ensure_port_free(host: str, port: int) -> None:
    if port == 0:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise PortInUseError(
                f"{host}:{port} is already in use; stop whatever holds it or pick another port"
            ) from exc


@dataclass
class EmbeddedDynamo:
    """A running moto server and the endpoint boto3 should use."""

    server: Any
    endpoint: str

    def stop(self) -> None:
        self.server.stop()


def _serialized_moto_server(host: str, port: int) -> Any:
    """moto's ThreadedMotoServer, with one request at a time inside the backend.

    moto checks a condition and then writes in separate steps, and a transaction snapshots and
    restores whole tables, all without a lock: two concurrent conditional writes can both pass,
    and a cancelled transaction can undo another request's write. DynamoDB applies each write
    atomically; a lock around every request gives moto that guarantee (claims depend on it).
    """
    import threading

    from moto.moto_server.threaded_moto_server import ThreadedMotoServer
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    class SerializedMotoServer(ThreadedMotoServer):
        def _server_entry(self) -> None:
            app = DomainDispatcherApplication(create_backend_app)
            lock = threading.Lock()

            def serialized(environ: Any, start_response: Any) -> Any:
                with lock:
                    # Flask builds the whole response inside the call; the body is a ready list.
                    return list(app(environ, start_response))

            self._server = make_server(
                self._ip_address, self._port, serialized, True, request_handler=MotoRequestHandler
            )
            self._server_ready_event.set()
            self._server.serve_forever()

    return SerializedMotoServer(ip_address=host, port=port, verbose=False)


def _keep_streams_across_cancelled_transactions() -> None:
    """Make a cancelled TransactWriteItems leave the tables' streams as DynamoDB does: untouched.

    moto rolls a cancelled transaction back by swapping in deep copies of its tables, taken before
    it ran. The copies carry copies of the stream shards, so every open shard iterator (the stream
    poller's) goes on reading the old shard, which never grows again, while the writes the
    transaction made before it failed stay in it as records of changes that never happened. One
    409 or 404 on a tag would silently stop the local trigger engine. Here the live shard object is
    kept, moved onto the restored table, and cut back to its length before the transaction.
    """
    from moto.dynamodb.models import DynamoDBBackend

    original = DynamoDBBackend.transact_write_items
    if getattr(original, "_keeps_streams", False):
        return

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        live = dict(self.tables)
        lengths = {n: len(t.stream_shard.items) for n, t in live.items() if t.stream_shard is not None}
        try:
            original(self, transact_items)
        except Exception:
            for name, length in lengths.items():
                restored, shard = self.tables.get(name), live[name].stream_shard
                if restored is not None and restored is not live[name]:
                    del shard.items[length:]
                    shard.table = restored
                    restored.stream_shard = shard
            raise

    transact_write_items._keeps_streams = True  # type: ignore[attr-defined]
    DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]


def _snapshot_only_what_a_transaction_touches() -> None:
    """Make moto's TransactWriteItems cost what it touches, not what its tables hold.

    moto snapshots every table a transaction names with a deep copy, before it runs, to roll back
    a cancelled one: with a few hundred jobs and operations a claim took ~0.4 s, nearly all of it
    copying. Here the snapshot is a shallow copy of the table whose `items` map is new, with deep
    copies of just the items (partitions) the transaction names; everything else is shared, which
    is safe because the transaction changes nothing else (and requests run one at a time, see
    _serialized_moto_server). Rolling back swaps this snapshot in, exactly as before.
    """
    import copy as real_copy
    import types
    from collections import defaultdict

    import moto.dynamodb.models as moto_models
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.dynamo_type import DynamoType
    from moto.dynamodb.models.table import Table

    if getattr(DynamoDBBackend, "_snapshots_touched_items", False):
        return
    original = DynamoDBBackend.transact_write_items
    touched: dict[str, set[Any]] = {}

    def snapshot(table: Table) -> Table:
        clone = real_copy.copy(table)
        items: Any = defaultdict(dict)
        items.update(table.items)
        for hash_value in touched.get(table.name, ()):
            if hash_value in table.items:
                items[hash_value] = real_copy.deepcopy(table.items[hash_value])
        clone.items = items
        return clone

    def deepcopy(value: Any, memo: Any = None) -> Any:
        if isinstance(value, Table) and value.name in touched:
            return snapshot(value)
        return real_copy.deepcopy(value, memo)

    moto_models.copy = types.SimpleNamespace(deepcopy=deepcopy, copy=real_copy.copy)  # type: ignore[assignment]

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        touched.clear()
        for entry in transact_items:
            for op in entry.values():
                if not isinstance(op, dict) or op.get("TableName") not in self.tables:
                    continue
                table = self.tables[op["TableName"]]
                attrs = op.get("Key") or op.get("Item") or {}
                if table.hash_key_attr in attrs:
                    touched.setdefault(table.name, set()).add(DynamoType(attrs[table.hash_key_attr]))
        try:
            original(self, transact_items)
        finally:
            touched.clear()

    DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]
    DynamoDBBackend._snapshots_touched_items = True  # type: ignore[attr-defined]


def _list_moto_modules_once() -> None:
    """moto's server works out each request's service from its Host, and for a host like
    127.0.0.1:PORT it first lists moto's package directory (a listdir and ~150 isdir calls) on every
    request: a quarter of the server's own time under load. The directory does not change while we
    run: list it once."""
    import moto.backends as moto_backends

    if getattr(moto_backends.list_of_moto_modules, "_listed_once", False):
        return
    modules = tuple(moto_backends.list_of_moto_modules())

    def list_of_moto_modules() -> tuple[str, ...]:
        return modules

    list_of_moto_modules._listed_once = True  # type: ignore[attr-defined]
    moto_backends.list_of_moto_modules = list_of_moto_modules


def _parse_event_input_paths_once() -> None:
    """moto's EventBridge renders each event for each SQS target through eight JSONPath
    expressions, and parses them anew every time: jsonpath_ng builds its whole parser (ply's tables)
    per parse. That was a fifth of the serialized server's time in the latency benchmark, and every
    other request waits behind it. The expressions are the same few strings, and a parsed one is
    only read by `find`: parse each once."""
    import functools

    import jsonpath_ng.ext

    if getattr(jsonpath_ng.ext.parse, "_parsed_once", False):
        return
    parse = functools.lru_cache(maxsize=256)(jsonpath_ng.ext.parse)
    parse._parsed_once = True  # type: ignore[attr-defined]
    jsonpath_ng.ext.parse = parse


def _forget_model_instances() -> None:
    """moto appends every model object it ever makes to its class's `instances_tracked` (for its
    /moto-api dashboard, which nothing here serves) and never lets go: every item version, every
    stream record and SQS message, and the partitions each transaction backs up. The store then
    only grows, and Python's full garbage collections walk all of it with every thread stopped:
    600-800 ms pauses after 2,000 tags (a million objects), which were the local runtime's tail
    latency. Made objects are not tracked; what the backends hold lives as long as they hold it."""
    from moto.core import common_models

    base = common_models.BaseModel
    if getattr(base, "_instances_forgotten", False):
        return

    def __new__(cls: type, *args: Any, **kwargs: Any) -> Any:
        return object.__new__(cls)

    base.__new__ = staticmethod(__new__)  # type: ignore[method-assign]
    base._instances_forgotten = True  # type: ignore[attr-defined]
    from moto.core.model_instances import model_data

    for models in model_data.values():
        for model in models.values():
            model.instances_tracked = []  # type: ignore[attr-defined]


# Finds the only items a Query can return, or None (moto then walks the whole table): given the
# table, the Query's hash key value (a DynamoType), its index name (None: the table's own key) and
# its hash key conditions as moto passes them ([(attribute, DynamoType)]).
CandidateFinder = Callable[[Any, Any, str | None, list[tuple[str, Any]]], list[Any] | None]
# Asked before the partition finder, in order (bench.moto_fastpath adds one for index queries).
candidate_finders: list[CandidateFinder] = []


def _partition_of(
    table: Any, hash_key: Any, index_name: str | None, conditions: list[tuple[str, Any]]
) -> list[Any] | None:
    """A Query of a table's own key: its partition's items, in all_items()'s order."""
    if index_name is not None or hash_key is None:
        return None
    found = table.items.get(hash_key)  # .get: the defaultdict must not grow an empty partition
    if found is None:
        return []
    if table.range_key_attr:
        return sorted(found.values(), key=lambda item: (item.hash_key, item.range_key))
    return [found]


def _query_only_candidates() -> None:
    """moto answers a Query by sorting every item of the table (`all_items()`) and walking them for
    the key asked for: O(store) per Query, where DynamoDB reads one partition. Every tag makes one
    (the object's types), so a tag got slower as the store grew. Here the walk is given only the
    items the Query could return (for the table's own key, its partition), in the same order: moto
    checks, sorts, filters and pages them exactly as before. Scans are unchanged."""
    from moto.dynamodb.models.table import Table

    if getattr(Table, "_queries_only_candidates", False):
        return
    original_query = Table.query
    original_all_items = Table.all_items
    walk = threading.local()

    def all_items(self: Any) -> Any:
        items = getattr(walk, "items", None)
        return original_all_items(self) if items is None else items

    def query(self: Any, hash_key: Any, *args: Any, **kwargs: Any) -> Any:
        # index_name: the 8th argument, as DynamoDBBackend.query passes it (or a keyword)
        index_name = kwargs.get("index_name", args[6] if len(args) > 6 else None)
        conditions = kwargs.get("hash_key_conditions") or []
        items = None
        for find in [*candidate_finders, _partition_of]:
            items = find(self, hash_key, index_name, conditions)
            if items is not None:
                break
        walk.items = items
        try:
            return original_query(self, hash_key, *args, **kwargs)
        finally:
            walk.items = None

    Table.all_items = all_items  # type: ignore[method-assign]
    Table.query = query  # type: ignore[method-assign]
    Table._queries_only_candidates = True  # type: ignore[attr-defined]


def start_embedded_dynamo(host: str = "127.0.0.1", port: int = 0) -> EmbeddedDynamo:
    _list_moto_modules_once()
    _parse_event_input_paths_once()
    _forget_model_instances()
    _query_only_candidates()
    _snapshot_only_what_a_transaction_touches()
    _keep_streams_across_cancelled_transactions()
    store_rules.install()
    # werkzeug logs every request at INFO; the runtime's own log is what people read.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    ensure_port_free(host, port)
    server = _serialized_moto_server(host, port)
    server.start()
    bound_host, bound_port = server.get_host_and_port()
    return EmbeddedDynamo(server=server, endpoint=f"http://{bound_host}:{bound_port}")


def point_boto3_at(endpoint: str) -> None:
    """Set the environment boto3 reads (DynamoDB, its streams and EventBridge: moto serves them all
    at one endpoint), with dummy credentials (moto accepts any)."""
    os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = endpoint
    os.environ["AWS_ENDPOINT_URL_DYNAMODB_STREAMS"] = endpoint
    os.environ["AWS_ENDPOINT_URL_EVENTBRIDGE"] = endpoint
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "local")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "local")
    os.environ["AWS_DEFAULT_REGION"] = os.environ.get("AWS_DEFAULT_REGION", LOCAL_REGION)
    reset_clients()


def create_tables(prefix: str, template: dict[str, Any] | None = None) -> dict[str, str]:
    """Create every table the template declares (named `{prefix}-{LogicalId}`); set the
    environment variables that name them; return {ENV_VAR: table name}."""
    template = template or load_template()
    names = table_names_for(template, prefix)
    client = boto3.client("dynamodb", config=Config(retries={"mode": "standard", "max_attempts": 5}))
    for request in create_table_requests(template, names):
        client.create_table(**request)
    env = table_environment(template, names)
    os.environ.update(env)
    reset_settings_cache()
    reset_clients()
    return env


def stream_arn(table_name: str) -> str:
    client = boto3.client("dynamodb")
    desc = client.describe_table(TableName=table_name)["Table"]
    return str(desc["LatestStreamArn"])
