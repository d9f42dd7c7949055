"""Chains: a workflow's outputs carry object types, and triggers turn those types into the next jobs.

The registry makes a graph: workflow → (output) object type → (trigger) workflow. `seed check`
refuses any cycle in it, since each finished job would start the next one without end (every output
is a new object, so no job key ever repeats to stop it). What stays is a DAG.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from jobtriggers.models import Trigger, Workflow

# A registry with a cycle is refused anyway; naming more than this many is noise, not help.
MAX_CYCLES_NAMED = 20

Link = tuple[str, str]  # (object type id, workflow id): an output type and a workflow it triggers


def chain_links(workflows: Iterable[Workflow], triggers: Iterable[Trigger]) -> dict[str, list[Link]]:
    """For each workflow id, the (object type, next workflow) pairs its outputs trigger, sorted.

    Triggers naming a workflow not in `workflows` still count (a loader reports them as dangling).
    """
    triggered: dict[str, set[str]] = defaultdict(set)
    for t in triggers:
        triggered[t.object_type_id].add(t.workflow_id)
    return {
        w.id: sorted((ot, nxt) for ot in w.output_object_types() for nxt in triggered.get(ot, ()))
        for w in workflows
    }


def chain_roots(workflows: Iterable[Workflow], triggers: Iterable[Trigger]) -> list[str]:
    """Object types that start a chain: they trigger a workflow whose outputs trigger another, and
    no workflow outputs them (someone outside tags them: the sequencing data arrives), sorted."""
    workflows, triggers = list(workflows), list(triggers)
    links = chain_links(workflows, triggers)
    produced = {ot for w in workflows for ot in w.output_object_types()}
    return sorted(
        {t.object_type_id for t in triggers if links.get(t.workflow_id) and t.object_type_id not in produced}
    )


def trigger_cycles(
    workflows: Iterable[Workflow], triggers: Iterable[Trigger], limit: int = MAX_CYCLES_NAMED
) -> tuple[list[list[str]], bool]:
    """Every elementary trigger/output cycle, each once, as a path `[w1, type, w2, ..., w1]`.

    A cycle is named from its smallest workflow id (so each appears once, however it is entered);
    no workflow and no object type repeats inside it. Returns at most `limit` cycles, and whether
    there were more.
    """
    links = chain_links(workflows, triggers)
    found: list[list[str]] = []
    for start in sorted(links):
        if _cycles_from(start, links, found, limit):
            return found[:limit], True
    return found, False


def _cycles_from(start: str, links: dict[str, list[Link]], found: list[list[str]], limit: int) -> bool:
    """Append the cycles whose smallest workflow is `start`; True once more than `limit` are found.

    A depth-first walk through workflows above `start` that can still get back to it (so it never
    walks into a branch that cannot close a cycle). An id may name both an object type and a
    workflow (`test`): the path's workflows and types are kept apart.
    """
    returns = _can_reach(start, links)
    path = [start]

    def walk(at: str, on_path: set[str], used_types: set[str]) -> bool:
        for object_type, nxt in links.get(at, ()):
            if object_type in used_types:
                continue
            if nxt == start:
                found.append([*path, object_type, start])
                if len(found) > limit:
                    return True
            elif nxt > start and nxt in returns and nxt not in on_path:
                path.extend([object_type, nxt])
                stop = walk(nxt, on_path | {nxt}, used_types | {object_type})
                del path[-2:]
                if stop:
                    return True
        return False

    return walk(start, {start}, set())


def _can_reach(start: str, links: dict[str, list[Link]]) -> set[str]:
    """Workflows not below `start` from which `start` is reachable through such workflows."""
    back: dict[str, set[str]] = defaultdict(set)
    for wf, out in links.items():
        for _, nxt in out:
            back[nxt].add(wf)
    seen = {start}
    todo = [start]
    while todo:
        for prev in back[todo.pop()]:
            if prev >= start and prev not in seen:
                seen.add(prev)
                todo.append(prev)
    return seen


def describe_cycle(path: list[str]) -> str:
    return " → ".join(path)
