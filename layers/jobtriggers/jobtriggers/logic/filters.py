"""`filter` and `projection` of the list routes: the MongoDB query subset NMDC's clients send.

The NMDC Runtime passes `filter` to MongoDB's `find()`. Its clients (the site client, and
nmdc_automation's scheduler and watcher) send equalities on config fields and this watcher query:

    {"$and": [{"workflow.id": {"$in": [...]}},
              {"$or": [{"claims": {"$size": 0}},
                       {"claims": {"$not": {"$elemMatch": {"cancelled": {"$ne": true}}}}}]}]}

Here a filter is checked against an allow-list of operators (anything else is a 422 naming it), and
evaluated on each candidate document by mongomock's matcher (MongoDB's semantics for missing fields,
arrays and type bracketing; no query engine of our own). What the filter *requires* of a field
(equalities and `$in`, at the top or under `$and`) is extracted so the caller can choose the index that
yields the fewest candidates.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from jobtriggers.errors import ValidationFailed

# The subset NMDC's clients use. `$regex` is left out on purpose: a pattern is a denial-of-service
# vector, and no NMDC client sends one.
LOGICAL_OPERATORS = frozenset({"$and", "$or", "$nor"})
FIELD_OPERATORS = frozenset(
    {
        "$eq",
        "$ne",
        "$in",
        "$nin",
        "$gt",
        "$gte",
        "$lt",
        "$lte",
        "$exists",
        "$size",
        "$elemMatch",
        "$all",
        "$not",
    }
)
SUPPORTED_OPERATORS = LOGICAL_OPERATORS | FIELD_OPERATORS
# Bounds on what one filter may ask (the query string is bounded too): nesting and size.
MAX_DEPTH = 12
MAX_NODES = 400
MAX_IN_VALUES = 100
MAX_PATH_LENGTH = 256
MAX_PROJECTION_FIELDS = 50

_EXAMPLE = '{"workflow.id": {"$in": ["metag-1.0.0"]}}'


def _invalid(message: str, loc: tuple[str, ...]) -> ValidationFailed:
    return ValidationFailed(message, loc=list(loc))


def _supported_list() -> str:
    return " ".join(sorted(SUPPORTED_OPERATORS))


@dataclass(frozen=True)
class Filter:
    """A validated filter document; `{}` matches everything."""

    document: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_empty(self) -> bool:
        return not self.document

    def matches(self, doc: Mapping[str, Any]) -> bool:
        """Whether a served document (JSON-shaped: dicts, lists, str, numbers, bools, None) matches."""
        if not self.document:
            return True
        return _matcher()(dict(self.document), doc)

    def required_values(self, path: str, kinds: tuple[type, ...] = (str,)) -> frozenset[Any] | None:
        """The values `path` must hold in every matching document (equality or `$in` on it, at the top
        level or under `$and`), or None when the filter does not pin it down. Only values of `kinds`
        count (strings: what index keys hold; `null` would also match a missing field)."""
        found: frozenset[Any] | None = None
        for constraint in _conjuncts(self.document):
            values = constraint.get(path, _ABSENT)
            if values is _ABSENT:
                continue
            pinned = _pinned_values(values, kinds)
            if pinned is None:
                continue
            found = pinned if found is None else found & pinned
        return found


_ABSENT = object()


def _conjuncts(document: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
    """The documents every match must satisfy: the filter itself and each `$and` member, recursively."""
    yield document
    for member in document.get("$and", ()):
        if isinstance(member, Mapping):
            yield from _conjuncts(member)


def _pinned_values(condition: Any, kinds: tuple[type, ...] = (str,)) -> frozenset[Any] | None:
    def one(value: Any) -> bool:
        return isinstance(value, kinds) and (bool in kinds or not isinstance(value, bool))

    if one(condition):
        return frozenset({condition})
    if not isinstance(condition, Mapping) or not condition:
        return None
    keys = set(condition)
    if not all(isinstance(k, str) and k.startswith("$") for k in keys):
        return None  # an exact sub-document, not a value an index holds
    pinned: frozenset[Any] | None = None
    if "$eq" in condition:
        value = condition["$eq"]
        pinned = frozenset({value}) if one(value) else None
        if pinned is None:
            return None
    if "$in" in condition:
        values = condition["$in"]
        if not isinstance(values, list) or not all(one(v) for v in values):
            return None
        pinned = frozenset(values) if pinned is None else pinned & frozenset(values)
    return pinned


def parse_filter(raw: str | None, loc: tuple[str, ...] = ("query", "filter")) -> Filter:
    """The `filter` query parameter as a Filter; a 422 that names what is wrong otherwise."""
    if raw is None or not raw.strip():
        return Filter()
    try:
        document = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise _invalid(f"filter is not valid JSON ({exc.msg}); send e.g. {_EXAMPLE}", loc) from exc
    if not isinstance(document, dict):
        raise _invalid(f"filter must be a JSON object such as {_EXAMPLE}", loc)
    _Checker(loc).check_document(document, depth=0)
    return Filter(document)


class _Checker:
    """Walks a filter once: every operator is in the subset and used with the right operand shape."""

    def __init__(self, loc: tuple[str, ...]) -> None:
        self.loc = loc
        self.nodes = 0

    def _count(self, depth: int) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _invalid(f"filter is too large: at most {MAX_NODES} conditions", self.loc)
        if depth > MAX_DEPTH:
            raise _invalid(f"filter is nested too deeply: at most {MAX_DEPTH} levels", self.loc)

    def _unsupported(self, op: str) -> ValidationFailed:
        return _invalid(
            f"filter operator {op} is not supported; the supported operators are {_supported_list()}",
            self.loc,
        )

    def check_document(self, document: Mapping[str, Any], depth: int) -> None:
        """A query document: field conditions and logical operators."""
        for key, value in document.items():
            self._count(depth)
            if not isinstance(key, str) or not key:
                raise _invalid("filter field names must be non-empty strings", self.loc)
            if key.startswith("$"):
                if key not in LOGICAL_OPERATORS:
                    raise self._unsupported(key)
                if not isinstance(value, list) or not value:
                    raise _invalid(f"{key} takes a non-empty list of filter documents", self.loc)
                for member in value:
                    if not isinstance(member, dict):
                        raise _invalid(
                            f"each member of {key} must be a filter document (an object)", self.loc
                        )
                    self.check_document(member, depth + 1)
            else:
                self._check_path(key)
                self.check_condition(key, value, depth + 1)

    def _check_path(self, path: str) -> None:
        if len(path) > MAX_PATH_LENGTH or any(not part for part in path.split(".")):
            raise _invalid(
                f"filter field '{path[:80]}' is not a dotted path such as config.git_repo", self.loc
            )

    def check_condition(self, path: str, condition: Any, depth: int) -> None:
        """What a field must satisfy: a value (equality), or an object of operators."""
        if isinstance(condition, dict) and any(isinstance(k, str) and k.startswith("$") for k in condition):
            if not all(isinstance(k, str) and k.startswith("$") for k in condition):
                raise _invalid(
                    f"the condition on '{path}' mixes operators and fields; use one or the other", self.loc
                )
            for op, operand in condition.items():
                self._count(depth)
                self._check_operator(path, op, operand, depth)
        else:
            self._check_value(condition, depth)

    def _check_operator(self, path: str, op: str, operand: Any, depth: int) -> None:
        if op not in FIELD_OPERATORS:
            raise self._unsupported(op)
        if op in ("$in", "$nin", "$all"):
            if not isinstance(operand, list):
                raise _invalid(f"{op} on '{path}' takes a list of values", self.loc)
            if len(operand) > MAX_IN_VALUES:
                raise _invalid(f"{op} on '{path}' takes at most {MAX_IN_VALUES} values", self.loc)
            for value in operand:
                if op == "$all" and isinstance(value, dict) and "$elemMatch" in value:
                    self.check_condition(path, value, depth + 1)
                else:
                    self._check_value(value, depth + 1)
        elif op == "$exists":
            if not isinstance(operand, bool):
                raise _invalid(f"$exists on '{path}' takes true or false", self.loc)
        elif op == "$size":
            if isinstance(operand, bool) or not isinstance(operand, int) or operand < 0:
                raise _invalid(f"$size on '{path}' takes a whole number (0 or more)", self.loc)
        elif op == "$elemMatch":
            if not isinstance(operand, dict):
                raise _invalid(f"$elemMatch on '{path}' takes an object", self.loc)
            if any(isinstance(k, str) and k.startswith("$") for k in operand):
                self.check_condition(path, operand, depth + 1)  # {"$gt": 1}: on the elements themselves
            else:
                self.check_document(operand, depth + 1)  # {"cancelled": {"$ne": true}}: on their fields
        elif op == "$not":
            if not isinstance(operand, dict) or not operand:
                raise _invalid(
                    f"$not on '{path}' takes an object of operators, e.g. {{\"$gt\": 1}}", self.loc
                )
            if not all(isinstance(k, str) and k.startswith("$") for k in operand):
                raise _invalid(
                    f"$not on '{path}' takes operators only, e.g. {{\"$elemMatch\": ...}}", self.loc
                )
            self.check_condition(path, operand, depth + 1)
        else:  # $eq $ne $gt $gte $lt $lte
            self._check_value(operand, depth + 1)

    def _check_value(self, value: Any, depth: int) -> None:
        """A literal (JSON); an object here is an exact sub-document, whose keys may not be operators."""
        if depth > MAX_DEPTH:
            raise _invalid(f"filter is nested too deeply: at most {MAX_DEPTH} levels", self.loc)
        if isinstance(value, dict):
            for key, inner in value.items():
                if isinstance(key, str) and key.startswith("$"):
                    if key not in SUPPORTED_OPERATORS:
                        raise self._unsupported(key)
                    raise _invalid(f"operator {key} cannot appear inside a value", self.loc)
                self._check_value(inner, depth + 1)
        elif isinstance(value, list):
            for inner in value:
                self._check_value(inner, depth + 1)
        elif isinstance(value, float) and value != value:
            raise _invalid("filter values may not be NaN", self.loc)


_MATCHER: Callable[[dict[str, Any], Mapping[str, Any]], bool] | None = None


def _matcher() -> Callable[[dict[str, Any], Mapping[str, Any]], bool]:
    """mongomock's matcher, imported on first use: most requests have no filter, and its import
    (about 80 ms) would otherwise be paid by every cold start."""
    global _MATCHER
    if _MATCHER is None:
        from mongomock.filtering import filter_applies

        _MATCHER = filter_applies
    return _MATCHER


# --------------------------------------------------------------------------- projection


def parse_projection(
    raw: str | None, loc: tuple[str, ...] = ("query", "projection")
) -> tuple[str, ...] | None:
    """`projection` as the NMDC Runtime takes it: comma-separated (dotted) fields; `id` always comes back."""
    if raw is None or not raw.strip():
        return None
    fields = [f.strip() for f in raw.split(",") if f.strip()]
    if len(fields) > MAX_PROJECTION_FIELDS:
        raise _invalid(f"projection names at most {MAX_PROJECTION_FIELDS} fields", loc)
    for f in fields:
        if f.startswith("$") or any(not part for part in f.split(".")) or len(f) > MAX_PATH_LENGTH:
            raise _invalid(
                f"projection field '{f[:80]}' is not a (dotted) field name such as config.git_repo", loc
            )
    return tuple(dict.fromkeys(["id", *fields]))


def project(doc: Mapping[str, Any], fields: tuple[str, ...] | None) -> dict[str, Any]:
    """The document with only `fields` (dotted paths reach into objects, and through lists of objects)."""
    if fields is None:
        return dict(doc)
    out: dict[str, Any] = {}
    for path in fields:
        _copy_path(doc, out, path.split("."))
    return out


def _copy_path(src: Any, dst: dict[str, Any], parts: list[str]) -> None:
    head, rest = parts[0], parts[1:]
    if not isinstance(src, Mapping) or head not in src:
        return
    value = src[head]
    if not rest:
        dst[head] = value
    elif isinstance(value, Mapping):
        _copy_path(value, dst.setdefault(head, {}), rest)
    elif isinstance(value, list):
        kept = dst.setdefault(head, [{} for _ in value])
        for element, target in zip(value, kept, strict=False):
            if isinstance(element, Mapping) and isinstance(target, dict):
                _copy_path(element, target, rest)
