"""Running functions as Lambda runs them: each in processes of its own, one invocation at a time.

A function's "execution environment" is a worker process (jobtriggers/local/worker.py) started
with the function's environment from template.yaml, which imports the handler once (Lambda's init
phase) and then serves one invocation at a time. Concurrent invocations get more workers, up to
`max_workers` per function; workers start lazily and stay warm, as Lambda keeps environments. An
invocation over the function's Timeout is reported as one Lambda would have failed, and cut off
(its worker killed, as Lambda does) at `timeout_factor` times the Timeout: 1 is Lambda's rule; the
runtime allows more, because a shared 2-core machine running every function is slower than the
CPU Lambda gives each. A worker that dies is replaced by the next invocation that needs one.

Events and results cross the process boundary as JSON, as they cross Lambda's: what a handler
returns must be JSON-serializable (else `Runtime.MarshalError`). A handler's exception comes back as
a FunctionError with Lambda's errorType/errorMessage; `str(error)` is the errorMessage, so the
gateway can tell an authorizer's `Exception("Unauthorized")` apart as API Gateway does.

What a worker prints (Powertools' JSON log lines, tracebacks) reaches FunctionLogs line by line,
and every line of an invocation is there before its result is returned.

`load_handler` is the in-process alternative, for tests that drive one handler directly.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import logging
import os
import secrets
import select
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, BinaryIO

from jobtriggers.local.template import LOCAL_ACCOUNT, FunctionSpec

Handler = Callable[[dict[str, Any], Any], Any]
EnvironmentFor = Callable[[str], dict[str, str]]

log = logging.getLogger("local_runtime.functions")

DEFAULT_MAX_WORKERS = 8
# Lambda gives an init phase 10 s; a shared 2-core machine importing boto3 and pydantic in several
# new processes at once needs more, and a slow start here is not the function's fault.
INIT_SECONDS = 60.0
_FRAME_HEADER = struct.Struct(">I")
_module_counter = itertools.count(1)


class FunctionNotAvailable(RuntimeError):
    """The template names a function whose code is not there (yet)."""


class FunctionError(RuntimeError):
    """An invocation that failed: what Lambda reports as a function error."""

    def __init__(self, error_type: str, message: str, stack_trace: list[str] | None = None) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.stack_trace = stack_trace or []

    def __str__(self) -> str:
        return self.message

    def describe(self) -> str:
        return f"{self.error_type}: {self.message}" + (
            "\n" + "".join(self.stack_trace) if self.stack_trace else ""
        )


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
    deadline: float | None = None  # epoch seconds; default: timeout_seconds from creation
    _started: float = field(default_factory=time.time)

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:{LOCAL_ACCOUNT}:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        deadline = self.deadline if self.deadline is not None else self._started + self.timeout_seconds
        return max(0, int((deadline - time.time()) * 1000))


def handler_path(root: Path, spec: FunctionSpec) -> tuple[Path, str]:
    """`CodeUri: functions/api/` + `Handler: app.lambda_handler` -> (functions/api/app.py, lambda_handler)."""
    module, _, attr = spec.handler.rpartition(".")
    return root / spec.code_uri / f"{module.replace('.', '/')}.py", attr


def load_handler(path: Path, attr: str = "lambda_handler", label: str = "fn") -> Handler:
    """Import one handler file into this process, under a module name of its own (tests)."""
    if not path.is_file():
        raise FunctionNotAvailable(f"{path} does not exist")
    spec = importlib.util.spec_from_file_location(f"jobtriggers_local_{label}_{next(_module_counter)}", path)
    if spec is None or spec.loader is None:
        raise FunctionNotAvailable(f"{path} cannot be imported")
    module: ModuleType = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    handler = getattr(module, attr, None)
    if not callable(handler):
        raise FunctionNotAvailable(f"{path} has no callable {attr}")
    return handler


# --------------------------------------------------------------------------- framing


def write_frame(stream: BinaryIO, message: dict[str, Any]) -> None:
    data = json.dumps(message, separators=(",", ":")).encode()
    stream.write(_FRAME_HEADER.pack(len(data)) + data)
    stream.flush()


def _read_exactly(fd: int, size: int, deadline: float | None) -> bytes | None:
    """`size` bytes from fd; None at end of file; TimeoutError past the deadline."""
    chunks: list[bytes] = []
    while size:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError
        chunk = os.read(fd, size)
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int, deadline: float | None = None) -> dict[str, Any] | None:
    """The next message on fd (None at end of file); TimeoutError past `deadline` (monotonic)."""
    header = _read_exactly(fd, _FRAME_HEADER.size, deadline)
    if header is None:
        return None
    body = _read_exactly(fd, _FRAME_HEADER.unpack(header)[0], deadline)
    if body is None:
        return None
    message: dict[str, Any] = json.loads(body)
    return message


# --------------------------------------------------------------------------- logs


class FunctionLogs:
    """Every line the functions' processes print, in the order each printed them.

    Echoed to this process's own stdout as they arrive (what `make run` shows) and kept, the
    newest `keep` lines, for tests: `lines()`, `text()`. The echo goes to `sys.__stdout__`, the
    process's file descriptor 1, not to whatever `sys.stdout` is at the moment: a CLI command run
    in this process (typer's CliRunner swaps `sys.stdout`) must not find a function's log line in
    the middle of its `--json` output. Capture at the descriptor (pytest's default) still sees them.
    """

    def __init__(self, echo: bool = True, keep: int = 100_000) -> None:
        self.echo = echo
        self._lines: deque[tuple[str, str]] = deque(maxlen=keep)
        self._lock = threading.Lock()

    def write(self, function: str, line: str) -> None:
        with self._lock:
            self._lines.append((function, line))
            if self.echo:
                stream = sys.__stdout__
                if stream is None:  # no stdout at all (a daemon)
                    return
                try:
                    stream.write(line + "\n")
                    stream.flush()
                except (OSError, ValueError):  # stdout closed (interpreter shutting down)
                    pass

    def lines(self, function: str | None = None) -> list[str]:
        with self._lock:
            return [line for fn, line in self._lines if function is None or fn == function]

    def text(self, function: str | None = None) -> str:
        return "\n".join(self.lines(function))

    def clear(self) -> None:
        with self._lock:
            self._lines.clear()


# --------------------------------------------------------------------------- one worker process


class Worker:
    """One execution environment of a function: a process that imported its handler."""

    def __init__(
        self,
        spec: FunctionSpec,
        root: Path,
        environment: dict[str, str],
        logs: FunctionLogs,
        function_name: str,
    ) -> None:
        path, attr = handler_path(root, spec)
        if not path.is_file():
            raise FunctionNotAvailable(f"{path} does not exist")
        self.function = spec.logical_id
        self.function_name = function_name
        self.timeout = spec.timeout
        self.memory_size = spec.memory_size
        self.logs = logs
        self.invocations = 0
        # Printed after each invocation's output, so the reader knows all of it has arrived.
        self._marker = f"\x1e{secrets.token_hex(8)}"
        self._logged = threading.Event()
        requests_read, requests_write = os.pipe()
        replies_read, replies_write = os.pipe()
        module = spec.handler.rpartition(".")[0]
        environment = {
            **environment,
            # What Lambda tells every execution environment about its function.
            "AWS_LAMBDA_FUNCTION_NAME": function_name,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_size),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{function_name}",
            "LAMBDA_TASK_ROOT": str(path.parent),
            "_HANDLER": spec.handler,
            "PYTHONUNBUFFERED": "1",
        }
        try:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "jobtriggers.local.worker",
                    str(requests_read),
                    str(replies_write),
                    self._marker,
                    module,
                    attr,
                ],
                cwd=path.parent,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                pass_fds=(requests_read, replies_write),
                # Ctrl-C in the terminal is for the runtime, which ends its workers itself; a worker
                # whose runtime dies ends when its request pipe closes.
                start_new_session=True,
            )
        finally:
            os.close(requests_read)
            os.close(replies_write)
        self._requests = os.fdopen(requests_write, "wb")
        self._replies = replies_read
        self._reader = threading.Thread(
            target=self._forward_output, name=f"log-{self.function}-{self.process.pid}", daemon=True
        )
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self, seconds: float = INIT_SECONDS) -> None:
        """Wait for the init phase (importing the handler); FunctionError if it failed."""
        try:
            message = read_frame(self._replies, time.monotonic() + seconds)
        except TimeoutError:
            self.stop()
            raise FunctionError(
                "Runtime.InitTimeout", f"{self.function} did not start in {seconds:.0f} s"
            ) from None
        if message is None or "init_error" in message:
            error = (message or {}).get("init_error") or {
                "errorType": "Runtime.ExitError",
                "errorMessage": f"the process exited while starting (status {self.process.wait(5)})",
            }
            self.stop()
            raise FunctionError(error["errorType"], error["errorMessage"], error.get("stackTrace"))

    def invoke(self, event: dict[str, Any], request_id: str, timeout_factor: float = 1.0) -> Any:
        """Run one invocation; its result, or FunctionError. The handler sees its Timeout in its
        context; it is cut off at `timeout_factor` times that (an invocation between the two ends,
        and the log says Lambda would have cut it off). After a cut-off or a crash the worker is
        dead (`alive` is False) and must be dropped."""
        seconds = self.timeout * max(1.0, timeout_factor)
        self.invocations += 1
        self._logged.clear()
        started = time.monotonic()
        try:
            write_frame(
                self._requests,
                {"request_id": request_id, "event": event, "deadline": time.time() + self.timeout},
            )
            reply = read_frame(self._replies, started + seconds)
        except TimeoutError:
            self.stop()
            self.logs.write(self.function, f"{request_id} Task timed out after {seconds:.2f} seconds")
            raise FunctionError("Sandbox.Timedout", f"Task timed out after {seconds:.2f} seconds") from None
        except (BrokenPipeError, ValueError):
            reply = None
        if reply is None:
            status = self.process.wait(5)
            self._reader.join(2)
            raise FunctionError(
                "Runtime.ExitError", f"RequestId: {request_id} Error: Runtime exited with status {status}"
            )
        # The worker prints its marker after the invocation's last line; wait for the reader.
        self._logged.wait(5)
        took = time.monotonic() - started
        if took > self.timeout:
            log.warning(
                "%s ran %.1f s, over its %.0f s Timeout: on Lambda it would have failed",
                self.function,
                took,
                self.timeout,
            )
        if reply.get("ok"):
            return reply.get("result")
        raise FunctionError(
            str(reply.get("errorType", "Error")), str(reply.get("errorMessage", "")), reply.get("stackTrace")
        )

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """End the process (closing its request pipe ends it cleanly; a stuck one is killed)."""
        with suppress(OSError):
            self._requests.close()
        if self.process.poll() is None:
            try:
                self.process.wait(0.5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        with suppress(OSError):
            os.close(self._replies)
        self._reader.join(2)

    def _forward_output(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            if line.startswith(self._marker):
                self._logged.set()
                continue
            self.logs.write(self.function, line)
        self._logged.set()


# --------------------------------------------------------------------------- the pool


class FunctionPool:
    """Warm workers per function, started on demand; each serves one invocation at a time.

    A function gets at most `max_workers`; further invocations wait for one to be free (as with
    reserved concurrency, minus the throttling error).
    """

    def __init__(
        self,
        functions: dict[str, FunctionSpec],
        root: Path,
        environment_for: EnvironmentFor,
        name_prefix: str = "jobtriggers-local",
        max_workers: int = DEFAULT_MAX_WORKERS,
        logs: FunctionLogs | None = None,
        region: str = "us-east-1",
        timeout_factor: float = 1.0,
    ) -> None:
        self.functions = functions
        self.timeout_factor = timeout_factor
        self.root = root
        self.environment_for = environment_for
        self.name_prefix = name_prefix
        self.max_workers = max_workers
        self.logs = logs or FunctionLogs()
        self.region = region
        self._idle: dict[str, list[Worker]] = {}
        self._count: dict[str, int] = {}
        self._all: set[Worker] = set()
        self._changed = threading.Condition()
        self._closed = False

    def workers(self, function: str) -> int:
        """How many workers the function has (busy or idle)."""
        with self._changed:
            return self._count.get(function, 0)

    def pids(self, function: str) -> set[int]:
        with self._changed:
            return {w.pid for w in self._all if w.function == function and w.alive}

    def function_name(self, function: str) -> str:
        return f"{self.name_prefix}-{function}"

    def context(self, function: str) -> FakeLambdaContext:
        spec = self.functions.get(function)
        return FakeLambdaContext(
            function_name=self.function_name(function),
            timeout_seconds=spec.timeout if spec else 3.0,
            memory_limit_in_mb=spec.memory_size if spec else 128,
            region=self.region,
        )

    def _start(self, function: str) -> Worker:
        spec = self.functions.get(function)
        if spec is None:
            raise FunctionNotAvailable(f"template.yaml has no function {function}")
        worker = Worker(
            spec, self.root, self.environment_for(function), self.logs, self.function_name(function)
        )
        with self._changed:
            self._all.add(worker)
        try:
            worker.wait_ready()
        except BaseException:
            with self._changed:
                self._all.discard(worker)
            raise
        return worker

    def _checkout(self, function: str) -> Worker:
        with self._changed:
            while True:
                if self._closed:
                    raise RuntimeError("the function pool is stopped")
                idle = self._idle.setdefault(function, [])
                while idle:
                    worker = idle.pop()
                    if worker.alive:
                        return worker
                    self._forget(worker)
                if self._count.get(function, 0) < self.max_workers:
                    self._count[function] = self._count.get(function, 0) + 1
                    break
                self._changed.wait()
        try:
            return self._start(function)
        except BaseException:
            with self._changed:
                self._count[function] -= 1
                self._changed.notify_all()
            raise

    def _forget(self, worker: Worker) -> None:
        """Drop a dead worker (callers hold the lock)."""
        self._all.discard(worker)
        self._count[worker.function] = max(0, self._count.get(worker.function, 0) - 1)

    @contextmanager
    def worker(self, function: str) -> Iterator[Worker]:
        """A free worker of the function (started if needed), held while the block runs."""
        worker = self._checkout(function)
        try:
            yield worker
        finally:
            with self._changed:
                if worker.alive and not self._closed:
                    self._idle[function].append(worker)
                else:
                    self._forget(worker)
                self._changed.notify_all()
            if self._closed:
                worker.stop()

    def invoke(self, function: str, event: dict[str, Any], request_id: str | None = None) -> Any:
        with self.worker(function) as worker:
            return worker.invoke(event, request_id or str(uuid.uuid4()), self.timeout_factor)

    def handler_for(self, function: str) -> Handler:
        """A callable that invokes `function` in a worker (what the stream poller is given)."""

        def call(event: dict[str, Any], context: Any) -> Any:
            request_id = getattr(context, "aws_request_id", None)
            return self.invoke(function, event, request_id)

        return call

    def warm(self, names: list[str]) -> dict[str, str]:
        """Start one worker of each function at once; {function: why} for those that cannot start."""
        failures: dict[str, str] = {}

        def start(name: str) -> None:
            try:
                with self.worker(name):
                    pass
            except FunctionNotAvailable as exc:
                failures[name] = str(exc)
            except FunctionError as exc:
                failures[name] = f"{exc.error_type}: {exc.message}"

        threads = [threading.Thread(target=start, args=(n,), name=f"warm-{n}") for n in names]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return failures

    def provision(self, function: str, count: int) -> int:
        """Start workers until the function has `count` (Lambda's provisioned concurrency: no cold
        start for that many concurrent invocations); how many it has."""
        with self._changed:
            wanted = max(0, min(count, self.max_workers) - self._count.get(function, 0))
            self._count[function] = self._count.get(function, 0) + wanted
        started: list[Worker] = []
        errors: list[BaseException] = []

        def start() -> None:
            try:
                started.append(self._start(function))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=start, name=f"provision-{function}") for _ in range(wanted)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with self._changed:
            self._count[function] -= len(errors)
            self._idle.setdefault(function, []).extend(started)
            self._changed.notify_all()
        if errors:
            raise errors[0]
        return self.workers(function)

    def stop(self) -> None:
        """Stop every worker (busy ones are stopped when their invocation ends)."""
        with self._changed:
            self._closed = True
            idle = [w for workers in self._idle.values() for w in workers]
            self._idle.clear()
            self._changed.notify_all()
        for worker in idle:
            worker.stop()
