"""The MongoDB filter subset: what is accepted, what is refused (naming it), how documents match,
what the filter pins down for index choice, and projection."""

from __future__ import annotations

import json
from typing import Any

import pytest

from jobtriggers.errors import ValidationFailed
from jobtriggers.logic.filters import SUPPORTED_OPERATORS, parse_filter, parse_projection, project

# nmdc_automation's watcher, as ../shared/reference/nmdc-automation.md quotes it.
WATCHER = {
    "$and": [
        {"workflow.id": {"$in": ["Metagenome Annotation: v1.1.0", "MAGs: v1.3.16"]}},
        {
            "$or": [
                {"claims": {"$size": 0}},
                {"claims": {"$not": {"$elemMatch": {"cancelled": {"$ne": True}}}}},
            ]
        },
    ]
}


def job(
    workflow: str = "Metagenome Annotation: v1.1.0", claims: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {
        "id": "j1",
        "workflow": {"id": workflow},
        "config": {"git_repo": "https://github.com/microbiomedata/mg_annotation", "release": "v1.1.0"},
        "claims": claims or [],
        "status": "pending",
    }


def f(document: Any) -> Any:
    return parse_filter(json.dumps(document))


def test_the_watchers_filter_sees_unclaimed_and_released_jobs_only() -> None:
    watcher = f(WATCHER)
    assert watcher.matches(job())
    assert watcher.matches(job(claims=[{"op_id": "o1", "site_id": "jgi", "done": True, "cancelled": True}]))
    assert not watcher.matches(job(claims=[{"op_id": "o1", "site_id": "jgi"}]))
    assert not watcher.matches(
        job(claims=[{"op_id": "o1", "site_id": "jgi", "cancelled": True}, {"op_id": "o2", "site_id": "jgi"}])
    )
    assert not watcher.matches(job(workflow="ReadsQC: v1.0.8"))


@pytest.mark.parametrize(
    ("document", "doc", "expected"),
    [
        ({"config.git_repo": "https://github.com/microbiomedata/mg_annotation"}, job(), True),
        ({"config.git_repo": "https://github.com/other"}, job(), False),
        ({"claims.site_id": "jgi"}, job(claims=[{"op_id": "o", "site_id": "jgi"}]), True),
        ({"claims.site_id": "nersc"}, job(claims=[{"op_id": "o", "site_id": "jgi"}]), False),
        ({"config.missing": None}, job(), True),  # MongoDB: null matches a missing field
        ({"config.missing": {"$exists": False}}, job(), True),
        ({"claims": {"$size": 0}}, job(), True),
        ({"status": {"$nin": ["done", "failed"]}}, job(), True),
        ({"$nor": [{"status": "pending"}]}, job(), False),
        (
            {"claims": {"$all": [{"$elemMatch": {"site_id": "jgi"}}]}},
            job(claims=[{"op_id": "o", "site_id": "jgi"}]),
            True,
        ),
        ({"config.release": {"$gte": "v1.0.0", "$lt": "v2"}}, job(), True),
        ({"config.release": {"$gt": 1}}, job(), False),  # MongoDB's type bracketing: a string is not > 1
    ],
)
def test_documents_match_with_mongodb_semantics(document: Any, doc: dict[str, Any], expected: bool) -> None:
    assert f(document).matches(doc) is expected


@pytest.mark.parametrize("op", ["$where", "$expr", "$function", "$text", "$jsonSchema"])
def test_top_level_operators_outside_the_subset_are_refused_by_name(op: str) -> None:
    with pytest.raises(ValidationFailed) as err:
        f({op: "this.x == 1"})
    assert op in str(err.value.detail)
    assert err.value.context["loc"] == ["query", "filter"]


@pytest.mark.parametrize("op", ["$regex", "$mod", "$type", "$options", "$bitsAllSet", "$where"])
def test_field_operators_outside_the_subset_are_refused_by_name(op: str) -> None:
    with pytest.raises(ValidationFailed) as err:
        f({"config.git_repo": {op: "x"}})
    assert op in str(err.value.detail)


def test_an_unsupported_operator_hidden_deep_inside_is_found() -> None:
    with pytest.raises(ValidationFailed, match=r"\$regex"):
        f({"$and": [{"$or": [{"claims": {"$elemMatch": {"site_id": {"$regex": "^j"}}}}]}]})
    with pytest.raises(ValidationFailed, match=r"\$where"):
        f({"claims": {"$not": {"$elemMatch": {"$where": "1"}}}})


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"$and": {}}', "non-empty list"),
        ('{"$or": [1]}', "filter document"),
        ('{"a": {"$in": "x"}}', "list of values"),
        ('{"a": {"$size": -1}}', "whole number"),
        ('{"a": {"$size": true}}', "whole number"),
        ('{"a": {"$exists": "yes"}}', "true or false"),
        ('{"a": {"$not": 1}}', "object of operators"),
        ('{"a": {"$elemMatch": 1}}', "takes an object"),
        ('{"a": {"$eq": 1, "b": 2}}', "mixes operators and fields"),
        ('{"a..b": 1}', "dotted path"),
        ('{"a": {"b": {"$ne": 1}}}', "cannot appear inside a value"),
    ],
)
def test_malformed_filters_are_422_saying_what_is_wrong(raw: str, fragment: str) -> None:
    with pytest.raises(ValidationFailed) as err:
        parse_filter(raw)
    assert fragment in str(err.value.detail)


