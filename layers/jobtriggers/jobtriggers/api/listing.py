"""What GET /jobs and GET /operations share: their list parameters made into one ListQuery."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jobtriggers.errors import ValidationFailed
from jobtriggers.logic.filters import parse_filter, parse_projection
from jobtriggers.logic.listing import ListQuery, with_conditions


def list_query(
    *,
    filter_json: str | None,
    projection: str | None,
    max_page_size: int,
    page_token: str | None,
    parameters: Mapping[str, tuple[str, Any]] | None = None,
) -> ListQuery:
    """The request's `filter` (422 naming what is outside the subset), with the route's own query
    parameters as equalities that must hold too (`parameters`: served path -> (parameter name,
    value or None)), the projection and the page. A parameter and the filter that pin one field to
    different values are a 422: nothing could match, which is surely not what was meant."""
    flt = parse_filter(filter_json)
    conditions: dict[str, Any] = {}
    for path, (name, value) in (parameters or {}).items():
        if value is None:
            continue
        pinned = flt.required_values(path, kinds=(type(value),))
        if pinned is not None and value not in pinned:
            raise ValidationFailed(
                f"{name}={value} and the filter's {path} disagree: nothing can match; send one",
                loc=["query", "filter"],
            )
        conditions[path] = value
    return ListQuery(
        filter=with_conditions(flt, conditions),
        projection=parse_projection(projection),
        limit=max_page_size,
        page_token=page_token,
    )
