"""Handlers loaded by file path into "containers": one invocation each at a time, their own app state."""

from __future__ import annotations

import inspect
import sys
import threading
import time
from pathlib import Path

import pytest

from jobtriggers.local.invoke import FunctionNotAvailable, FunctionPool, handler_path, load_handler
from jobtriggers.local.template import FunctionSpec, find_template, functions, load_template

SLOW_HANDLER = """
import threading, time
calls = []  # module state: one list per container

def lambda_handler(event, context):
    calls.append(event["n"])
    time.sleep(event.get("sleep", 0))
    return {"container": id(calls), "calls": list(calls), "name": context.function_name}
"""


def _pool(tmp_path: Path, max_containers: int) -> FunctionPool:
    (tmp_path / "functions" / "slow").mkdir(parents=True)
    (tmp_path / "functions" / "slow" / "app.py").write_text(SLOW_HANDLER)
    specs = {
        "Slow": FunctionSpec("Slow", "functions/slow/", "app.lambda_handler"),
        "Missing": FunctionSpec("Missing", "functions/missing/", "app.lambda_handler"),
    }
    return FunctionPool(specs, tmp_path, "local", max_containers=max_containers)


def test_concurrent_invocations_get_their_own_containers_up_to_the_limit(tmp_path: Path) -> None:
    # Given a pool that allows two containers of a slow function
    pool = _pool(tmp_path, max_containers=2)
    results: list[dict] = []

    def call(n: int) -> None:
        results.append(pool.invoke("Slow", {"n": n, "sleep": 0.3}))

    # When three invocations arrive at once
    threads = [threading.Thread(target=call, args=(n,)) for n in range(3)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    # Then two containers served them (one served twice, after the first finished) and no more
    assert pool.containers("Slow") == 2
    assert len({r["container"] for r in results}) == 2
    assert sorted(len(r["calls"]) for r in results) == [1, 1, 2]
    assert elapsed >= 0.6
    assert {r["name"] for r in results} == {"local-Slow"}


def test_a_missing_handler_is_reported_and_frees_its_slot(tmp_path: Path) -> None:
    # Given a pool of one container per function
    pool = _pool(tmp_path, max_containers=1)
    # When a function whose file does not exist is invoked, twice
    for _ in range(2):
        with pytest.raises(FunctionNotAvailable, match="does not exist"):
            pool.invoke("Missing", {})
    # Then it never counted as a container
    assert pool.containers("Missing") == 0


def test_each_api_container_has_its_own_resolver_and_sys_modules_is_left_as_it_was() -> None:
    # Given the API function of the template and the package's own resolver module
    import jobtriggers.api
    import jobtriggers.api.app as shared

    template = load_template()
    path, attr = handler_path(find_template().parent, functions(template)["ApiFunction"])
    # When the handler is loaded twice
    first = load_handler(path, attr)
    second = load_handler(path, attr)
    # Then each has its own app (the resolver keeps the current event on it), others keep theirs
    first_app = inspect.unwrap(first).__globals__["app"]  # under Powertools' decorators
    second_app = inspect.unwrap(second).__globals__["app"]
    assert first_app is not second_app
    assert shared.app is not first_app
    assert sys.modules["jobtriggers.api.app"] is shared
    assert sys.modules["jobtriggers"].api is jobtriggers.api


def test_an_invocation_longer_than_the_timeout_is_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a function whose template Timeout is 0.1 s
    pool = _pool(tmp_path, max_containers=1)
    pool.timeouts["Slow"] = 0.1
    # When an invocation takes 0.2 s
    with caplog.at_level("WARNING", logger="local_runtime.functions"):
        result = pool.invoke("Slow", {"n": 1, "sleep": 0.2})
    # Then it still answers, and the log says Lambda would have cut it off
    assert result["calls"] == [1]
    assert "on Lambda it would have failed" in caplog.text
    assert "Slow ran" in caplog.text
