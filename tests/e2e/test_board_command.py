"""`jobtriggers board` against the local runtime, as an operator runs it (a process of its own), and
the board `jobtriggers local` (`make run`) serves beside the runtime."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx

from jobtriggers.cli.local import _start_board
from jobtriggers.local.runtime import LocalRuntime

JOBTRIGGERS = Path(sys.executable).with_name("jobtriggers")


def test_the_command_serves_the_runtimes_jobs_on_loopback(local_runtime: LocalRuntime) -> None:
    # The runtime's tables are named in this process's environment, which the command inherits
    process = subprocess.Popen(
        [str(JOBTRIGGERS), "board", "--endpoint-url", local_runtime.dynamodb_endpoint, "--port", "0"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=dict(os.environ),
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        match = re.search(r"job board: (http://127\.0\.0\.1:\d+)", line)
        assert match, line
        deadline = time.monotonic() + 20
        while True:
            try:
                page = httpx.get(match.group(1) + "/", timeout=10)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        # Then the page shows the runtime's registry and says what it read
        assert page.status_code == 200, page.text
        assert 'data-workflow="' in page.text or "No jobs yet." in page.text
        assert "metag-1.0.0" in page.text  # a registry workflow, in the workflow filter at least
        assert re.search(r"This refresh read \d+ items", page.text)
        assert f"local runtime · {local_runtime.dynamodb_endpoint}" in page.text
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_make_run_serves_the_board_beside_the_runtime_and_says_where(local_runtime: LocalRuntime) -> None:
    board = _start_board(local_runtime, 0)
    assert board is not None
    try:
        assert board.url.startswith("http://127.0.0.1:")
        assert httpx.get(board.url + "/", timeout=10).status_code == 200
        banner = local_runtime.banner(also=[f"  Board     {board.url}"])
        assert f"  Board     {board.url}" in banner
        assert banner.index("Board") < banner.index("Next:")
    finally:
        board.stop()
