"""`jobtriggers demo` (`make demo`): NMDC's metagenome chain running by itself, on this machine.

It starts the local runtime (free ports, its own tables), one `jobtriggers site work` worker per
workflow of the chain (readqc, mgasm, mgrba, mgann, mags), each running a stand-in step
(jobtriggers.local.chain_step) that writes plausible outputs of its workflow's declared types under
their declared names. It registers and tags one `metagenome_sequencing_activity_set` object, draws
the chain live as it unfolds (the tree of `jobtriggers jobs tree`, and a progress bar), then the
final tree and the MAGs job's inputs, and stops everything: within `--timeout` seconds whatever
happens. The root's other job, metag-1.0.0 (upstream's all-in-one workflow), has no worker here and
stays pending; the demo does not wait for it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import typer
from rich.console import Group
from rich.live import Live
from rich.panel import Panel
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from jobtriggers.cli.common import console, err_console
from jobtriggers.cli.jobs_tree import render_chain
from jobtriggers.models import Job
from jobtriggers.models.lineage import Chain

CHAIN = ("readqc-1.0.6", "mgasm-1.0.3", "mgrba-1.0.2", "mgann-1.0.0", "mags-1.0.4")
ROOT_TYPE = "metagenome_sequencing_activity_set"
NO_WORKER = "no worker in this demo: it stays pending"
STEP = (sys.executable, "-m", "jobtriggers.local.chain_step")


def _workers(
    runtime: Any, creds: dict[str, str], log_dir: Path, step_seconds: float
) -> list[subprocess.Popen[str]]:
    """One `jobtriggers site work` per workflow of the chain, as a site would run them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBTRIGGERS_", "AWS_"))}
    env.update(
        JOBTRIGGERS_URL=runtime.base_url,
        JOBTRIGGERS_CLIENT_ID=creds["client_id"],
        JOBTRIGGERS_CLIENT_SECRET=creds["client_secret"],
        CHAIN_STEP_SECONDS=str(step_seconds),
        HOME=str(log_dir),  # no ~/.config/jobtriggers/site.toml of the machine's
    )
    jobtriggers = str(Path(sys.executable).parent / "jobtriggers")
    procs = []
    for wf in CHAIN:
        log = (log_dir / f"{wf}.log").open("w")
        procs.append(
            subprocess.Popen(
                [jobtriggers, "site", "work", "--workflow", wf, "--wait", "0.5", "--json", "--", *STEP],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    return procs


def _tag_root(runtime: Any, creds: dict[str, str]) -> str:
    """Register a sequencing object over the API and tag it, as a site does."""
    import httpx

    with httpx.Client(base_url=runtime.base_url, timeout=30) as http:
        token = http.post(
            "/token",
            data={
                "grant_type": "client_credentials",
                "client_id": creds["client_id"],
                "client_secret": creds["client_secret"],
            },
        ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        body = {
            "name": "nmdc_demo_reads.fastq.gz",
            "description": "Raw sequencing reads (a stand-in)",
            "size": 2_431_000_000,
            "checksums": [{"type": "sha256", "checksum": uuid.uuid4().hex * 2}],
            "created_time": "2025-01-01T00:00:00Z",
            "access_methods": [{"access_url": {"url": "https://data.example.org/demo/reads.fastq.gz"}}],
        }
        r = http.post("/objects", json=body, headers=headers)
        r.raise_for_status()
        root = str(r.json()["id"])
        http.put(f"/objects/{root}/types", json=[ROOT_TYPE], headers=headers).raise_for_status()
    return root


def _chain_now(root: str) -> Chain | None:
    from jobtriggers import wiring
    from jobtriggers.errors import NotFoundError

    try:
        return wiring.lineage().chain(root)
    except NotFoundError:
        return None


def _view(root: str, chain: Chain | None, progress: Progress, started: float) -> Group:
    if chain is None:
        body: Any = f"tagged {root} as {ROOT_TYPE}; waiting for its jobs ..."
    else:
        notes = {j.id: NO_WORKER for j in chain.jobs if j.workflow_id not in CHAIN}
        body = render_chain(chain, notes)
    title = f"NMDC's metagenome chain, running by itself ({time.monotonic() - started:.0f}s)"
    return Group(Panel(body, title=title, border_style="blue"), progress)


def demo(
    timeout: float = typer.Option(
        180.0, "--timeout", min=10, help="stop after this many seconds, done or not"
    ),
    step_seconds: float = typer.Option(
        1.0, "--step-seconds", min=0, help="how long each stand-in step works"
    ),
) -> None:
    """Run NMDC's metagenome chain from one tag to a finished MAGs job on the local runtime, with one
    `site work` worker per workflow, and draw it live. Stops by itself."""
    import logging

    from jobtriggers.local.runtime import LocalConfig, LocalRuntime
    from jobtriggers.observability import logger

    # The runtime's own seed load logs with Powertools too: keep the terminal for the chain.
    logging.basicConfig(level=logging.WARNING)
    logger.setLevel(logging.WARNING)
    started = time.monotonic()
    log_dir = Path(tempfile.mkdtemp(prefix="jobtriggers-demo-"))
    console.print(
        "[bold]jobtriggers demo[/bold]: starting the local runtime (moto, functions, stream poller) ..."
    )
    runtime = LocalRuntime(
        LocalConfig(
            port=0,
            dynamodb_port=0,
            table_prefix=f"demo{uuid.uuid4().hex[:6]}",
            log_level="WARNING",
            echo_function_logs=False,
        )
    )
    runtime.start(restore_environment=True)
    workers: list[subprocess.Popen[str]] = []
    root: str | None = None
    final: Chain | None = None
    finished = False
    try:
        creds = runtime.create_site("demo-site")
        console.print(
            f"API on {runtime.base_url}; starting one `jobtriggers site work` per workflow "
            f"({', '.join(CHAIN)}); their logs in {log_dir}"
        )
        workers = _workers(runtime, creds, log_dir, step_seconds)
        root = _tag_root(runtime, creds)
        progress = Progress(
            TextColumn("chain jobs done"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
        )
        task = progress.add_task("chain", total=len(CHAIN))
        deadline = started + timeout
        # transient: the live view gives way to the final tree once the chain is done
        view = _view(root, None, progress, started)
        with Live(view, console=console, refresh_per_second=4, transient=True) as live:
            while time.monotonic() < deadline:
                chain = _chain_now(root)
                done = {j.workflow_id for j in (chain.jobs if chain else []) if j.status == "done"}
                progress.update(task, completed=len(done & set(CHAIN)))
                live.update(_view(root, chain, progress, started))
                if set(CHAIN) <= done:
                    finished = True
                    break
                if any(w.poll() is not None for w in workers):
                    break  # a worker stopped: it says why in its log
                time.sleep(0.25)
    finally:
        for w in workers:
            w.terminate()  # SIGTERM: a worker stops as on Ctrl-C (releasing a job it holds)
        for w in workers:
            try:
                w.wait(timeout=20)
            except subprocess.TimeoutExpired:
                w.kill()
        final = _chain_now(root) if root else None
        mags = _mags_job(final)  # read while the tables are still there
        runtime.stop()
    if final is not None:
        _summary(final, mags)
    elapsed = time.monotonic() - started
    if not finished:
        err_console.print(
            f"[red]the chain did not finish within {timeout:.0f}s[/red]; the workers' logs are in {log_dir}"
        )
        raise typer.Exit(1)
    console.print(f"[green]done[/green] in {elapsed:.0f}s; everything stopped.")


def _mags_job(chain: Chain | None) -> Job | None:
    from jobtriggers import wiring

    mags = next((j for j in chain.jobs if j.workflow_id == "mags-1.0.4"), None) if chain else None
    return wiring.jobs().find(mags.id) if mags else None


def _summary(chain: Chain, job: Job | None) -> None:
    notes = {j.id: NO_WORKER for j in chain.jobs if j.workflow_id not in CHAIN}
    console.print(render_chain(chain, notes))
    if job is None:
        return
    by_workflow = Counter(i.workflow_id or "the root object" for i in job.inputs)
    named = ", ".join(
        f"{i.output_name} ({i.workflow_id})"
        for i in job.inputs
        if i.output_name in ("sr_contig", "sr_bam", "functional_gff", "proteins_faa")
    )
    console.print(
        f"The MAGs job was made from {job.object_id} (an output of {job.parent_job_id}) and sees "
        f"{len(job.inputs)} inputs: "
        + ", ".join(f"{n} from {wf}" for wf, n in by_workflow.items())
        + f"; by name, e.g. {named}."
    )
    outputs = sum(len(j.outputs) for j in chain.jobs)
    console.print(
        f"{len(chain.jobs)} jobs, {outputs} output objects, each registered with its job's completion "
        "in one transaction. Try it yourself: `make run`, then `jobtriggers jobs tree <object id>`."
    )
