"""The `jobtriggers` command: operators (seed, sites, jobs, reconcile, local) and people at sites (site ...).

Each group lives in its own module; this one only assembles them.
"""

from __future__ import annotations

import typer

from jobtriggers.board.cli import board as board_command
from jobtriggers.cli import demo, jobs, jobs_tree, local, seed, site_admin, site_jobs, worker

app = typer.Typer(
    name="jobtriggers",
    help="Workflow-job triggering for the NMDC Runtime: registry, sites, jobs and the local runtime.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold secrets
)
app.add_typer(seed.app, name="seed")
app.add_typer(site_admin.app, name="sites")
jobs.app.command("tree")(jobs_tree.tree)
app.add_typer(jobs.app, name="jobs")
site_jobs.app.command("work", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(
    worker.work
)
app.add_typer(site_jobs.app, name="site")
app.command("reconcile")(seed.reconcile)
app.command("local")(local.local)
app.command("demo")(demo.demo)
app.command("board")(board_command)
