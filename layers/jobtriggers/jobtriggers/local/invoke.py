"""Running a function's handler in this process as Lambda would: loaded by file path, lazily, with a
Lambda-shaped context.

Each function's `functions/<CodeUri>/app.py` is imported with importlib from its file (never via
sys.path) under a unique module name. A "container" serves one invocation at a time, as on Lambda;
concurrent requests get more containers (up to a limit). On AWS each container is a process of its
own; here each gets its own copy of the modules that keep per-app state (`jobtriggers.api`: the
resolvers keep the current event on their app object), while the rest of the package (models,
data access, Powertools' Logger and Metrics) is shared by the process.
"""

from __future__ import annotations

import importlib.util
import itertools
import logging
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from jobtriggers.local.template import FunctionSpec

Handler = Callable[[dict[str, Any], Any], Any]

log = logging.getLogger("local_runtime.functions")

LOCAL_ACCOUNT = "123456789012"
# Modules whose globals are per-app state: every container imports its own copy.
CONTAINER_PACKAGES: tuple[str, ...] = ("jobtriggers.api",)
DEFAULT_MAX_CONTAINERS = 8
_module_counter = itertools.count(1)
_import_lock = threading.Lock()


class FunctionNotAvailable(RuntimeError):
    """The template names a function whose code is not there (yet)."""


@dataclass
class FakeLambdaContext:
    """What Powertools reads from a LambdaContext (inject_lambda_context, the batch processor)."""

    function_name: str
    memory_limit_in_mb: int = 512
    timeout_seconds: float = 10.0
    region: str = "us-east-1"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"
    log_group_name: str = ""
    log_stream_name: str = "local"
    _started: float = field(default_factory=time.monotonic)

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:{LOCAL_ACCOUNT}:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        left = self.timeout_seconds - (time.monotonic() - self._started)
        return max(0, int(left * 1000))


def handler_path(root: Path, spec: FunctionSpec) -> tuple[Path, str]:
    """`CodeUri: functions/api/` + `Handler: app.lambda_handler` -> (functions/api/app.py, lambda_handler)."""
    module, _, attr = spec.handler.rpartition(".")
    return root / spec.code_uri / f"{module.replace('.', '/')}.py", attr


def _in_packages(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def load_handler(
    path: Path,
    attr: str = "lambda_handler",
    label: str = "fn",
    isolate: tuple[str, ...] = CONTAINER_PACKAGES,
) -> Handler:
    """Import one handler file as a fresh module and return its handler.

    The modules under `isolate` are imported afresh for it and then taken out of sys.modules again,
    so this handler keeps its own copies and everyone else keeps the ones they had.
    """
    if not path.is_file():
        raise FunctionNotAvailable(f"{path} does not exist")
    name = f"jobtriggers_local_{label}_{next(_module_counter)}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise FunctionNotAvailable(f"{path} cannot be imported")
    module: ModuleType = importlib.util.module_from_spec(spec)
    with _import_lock:
        saved = {k: m for k, m in list(sys.modules.items()) if _in_packages(k, isolate)}
        for k in saved:
            del sys.modules[k]
        try:
            spec.loader.exec_module(module)
        finally:
            for k in [k for k in list(sys.modules) if _in_packages(k, isolate)]:
                del sys.modules[k]
            sys.modules.update(saved)
            # `import a.b` also set attribute b on package a: point it back at the original.
            for package in isolate:
                parent_name, _, child = package.rpartition(".")
                if package in saved and parent_name in sys.modules:
                    setattr(sys.modules[parent_name], child, saved[package])
    handler = getattr(module, attr, None)
    if not callable(handler):
        raise FunctionNotAvailable(f"{path} has no callable {attr}")
    return handler


class FunctionPool:
    """Warm "containers" per function, loaded on demand; each serves one invocation at a time.

    A function gets at most `max_containers`; further invocations wait for one to be free (as
    with reserved concurrency, minus the throttling error).
    """

    def __init__(
        self,
        functions: dict[str, FunctionSpec],
        root: Path,
        name_prefix: str = "jobtriggers-local",
        timeouts: dict[str, float] | None = None,
        max_containers: int = DEFAULT_MAX_CONTAINERS,
    ) -> None:
        self.functions = functions
        self.root = root
        self.name_prefix = name_prefix
        self.timeouts = timeouts or {}
        self.max_containers = max_containers
        self._idle: dict[str, list[Handler]] = {}
        self._containers: dict[str, int] = {}
        self._changed = threading.Condition()

    def containers(self, function: str) -> int:
        """How many containers the function has (busy or idle)."""
        with self._changed:
            return self._containers.get(function, 0)

    def _checkout(self, function: str) -> Handler:
        spec = self.functions.get(function)
        if spec is None:
            raise FunctionNotAvailable(f"template.yaml has no function {function}")
        with self._changed:
            while True:
                idle = self._idle.setdefault(function, [])
                if idle:
                    return idle.pop()
                if self._containers.get(function, 0) < self.max_containers:
                    self._containers[function] = self._containers.get(function, 0) + 1
                    break
                self._changed.wait()
        try:
            path, attr = handler_path(self.root, spec)
            return load_handler(path, attr, label=function)
        except BaseException:
            with self._changed:
                self._containers[function] -= 1
                self._changed.notify()
            raise

    @contextmanager
    def container(self, function: str) -> Iterator[Handler]:
        """A free container of the function (loaded if needed), held while the block runs."""
        handler = self._checkout(function)
        try:
            yield handler
        finally:
            with self._changed:
                self._idle[function].append(handler)
                self._changed.notify()

    def context(self, function: str) -> FakeLambdaContext:
        return FakeLambdaContext(
            function_name=f"{self.name_prefix}-{function}",
            timeout_seconds=self.timeouts.get(function, 10.0),
        )

    def invoke(self, function: str, event: dict[str, Any]) -> Any:
        return self.handler_for(function)(event, self.context(function))

    def handler_for(self, function: str) -> Handler:
        """A callable that invokes `function` through the pool (what the stream poller is given)."""

        def call(event: dict[str, Any], context: Any) -> Any:
            with self.container(function) as handler:
                started = time.monotonic()
                try:
                    return handler(event, context)
                finally:
                    self._check_duration(function, time.monotonic() - started)

        return call

    def _check_duration(self, function: str, seconds: float) -> None:
        # Nothing is killed here, but what Lambda would have cut off must not pass unnoticed.
        limit = self.timeouts.get(function, 10.0)
        if seconds > limit:
            log.warning(
                "%s ran %.1f s, over its %.0f s Timeout: on Lambda it would have failed",
                function,
                seconds,
                limit,
            )
