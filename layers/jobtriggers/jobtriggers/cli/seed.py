"""`jobtriggers seed ...` and `jobtriggers reconcile`: the registry in seed/, and repairs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.tree import Tree

from jobtriggers.cli.common import (
    EndpointOption,
    JsonOption,
    StackOption,
    configure_store,
    console,
    fail,
    fail_from,
    print_json,
    print_table,
    reported_errors,
)
from jobtriggers.errors import SeedError

app = typer.Typer(no_args_is_help=True, help="Validate, compare and load the registry in seed/.")

SeedPath = typer.Argument(
    Path("seed"), help="seed/ directory (one JSON file per kind) or one registry JSON document"
)


def _load(path: Path) -> Any:
    from jobtriggers.logic.seed import load_seed_dir, registry_from_document

    if path.is_dir():
        return load_seed_dir(path)
    if not path.exists():
        fail(f"{path} does not exist")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SeedError([f"{path}: not valid JSON: {exc.msg} at line {exc.lineno}"]) from exc
    if not isinstance(doc, dict):
        raise SeedError([f"{path}: a registry document is an object with object_types, workflows, ..."])
    return registry_from_document(doc, source=str(path))


@app.command("check")
def check(path: Path = SeedPath, as_json: bool = JsonOption) -> None:
    """Validate seed/: unique ids, required fields, every trigger naming a defined type and workflow,
    every output type defined, no trigger/output cycle."""
    try:
        registry = _load(path)
    except SeedError as exc:
        if as_json:
            print_json({"valid": False, "problems": exc.detail})
            raise typer.Exit(1) from exc
        fail_from(exc)
    counts = {k: len(v) for k, v in registry.entries().items()}
    outputs = sum(len(w.outputs) for w in registry.workflows)
    if as_json:
        print_json(
            {
                "valid": True,
                "counts": counts,
                "workflow_outputs": outputs,
                "content_hash": registry.content_hash(),
            }
        )
        return
    print_table(
        [{"object type": t.object_type_id, "workflow": t.workflow_id} for t in registry.triggers],
        ["object type", "workflow"],
        title=f"{path}: {len(registry.triggers)} triggers",
    )
    chains = _chains_tree(registry)
    if chains is not None:
        console.print(chains)
    console.print(
        f"[green]valid[/green]: {counts['object_type']} object types, {counts['workflow']} workflows "
        f"({outputs} outputs, no trigger/output cycle), {counts['capability']} capabilities, "
        f"{counts['trigger']} triggers (content hash {registry.content_hash()[:12]})"
    )


def _chains_tree(registry: Any) -> Tree | None:
    """Each chain as a tree: type → the workflows it triggers → their output types that trigger more.

    Called on a registry that passed the check, so there is no cycle and the recursion ends.
    """
    from jobtriggers.logic.chains import chain_links, chain_roots

    links = chain_links(registry.workflows, registry.triggers)
    workflows = {w.id: w for w in registry.workflows}
    triggered: dict[str, list[str]] = {}
    for t in registry.triggers:
        triggered.setdefault(t.object_type_id, []).append(t.workflow_id)

    def add_workflow(parent: Tree, workflow_id: str) -> None:
        n = len(workflows[workflow_id].outputs)
        onward = sorted({ot for ot, _ in links[workflow_id]})
        note = (
            f"{n} outputs" if onward else f"{n} outputs; they trigger nothing" if n else "no outputs declared"
        )
        node = parent.add(f"[bold]{workflow_id}[/bold] [dim]({note})[/dim]")
        for object_type in onward:
            add_type(node, object_type)

    def add_type(parent: Tree, object_type: str) -> None:
        node = parent.add(f"[cyan]{object_type}[/cyan]")
        for workflow_id in sorted(triggered[object_type]):
            add_workflow(node, workflow_id)

    roots = chain_roots(registry.workflows, registry.triggers)
    if not roots:
        return None
    tree = Tree("chains: what a finished job's outputs trigger")
    for object_type in roots:
        add_type(tree, object_type)
    return tree


@app.command("diff")
def diff(
    path: Path = SeedPath,
    endpoint_url: str | None = EndpointOption,
    stack: str | None = StackOption,
    as_json: bool = JsonOption,
) -> None:
    """What `seed load` (or the next `sam deploy`) would change in the registry tables."""
    from jobtriggers import wiring
    from jobtriggers.logic.seed import diff_registry

    configure_store(endpoint_url, stack)
    with reported_errors():
        registry = _load(path)
        changes = diff_registry(registry, wiring.registry())
    summary = changes.summary()
    if as_json:
        print_json(summary)
        return
    rows = [
        {
            "kind": kind,
            "added": ", ".join(summary["added"][kind]),
            # what changed in each: `mgasm-1.0.3 (outputs)`
            "changed": ", ".join(
                f"{i} ({', '.join(changes.changed_fields[kind][i])})" for i in summary["changed"][kind]
            ),
            "removed": ", ".join(summary["removed"][kind]),
            "unchanged": summary["unchanged"][kind],
        }
        for kind in summary["added"]
    ]
    print_table(rows, ["kind", "added", "changed", "removed", "unchanged"], title="registry changes")


@app.command("load")
def load(
    path: Path = SeedPath,
    endpoint_url: str | None = EndpointOption,
    stack: str | None = StackOption,
    as_json: bool = JsonOption,
) -> None:
    """Load seed/ into the registry as a deploy does: upsert, delete what is gone, backfill new triggers."""
    from jobtriggers import wiring
    from jobtriggers.logic.seed import sync_registry

    configure_store(endpoint_url, stack)
    registry = wiring.registry()
    with reported_errors():
        wanted = _load(path)
        with _progress(as_json) as progress:
            task = progress.add_task("loading", total=None)

            def tick(kind: str, entry_id: str) -> None:
                progress.update(task, advance=1, description=f"{kind} {entry_id}")

            report = sync_registry(wanted, registry, wiring.backfill_engine(), wiring.assignments(), tick)
    if as_json:
        print_json(report.summary())
        return
    summary = report.summary()
    for key in ("added", "changed", "removed"):
        n = sum(len(v) for v in summary[key].values())
        console.print(f"{key}: {n}")
    console.print(
        f"jobs backfilled: {sum(report.backfilled.values())} ({report.backfilled or 'no new triggers'})"
    )


def reconcile(
    trigger: list[str] = typer.Option(None, "--trigger", help="Only these trigger ids (repeatable)"),
    endpoint_url: str | None = EndpointOption,
    stack: str | None = StackOption,
    as_json: bool = JsonOption,
) -> None:
    """Make sure every object carrying a triggered type has its jobs (conditional puts: safe to repeat).

    The way back from stream dead letters: their records carry only shard and sequence numbers,
    so the object-type table, read through its type index, is the truth to reconcile from.
    """
    from jobtriggers import wiring
    from jobtriggers.logic.reconcile import reconcile_triggers, select_triggers

    configure_store(endpoint_url, stack)
    registry = wiring.registry()
    with reported_errors():
        triggers = select_triggers(registry, trigger)
        with _progress(as_json) as progress:

            def per_trigger(t: Any) -> Any:
                task = progress.add_task(t.id, total=None)

                def tick(seen: int, created: int) -> None:
                    progress.update(
                        task, completed=seen, description=f"{t.id}: {seen} objects, {created} new jobs"
                    )

                return tick

            results = reconcile_triggers(
                triggers, wiring.backfill_engine(), wiring.assignments(), per_trigger
            )
    rows = [
        {"trigger": r.trigger_id, "jobs created": r.created, "already present": r.already_present}
        for r in results
    ]
    if as_json:
        print_json(rows)
    else:
        print_table(rows, ["trigger", "jobs created", "already present"], title="reconcile")


def _progress(quiet: bool) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        disable=quiet,
        transient=True,
    )
