"""Running a function's handler in this process as Lambda would: loaded by file path, lazily, with a
Lambda-shaped context.

Each function's `functions/<CodeUri>/app.py` is imported with importlib from its file (never via
sys.path) under a unique module name. On AWS every invocation has a process to itself; here a
function's invocations share the package's singletons (the API resolver keeps the current event on
its app object), so each function runs one invocation at a time, like a single warm container;
different functions (the stream's TriggerResolver and the API) run side by side.
Races between writers are tested where they really happen: the data layer against moto.
"""

from __future__ import annotations

import importlib.util
import itertools
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

LOCAL_ACCOUNT = "123456789012"
_module_counter = itertools.count(1)


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


def load_handler(path: Path, attr: str = "lambda_handler", label: str = "fn") -> Handler:
    """Import one handler file as a fresh module (its own globals) and return its handler."""
    if not path.is_file():
        raise FunctionNotAvailable(f"{path} does not exist")
    name = f"jobtriggers_local_{label}_{next(_module_counter)}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise FunctionNotAvailable(f"{path} cannot be imported")
    module: ModuleType = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    handler = getattr(module, attr, None)
    if not callable(handler):
        raise FunctionNotAvailable(f"{path} has no callable {attr}")
    return handler


class FunctionPool:
    """One warm "container" per function, loaded on first use, serving one invocation at a time."""

    def __init__(
        self,
        functions: dict[str, FunctionSpec],
        root: Path,
        name_prefix: str = "jobtriggers-local",
        timeouts: dict[str, float] | None = None,
    ) -> None:
        self.functions = functions
        self.root = root
        self.name_prefix = name_prefix
        self.timeouts = timeouts or {}
        self._loaded: dict[str, Handler] = {}
        self._busy: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    @contextmanager
    def container(self, function: str) -> Iterator[Handler]:
        """The function's handler, loaded if needed, held exclusively while the block runs."""
        with self._lock:
            busy = self._busy.setdefault(function, threading.Lock())
        with busy:
            handler = self._loaded.get(function)
            if handler is None:
                spec = self.functions.get(function)
                if spec is None:
                    raise FunctionNotAvailable(f"template.yaml has no function {function}")
                path, attr = handler_path(self.root, spec)
                handler = self._loaded[function] = load_handler(path, attr, label=function)
            yield handler

    def context(self, function: str) -> FakeLambdaContext:
        return FakeLambdaContext(
            function_name=f"{self.name_prefix}-{function}",
            timeout_seconds=self.timeouts.get(function, 10.0),
        )

    def invoke(self, function: str, event: dict[str, Any]) -> Any:
        with self.container(function) as handler:
            return handler(event, self.context(function))

    def handler_for(self, function: str) -> Handler:
        """A callable that invokes `function` through the pool (what the stream poller is given)."""

        def call(event: dict[str, Any], context: Any) -> Any:
            with self.container(function) as handler:
                return handler(event, context)

        return call