def test_filters_are_bounded_in_depth_size_and_in_lists() -> None:
    deep: dict[str, Any] = {"a": 1}
    for _ in range(20):
        deep = {"$and": [deep]}
    with pytest.raises(ValidationFailed, match="nested too deeply"):
        f(deep)
    with pytest.raises(ValidationFailed, match="too large"):
        f({"$or": [{"a": i} for i in range(500)]})
    with pytest.raises(ValidationFailed, match="at most 100 values"):
        f({"a": {"$in": [str(i) for i in range(101)]}})


def test_every_supported_operator_is_accepted() -> None:
    accepted = {
        "$and": {"$and": [{"a": 1}]},
        "$or": {"$or": [{"a": 1}]},
        "$nor": {"$nor": [{"a": 1}]},
        "$not": {"a": {"$not": {"$gt": 1}}},
        "$eq": {"a": {"$eq": 1}},
        "$ne": {"a": {"$ne": 1}},
        "$in": {"a": {"$in": [1]}},
        "$nin": {"a": {"$nin": [1]}},
        "$gt": {"a": {"$gt": 1}},
        "$gte": {"a": {"$gte": 1}},
        "$lt": {"a": {"$lt": 1}},
        "$lte": {"a": {"$lte": 1}},
        "$exists": {"a": {"$exists": True}},
        "$size": {"a": {"$size": 1}},
        "$elemMatch": {"a": {"$elemMatch": {"b": 1}}},
        "$all": {"a": {"$all": [1]}},
    }
    assert set(accepted) == SUPPORTED_OPERATORS
    for document in accepted.values():
        f(document).matches({"a": [1, 2]})


def test_empty_filters_match_everything() -> None:
    for raw in (None, "", "  ", "{}"):
        assert parse_filter(raw).matches(job())
        assert parse_filter(raw).required_values("workflow.id") is None


def test_required_values_are_what_every_match_must_hold() -> None:
    assert f(WATCHER).required_values("workflow.id") == {"Metagenome Annotation: v1.1.0", "MAGs: v1.3.16"}
    assert f({"status": "pending"}).required_values("status") == {"pending"}
    assert f({"status": {"$eq": "pending"}}).required_values("status") == {"pending"}
    both = f(
        {"$and": [{"status": {"$in": ["pending", "claimed"]}}, {"status": {"$in": ["claimed", "done"]}}]}
    )
    assert both.required_values("status") == {"claimed"}
    # Not pinned: alternatives, negations, non-string values, null (which matches missing fields)
    assert f({"$or": [{"status": "pending"}, {"status": "done"}]}).required_values("status") is None
    assert f({"status": {"$ne": "pending"}}).required_values("status") is None
    assert f({"status": None}).required_values("status") is None
    assert f({"attempts": 1}).required_values("attempts") is None
    assert f({"status": {"$in": ["pending", 1]}}).required_values("status") is None


def test_projection_keeps_id_and_the_named_fields_through_objects_and_lists() -> None:
    fields = parse_projection("config.git_repo, claims.site_id")
    assert fields == ("id", "config.git_repo", "claims.site_id")
    doc = job(claims=[{"op_id": "o1", "site_id": "jgi"}, {"op_id": "o2", "site_id": "nersc"}])
    assert project(doc, fields) == {
        "id": "j1",
        "config": {"git_repo": "https://github.com/microbiomedata/mg_annotation"},
        "claims": [{"site_id": "jgi"}, {"site_id": "nersc"}],
    }
    assert project(doc, parse_projection("nothing.here")) == {"id": "j1"}
    assert project(doc, None) == doc
    assert parse_projection(None) is None and parse_projection(" ") is None


@pytest.mark.parametrize("raw", ["$where", "a..b", ",".join(f"f{i}" for i in range(51))])
def test_malformed_projections_are_422(raw: str) -> None:
    with pytest.raises(ValidationFailed):
        parse_projection(raw)
