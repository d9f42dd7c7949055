"""seed/: validate, diff and load the registry (object types, workflows, capabilities, triggers).

The same code serves `jobtriggers seed check`, the CloudFormation seeder and the local runtime.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError

from jobtriggers.errors import SeedError
from jobtriggers.logic.chains import describe_cycle, trigger_cycles
from jobtriggers.logic.reconcile import Backfiller
from jobtriggers.logic.triggering import BACKFILL_DELAY_SECONDS, TaggedObjects
from jobtriggers.models import REGISTRY_MODELS, Capability, ObjectType, Trigger, Workflow
from jobtriggers.observability import logger

# One human-edited file per kind, in this order (a trigger needs its type and workflow first).
SEED_FILES: dict[str, str] = {
    "object_type": "object_types.json",
    "workflow": "workflows.json",
    "capability": "capabilities.json",
    "trigger": "triggers.json",
}
DOC_KEYS = {
    "object_type": "object_types",
    "workflow": "workflows",
    "capability": "capabilities",
    "trigger": "triggers",
}
# Fields that ../shared/reference's extraction added to explain the data; not part of the registry.
EXTRACTION_ONLY_FIELDS = frozenset(
    {"workflow_defined", "object_type_defined", "generated_from_nmdc_schema", "description_intended"}
)


class Registry(BaseModel):
    object_types: list[ObjectType]
    workflows: list[Workflow]
    capabilities: list[Capability]
    triggers: list[Trigger]

    def entries(self) -> dict[str, list[Any]]:
        return {
            "object_type": list(self.object_types),
            "workflow": list(self.workflows),
            "capability": list(self.capabilities),
            "trigger": list(self.triggers),
        }

    def content_hash(self) -> str:
        body = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(body.encode()).hexdigest()


def _describe(err: Mapping[str, Any]) -> str:
    loc = ".".join(str(p) for p in err.get("loc", ()))
    return f"{loc}: {err.get('msg')}" if loc else str(err.get("msg"))


def registry_from_document(doc: Mapping[str, Any], source: str = "registry") -> Registry:
    """Validate a whole registry; raise SeedError listing every problem found, not just the first."""
    problems: list[str] = []
    parsed, invalid = _parse_entries(doc, source, problems)
    problems += _reference_problems(parsed, invalid, source)
    problems += _cycle_problems(parsed["workflow"], parsed["trigger"], source)
    if problems:
        raise SeedError(problems)
    return Registry(
        object_types=parsed["object_type"],
        workflows=parsed["workflow"],
        capabilities=parsed["capability"],
        triggers=parsed["trigger"],
    )


def _parse_entries(
    doc: Mapping[str, Any], source: str, problems: list[str]
) -> tuple[dict[str, list[Any]], dict[str, set[str]]]:
    """Each kind's valid entries, and the ids of entries that failed validation (their problems are
    appended to `problems`), so that a reference to one is not also reported as undefined."""
    parsed: dict[str, list[Any]] = {}
    invalid: dict[str, set[str]] = {kind: set() for kind in DOC_KEYS}
    for kind, key in DOC_KEYS.items():
        raw = doc.get(key)
        if not isinstance(raw, list):
            problems.append(f"{source}: '{key}' must be a list of {kind.replace('_', ' ')}s")
            parsed[kind] = []
            continue
        entries: list[Any] = []
        ids: dict[str, int] = {}
        for n, entry in enumerate(raw):
            where = f"{source}: {key}[{n}]" + (f" ({entry.get('id')})" if isinstance(entry, dict) else "")
            if not isinstance(entry, dict):
                problems.append(f"{where}: must be an object")
                continue
            clean = {k: v for k, v in entry.items() if k not in EXTRACTION_ONLY_FIELDS}
            try:
                model = REGISTRY_MODELS[kind].model_validate(clean)
            except ValidationError as exc:
                problems += [f"{where}: {_describe(e)}" for e in exc.errors()]
                if isinstance(entry.get("id"), str):
                    invalid[kind].add(entry["id"])
                continue
            if model.id in ids:  # type: ignore[attr-defined]
                problems.append(f"{where}: duplicate id '{model.id}' (first at index {ids[model.id]})")  # type: ignore[attr-defined]
                continue
            ids[model.id] = n  # type: ignore[attr-defined]
            entries.append(model)
        parsed[kind] = entries
    return parsed, invalid


def _reference_problems(parsed: dict[str, list[Any]], invalid: dict[str, set[str]], source: str) -> list[str]:
    """Every reference to an object type, workflow or capability that is not (validly) defined."""
    defined = {kind: {e.id for e in entries} for kind, entries in parsed.items()}

    def missing(kind: str, entry_id: str) -> str | None:
        if entry_id in defined[kind]:
            return None
        return "which is invalid (see above)" if entry_id in invalid[kind] else "which is not defined"

    problems: list[str] = []
    for t in parsed["trigger"]:
        if why := missing("object_type", t.object_type_id):
            problems.append(f"{source}: trigger '{t.id}' names object type '{t.object_type_id}', {why}")
        if why := missing("workflow", t.workflow_id):
            problems.append(f"{source}: trigger '{t.id}' names workflow '{t.workflow_id}', {why}")
    for w in parsed["workflow"]:
        for c in w.capability_ids:
            if why := missing("capability", c):
                problems.append(f"{source}: workflow '{w.id}' needs capability '{c}', {why}")
        for output in w.outputs:
            for ot in output.object_types:
                if why := missing("object_type", ot):
                    problems.append(
                        f"{source}: workflow '{w.id}' output '{output.name}' has object type '{ot}', {why}"
                    )
    return problems


def _cycle_problems(workflows: list[Workflow], triggers: list[Trigger], source: str) -> list[str]:
    cycles, more = trigger_cycles(workflows, triggers)
    problems = [
        f"{source}: trigger/output cycle {describe_cycle(c)}: each job's outputs would start the next "
        "job, without end; break it by removing one of its output types or one of its triggers"
        for c in cycles
    ]
    if more:
        problems.append(f"{source}: more trigger/output cycles than the {len(cycles)} named above")
    return problems


def load_seed_dir(path: str | Path) -> Registry:
    """Read seed/ (one JSON file per kind) and validate it as one registry."""
    root = Path(path)
    doc: dict[str, Any] = {}
    problems: list[str] = []
    for kind, name in SEED_FILES.items():
        file = root / name
        try:
            doc[DOC_KEYS[kind]] = json.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            problems.append(f"{file}: missing (seed/ needs {', '.join(SEED_FILES.values())})")
        except json.JSONDecodeError as exc:
            problems.append(f"{file}: not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}")
    if problems:
        raise SeedError(problems)
    return registry_from_document(doc, source=str(root))


class RegistryWriter(Protocol):
    def list_all(self, kind: str) -> list[Any]: ...
    def put(self, kind: str, entry: BaseModel) -> None: ...
    def delete(self, kind: str, entry_id: str) -> None: ...


@dataclass
class SeedDiff:
    """What loading a registry changes, per kind: ids added, changed, removed, unchanged; and per
    changed entry, the fields that differ (`changed_fields[kind][id]`, e.g. `["outputs"]`)."""

    added: dict[str, list[str]] = field(default_factory=dict)
    changed: dict[str, list[str]] = field(default_factory=dict)
    removed: dict[str, list[str]] = field(default_factory=dict)
    unchanged: dict[str, int] = field(default_factory=dict)
    changed_fields: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "changed": self.changed,
            "removed": self.removed,
            "unchanged": self.unchanged,
            "changed_fields": self.changed_fields,
        }


def diff_registry(registry: Registry, store: RegistryWriter) -> SeedDiff:
    diff = SeedDiff()
    for kind, wanted in registry.entries().items():
        have = {e.id: e for e in store.list_all(kind)}
        want = {e.id: e for e in wanted}
        diff.added[kind] = sorted(set(want) - set(have))
        diff.removed[kind] = sorted(set(have) - set(want))
        diff.changed[kind] = sorted(i for i in set(want) & set(have) if want[i] != have[i])
        diff.unchanged[kind] = len(set(want) & set(have)) - len(diff.changed[kind])
        diff.changed_fields[kind] = {i: _fields_that_differ(want[i], have[i]) for i in diff.changed[kind]}
    return diff


def _fields_that_differ(a: BaseModel, b: BaseModel) -> list[str]:
    return [name for name in type(a).model_fields if getattr(a, name) != getattr(b, name)]


def apply_registry(
    registry: Registry,
    store: RegistryWriter,
    progress: Callable[[str, str], None] | None = None,
) -> SeedDiff:
    """Upsert what seed/ has, delete what it no longer has. Jobs already made are left alone.

    Order keeps references whole while it runs: types, workflows and capabilities before the
    triggers that name them; obsolete triggers deleted before what they named.
    """
    diff = diff_registry(registry, store)
    entries = registry.entries()
    by_id = {kind: {e.id: e for e in items} for kind, items in entries.items()}
    for kind in ("object_type", "workflow", "capability", "trigger"):
        for entry_id in diff.added[kind] + diff.changed[kind]:
            store.put(kind, by_id[kind][entry_id])
            if progress:
                progress(kind, entry_id)
    for kind in ("trigger", "capability", "workflow", "object_type"):
        for entry_id in diff.removed[kind]:
            store.delete(kind, entry_id)
            if progress:
                progress(kind, entry_id)
    return diff


@dataclass
class SyncReport:
    """What one seed load did: the registry diff and the jobs backfill made per new trigger."""

    diff: SeedDiff
    backfilled: dict[str, int] = field(default_factory=dict)
    content_hash: str = ""

    def summary(self) -> dict[str, Any]:
        return {**self.diff.summary(), "backfilled_jobs": self.backfilled, "content_hash": self.content_hash}


def sync_registry(
    registry: Registry,
    store: RegistryWriter,
    resolver: Backfiller,
    objects: TaggedObjects,
    progress: Callable[[str, str], None] | None = None,
    *,
    backfill_delay_seconds: float = BACKFILL_DELAY_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> SyncReport:
    """Load a registry as `sam deploy` does: upsert, delete what is gone, backfill new triggers.

    Triggers whose content changed are backfilled too (a trigger re-pointed at another type is a
    new link); backfill is conditional puts, so a repeat costs reads but makes nothing twice.

    The backfill starts `backfill_delay_seconds` after the triggers were written: a warm
    TriggerEngine may resolve tags with a trigger set read just before the write for up to
    TRIGGER_CACHE_SECONDS, and those tags must be in the object-type index (which lags its table)
    by the time the backfill reads it (docs/architecture.md, "A new trigger and a tag at the same
    time"). Pass 0 only where no TriggerEngine can be running (nothing can have read the set).
    """
    diff = apply_registry(registry, store, progress)
    written_at = clock()
    report = SyncReport(diff=diff, content_hash=registry.content_hash())
    to_backfill = set(diff.added["trigger"]) | set(diff.changed["trigger"])
    if to_backfill and backfill_delay_seconds > 0:
        wait = written_at + backfill_delay_seconds - clock()
        if wait > 0:
            logger.info(
                "waiting before the backfill, so that no tag falls between the stream and it",
                extra={"seconds": round(wait, 3), "triggers": sorted(to_backfill)},
            )
            sleep(wait)
    for trigger in registry.triggers:
        if trigger.id in to_backfill:
            result = resolver.backfill(trigger, objects)
            report.backfilled[trigger.id] = len(result.created)
            if progress:
                progress("backfill", trigger.id)
    return report
