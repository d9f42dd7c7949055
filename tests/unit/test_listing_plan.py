"""Which index and partitions a filtered GET /jobs reads, from what its filter pins (dal/jobs.py
listing_plan, fed by logic/listing.py JobListing.pinned)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from jobtriggers.dal.jobs import listing_plan
from jobtriggers.errors import ValidationFailed
from jobtriggers.logic.filters import parse_filter
from jobtriggers.logic.listing import JobListing, with_conditions

WATCHER = {
    "$and": [
        {"workflow.id": {"$in": ["Metagenome Annotation: v1.1.0", "Read QC: v1.0.6"]}},
        {
            "$or": [
                {"claims": {"$size": 0}},
                {"claims": {"$not": {"$elemMatch": {"cancelled": {"$ne": True}}}}},
            ]
        },
    ]
}


def plan_of(flt: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    listing = JobListing(jobs=None, registry=None)  # type: ignore[arg-type]
    plan = listing_plan(listing.pinned(parse_filter(json.dumps(flt))))
    return plan.index, [dict(p.values) for p in plan.partitions]


@pytest.mark.parametrize(
    ("flt", "index", "partitions"),
    [
        pytest.param({}, "by_created", [{":listing": "job"}], id="nothing-pinned"),
        pytest.param(
            {"config.git_repo": "https://github.com/microbiomedata/mg_annotation"},
            "by_created",
            [{":listing": "job"}],
            id="scheduler-config-field",
        ),
        pytest.param(
            WATCHER,
            "by_workflow",
            [{":workflow_id": "Metagenome Annotation: v1.1.0"}, {":workflow_id": "Read QC: v1.0.6"}],
            id="watcher-in",
        ),
        pytest.param(
            {"workflow.id": "w", "status": {"$in": ["pending", "failed"]}},
            "by_workflow_status",
            [{":workflow_status": "w#failed"}, {":workflow_status": "w#pending"}],
            id="workflow-and-status",
        ),
        pytest.param({"status": "failed"}, "by_status", [{":status": "failed"}], id="status"),
        pytest.param(
            {"site_id": "nersc", "workflow.id": "w"}, "by_site", [{":site_id": "nersc"}], id="holder-first"
        ),
        pytest.param(
            {"config.object_id": {"$in": ["o2", "o1"]}, "workflow.id": "w"},
            "by_object",
            [{":object_id": "o1", ":workflow_id": "w"}, {":object_id": "o2", ":workflow_id": "w"}],
            id="objects-of-one-workflow",
        ),
        pytest.param(
            {"config.object_id": "o", "workflow.id": {"$in": ["a", "b"]}},
            "by_object",
            [{":object_id": "o"}],
            id="object-of-several-workflows",
        ),
        pytest.param(
            {"$and": [{"workflow.id": {"$in": ["a", "b"]}}, {"workflow.id": {"$in": ["b", "c"]}}]},
            "by_workflow",
            [{":workflow_id": "b"}],
            id="and-intersects",
        ),
        pytest.param(
            {"workflow.id": {"$in": ["a"]}, "status": "done"},
            "by_workflow_status",
            [{":workflow_status": "a#done"}],
            id="in-one",
        ),
        pytest.param(
            {"$or": [{"workflow.id": "a"}, {"status": "done"}]},
            "by_created",
            [{":listing": "job"}],
            id="or-pins-nothing",
        ),
        pytest.param(
            {"workflow.id": {"$ne": "a"}}, "by_created", [{":listing": "job"}], id="ne-pins-nothing"
        ),
        pytest.param({"workflow.id": 3}, "by_created", [{":listing": "job"}], id="not-a-string"),
    ],
)
def test_the_index_is_chosen_from_what_the_filter_pins(
    flt: dict[str, Any], index: str, partitions: list[dict[str, Any]]
) -> None:
    assert plan_of(flt) == (index, partitions)


@pytest.mark.parametrize(
    "flt",
    [
        pytest.param({"workflow.id": "a", "$and": [{"workflow.id": "b"}]}, id="contradiction"),
        pytest.param({"workflow.id": ""}, id="empty-string"),
        pytest.param({"workflow.id": {"$in": []}}, id="empty-in"),
        pytest.param({"config.object_id": "\ud800"}, id="not-utf8"),
    ],
)
def test_a_filter_no_job_can_match_reads_nothing(flt: dict[str, Any]) -> None:
    assert plan_of(flt)[1] == []


def test_a_status_no_job_can_have_is_422_naming_it() -> None:
    with pytest.raises(ValidationFailed, match="'running'"):
        plan_of({"status": {"$in": ["pending", "running"]}})


def test_query_parameters_join_the_filter_as_equalities() -> None:
    flt = with_conditions(parse_filter(json.dumps(WATCHER)), {"status": "pending"})
    listing = JobListing(jobs=None, registry=None)  # type: ignore[arg-type]
    plan = listing_plan(listing.pinned(flt))
    assert plan.index == "by_workflow_status" and len(plan.partitions) == 2
    assert flt.matches({"workflow": {"id": "Read QC: v1.0.6"}, "claims": [], "status": "pending"})
    assert not flt.matches({"workflow": {"id": "Read QC: v1.0.6"}, "claims": [], "status": "done"})
