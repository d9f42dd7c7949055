"""`make demo` (`jobtriggers demo`): it runs NMDC's chain to a finished MAGs job and stops by itself.

Run as a person runs it: its own process, its own local runtime and `site work` workers, nothing of
this test session's environment (its tables, its AWS settings) handed over.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow  # about 25 s: a runtime and five workers of its own


def test_the_demo_runs_the_chain_to_a_finished_mags_job_and_stops_by_itself() -> None:
    # Given a terminal's environment (nothing of this session's runtime)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBTRIGGERS_", "AWS_"))}
    env["COLUMNS"] = "200"  # one line per job in the tree
    # When the demo runs
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "jobtriggers"), "demo", "--timeout", "150"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    # Then it ended by itself, successfully, after drawing the chain with every link done
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "everything stopped" in out
    for workflow in ("readqc-1.0.6", "mgasm-1.0.3", "mgrba-1.0.2", "mgann-1.0.0", "mags-1.0.4"):
        assert f"{workflow}  done" in out, workflow
    # And the MAGs job saw the whole chain's outputs as its inputs (1 + 4 + 8 + 26)
    assert "sees 39 inputs" in out
    assert "6 jobs, 58 output objects" in out
