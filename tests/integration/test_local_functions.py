"""Functions run as Lambda runs them: each in worker processes of its own, one invocation at a time
per process, more processes for concurrent invocations, the function's environment and nothing
else, its Timeout enforced, its output collected."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from jobtriggers.local.invoke import FunctionError, FunctionLogs, FunctionNotAvailable, FunctionPool
from jobtriggers.local.template import FunctionSpec

HANDLER = """
import json, os, sys, time
calls = []  # module state: one list per worker process
print("init", os.getpid())

def lambda_handler(event, context):
    calls.append(event.get("n"))
    started = time.time()
    if event.get("print"):
        print(json.dumps({"message": event["print"], "request_id": context.aws_request_id}))
    if event.get("raise"):
        raise ValueError(event["raise"])
    if event.get("exit"):
        os._exit(event["exit"])
    if event.get("unserializable"):
        return {"when": object()}
    time.sleep(event.get("sleep", 0))
    return {
        "pid": os.getpid(),
        "calls": list(calls),
        "started": started,
        "ended": time.time(),
        "name": context.function_name,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "env": {k: os.environ.get(k) for k in event.get("env", [])},
    }
"""


def _pool(
    tmp_path: Path,
    max_workers: int,
    timeout: float = 10.0,
    logs: FunctionLogs | None = None,
    timeout_factor: float = 1.0,
) -> FunctionPool:
    for name, text in (("slow", HANDLER), ("broken", "import no_such_module_here\n")):
        (tmp_path / "functions" / name).mkdir(parents=True, exist_ok=True)
        (tmp_path / "functions" / name / "app.py").write_text(text)
    specs = {
        "Slow": FunctionSpec("Slow", "functions/slow/", "app.lambda_handler", timeout=timeout),
        "Broken": FunctionSpec("Broken", "functions/broken/", "app.lambda_handler"),
        "Missing": FunctionSpec("Missing", "functions/missing/", "app.lambda_handler"),
    }
    environment = {"PATH": os.environ["PATH"], "GREETING": "hello from the template"}
    if os.environ.get("PYTHONPATH"):
        environment["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return FunctionPool(
        specs,
        tmp_path,
        lambda fn: dict(environment),
        "local",
        max_workers=max_workers,
        logs=logs or FunctionLogs(echo=False),
        timeout_factor=timeout_factor,
    )


def test_concurrent_invocations_run_at_once_in_processes_of_their_own_up_to_the_limit(tmp_path: Path) -> None:
    # Given a pool that allows two workers of a slow function
    pool = _pool(tmp_path, max_workers=2)
    results: list[dict[str, Any]] = []
    try:
        # When three invocations of 0.5 s arrive at once
        threads = [
            threading.Thread(target=lambda n=n: results.append(pool.invoke("Slow", {"n": n, "sleep": 0.5})))
            for n in range(3)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # Then two processes other than this one served them, one of them twice (after its first)
        assert pool.workers("Slow") == 2
        pids = {r["pid"] for r in results}
        assert len(pids) == 2 and os.getpid() not in pids
        assert sorted(len(r["calls"]) for r in results) == [1, 1, 2]
        # And the first two ran at the same time; the third waited for a free worker
        first, second, third = sorted(results, key=lambda r: r["started"])
        assert second["started"] < first["ended"]
        assert third["started"] >= min(first["ended"], second["ended"]) - 0.01
        assert {r["name"] for r in results} == {"local-Slow"}
    finally:
        pool.stop()


def test_a_function_sees_its_environment_and_nothing_of_this_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a variable in this process that the function's environment does not have
    monkeypatch.setenv("ONLY_IN_THE_TEST_PROCESS", "secret")
    pool = _pool(tmp_path, max_workers=1)
    try:
        # When the function reports its environment
        seen = pool.invoke("Slow", {"env": ["GREETING", "ONLY_IN_THE_TEST_PROCESS"]})["env"]
    finally:
        pool.stop()
    # Then it has the template's variable and not this process's
    assert seen == {"GREETING": "hello from the template", "ONLY_IN_THE_TEST_PROCESS": None}


def test_a_handler_error_comes_back_as_lambdas_function_error_and_is_logged(tmp_path: Path) -> None:
    logs = FunctionLogs(echo=False)
    pool = _pool(tmp_path, max_workers=1, logs=logs)
    try:
        # When the handler raises
        with pytest.raises(FunctionError) as caught:
            pool.invoke("Slow", {"raise": "Unauthorized"})
        # Then the error carries Lambda's errorType and errorMessage (str() is the message, as the
        # gateway needs for an authorizer's Exception("Unauthorized")), and the worker lives on
        assert (caught.value.error_type, str(caught.value)) == ("ValueError", "Unauthorized")
        assert pool.invoke("Slow", {"n": 2})["calls"] == [None, 2]
    finally:
        pool.stop()
    # And the function's log has Lambda's [ERROR] line with the traceback
    assert "[ERROR] ValueError: Unauthorized" in logs.text("Slow")
    assert 'raise ValueError(event["raise"])' in logs.text("Slow")


def test_what_a_function_prints_is_collected_before_its_result_returns(tmp_path: Path) -> None:
    logs = FunctionLogs(echo=False)
    pool = _pool(tmp_path, max_workers=1, logs=logs)
    try:
        for n in range(20):
            # When an invocation prints a line and returns
            result = pool.invoke("Slow", {"n": n, "print": f"line {n}"})
            # Then the line is already in the logs, tagged with the invocation's request id
            assert f'"message": "line {n}"' in logs.lines("Slow")[-1], logs.lines("Slow")[-3:]
            assert result["calls"][-1] == n
    finally:
        pool.stop()
    assert logs.lines("Slow")[0].startswith("init ")  # the init phase's output too


def test_an_invocation_over_its_timeout_is_cut_off_and_its_worker_replaced(tmp_path: Path) -> None:
    # Given a function whose Timeout is 1 s
    logs = FunctionLogs(echo=False)
    pool = _pool(tmp_path, max_workers=1, timeout=1.0, logs=logs)
    try:
        first_pid = pool.invoke("Slow", {"n": 1})["pid"]
        # When an invocation would take 5 s
        started = time.monotonic()
        with pytest.raises(FunctionError) as caught:
            pool.invoke("Slow", {"n": 2, "sleep": 5})
        # Then it fails after 1 s as on Lambda, its process is gone, and the next one starts afresh
        assert caught.value.error_type == "Sandbox.Timedout"
        assert "Task timed out after 1.00 seconds" in str(caught.value)
        assert time.monotonic() - started < 3
        again = pool.invoke("Slow", {"n": 3})
        assert again["pid"] != first_pid and again["calls"] == [3]
        assert 0 < again["remaining_ms"] <= 1000
    finally:
        pool.stop()
    assert "Task timed out after 1.00 seconds" in logs.text("Slow")


def test_over_its_timeout_but_within_the_factor_an_invocation_ends_and_the_log_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a function whose Timeout is 1 s, cut off at 3x on this machine
    pool = _pool(tmp_path, max_workers=1, timeout=1.0, timeout_factor=3.0)
    try:
        # When an invocation takes 1.5 s
        with caplog.at_level("WARNING", logger="local_runtime.functions"):
            result = pool.invoke("Slow", {"n": 1, "sleep": 1.5})
    finally:
        pool.stop()
    # Then it ends, its context still counted down from its own Timeout, and the log says Lambda
    # would have cut it off
    assert result["calls"] == [1]
    assert result["remaining_ms"] == 0
    assert "Slow ran" in caplog.text and "on Lambda it would have failed" in caplog.text


def test_a_worker_that_dies_is_an_error_and_is_replaced(tmp_path: Path) -> None:
    pool = _pool(tmp_path, max_workers=1)
    try:
        # When the process exits in the middle of an invocation
        with pytest.raises(FunctionError) as caught:
            pool.invoke("Slow", {"exit": 3})
        # Then Lambda's Runtime.ExitError comes back, and a new worker serves the next invocation
        assert caught.value.error_type == "Runtime.ExitError"
        assert "status 3" in str(caught.value)
        assert pool.invoke("Slow", {"n": 1})["calls"] == [1]
        assert pool.workers("Slow") == 1
    finally:
        pool.stop()


def test_a_result_that_is_not_json_is_a_marshal_error(tmp_path: Path) -> None:
    pool = _pool(tmp_path, max_workers=1)
    try:
        with pytest.raises(FunctionError) as caught:
            pool.invoke("Slow", {"unserializable": True})
        assert caught.value.error_type == "Runtime.MarshalError"
    finally:
        pool.stop()


def test_missing_and_broken_handlers_are_reported_and_free_their_slot(tmp_path: Path) -> None:
    # Given a pool of one worker per function
    pool = _pool(tmp_path, max_workers=1)
    try:
        # When a function whose file does not exist is invoked, twice
        for _ in range(2):
            with pytest.raises(FunctionNotAvailable, match="does not exist"):
                pool.invoke("Missing", {})
        # And a function whose module fails to import
        with pytest.raises(FunctionError) as caught:
            pool.invoke("Broken", {})
        # Then neither holds a worker, and the import error is Lambda's
        assert caught.value.error_type == "Runtime.ImportModuleError"
        assert "no_such_module_here" in str(caught.value)
        assert (pool.workers("Missing"), pool.workers("Broken")) == (0, 0)
        assert pool.warm(["Broken", "Slow"]) == {"Broken": f"Runtime.ImportModuleError: {caught.value}"}
    finally:
        pool.stop()


def test_stopping_the_pool_ends_every_worker(tmp_path: Path) -> None:
    pool = _pool(tmp_path, max_workers=2)
    pool.warm(["Slow"])
    (pid,) = pool.pids("Slow")
    pool.stop()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists() or sys.platform != "linux"


def test_echoed_log_lines_go_to_the_process_stdout_not_a_swapped_sys_stdout(
    capfd: pytest.CaptureFixture[str],
) -> None:
    # Given a CLI command running in this process, its output captured by swapping sys.stdout
    # (what typer's CliRunner does) while a function of the local runtime logs a line
    import contextlib
    import io

    logs = FunctionLogs(echo=True)
    cli_output = io.StringIO()
    with contextlib.redirect_stdout(cli_output):
        print('{"site_id": "s1"}')
        logs.write("LeaseReaperFunction", '{"message": "lease reaper run"}')
    # Then the command's output holds only what the command printed
    assert cli_output.getvalue() == '{"site_id": "s1"}\n'
    # And the line reached the process's stdout, and is kept for tests
    assert '"lease reaper run"' in capfd.readouterr().out
    assert logs.lines("LeaseReaperFunction") == ['{"message": "lease reaper run"}']
