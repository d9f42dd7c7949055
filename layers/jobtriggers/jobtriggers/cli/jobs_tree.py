"""`jobtriggers jobs tree ROOT_OBJECT_ID`: a chain of jobs drawn as a tree, each with its status and
duration, from one Query of the jobs' by_root index (logic/lineage.py).

`render_chain` is shared with `make demo`, which draws the same tree live while the chain runs.
"""

from __future__ import annotations

import typer
from rich.text import Text
from rich.tree import Tree

from jobtriggers.cli.common import (
    EndpointOption,
    JsonOption,
    StackOption,
    configure_store,
    console,
    print_json,
    reported_errors,
)
from jobtriggers.models.lineage import Chain, ChainJob

STATUS_STYLE = {
    "pending": "yellow",
    "claimed": "cyan",
    "done": "green",
    "failed": "red",
    "cancelled": "magenta",
}


def duration_text(seconds: float | None) -> str:
    """1.2s, 3m04s, 2h05m: short enough for a tree."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def job_label(job: ChainJob, note: str | None = None) -> Text:
    """One job: workflow, status (coloured), how long, on which object, what it made."""
    label = Text()
    label.append(job.workflow_id, style="bold")
    label.append("  ")
    label.append(job.status.value, style=STATUS_STYLE.get(job.status.value, ""))
    verb = "took" if job.finished_at else "for"
    label.append(f"  {verb} {duration_text(job.duration_seconds)}")
    label.append(f"  on {job.object_id}", style="dim")
    if job.outputs:
        label.append(f"  -> {len(job.outputs)} outputs")
    if job.site_id:
        label.append(f"  @{job.site_id}", style="dim")
    if note:
        label.append(f"  ({note})", style="italic dim")
    return label


def render_chain(chain: Chain, notes: dict[str, str] | None = None) -> Tree:
    """The chain as a rich Tree: the root object, the jobs made from it, and below each job the
    jobs made from its outputs. `notes` adds a word to some jobs (by job id)."""
    counts: dict[str, int] = {}
    for job in chain.jobs:
        counts[job.status.value] = counts.get(job.status.value, 0) + 1
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    tree = Tree(Text.assemble((chain.root_object_id, "bold"), f"  (root object; {summary})"))
    seen: set[str] = set()

    def grow(node: Tree, parent_id: str | None) -> None:
        for job in chain.children(parent_id):
            if job.id in seen:
                continue
            seen.add(job.id)
            grow(node.add(job_label(job, (notes or {}).get(job.id))), job.id)

    grow(tree, None)
    return tree


def tree(
    root_object_id: str = typer.Argument(..., help="the object the chain started from (its root)"),
    endpoint_url: str | None = EndpointOption,
    stack: str | None = StackOption,
    as_json: bool = JsonOption,
) -> None:
    """Draw the chain of jobs that started from ROOT_OBJECT_ID: each job with its status, how long
    it took (or has been waiting), its object and its outputs, below the job whose output started it."""
    from jobtriggers import wiring

    configure_store(endpoint_url, stack)
    with reported_errors():
        chain = wiring.lineage().chain(root_object_id)
    if as_json:
        print_json(chain.model_dump(mode="json"))
        return
    console.print(render_chain(chain))
