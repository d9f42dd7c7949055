"""Path and query parameter types the routes share (bounded before they reach a key)."""

from __future__ import annotations

from typing import Annotated

from aws_lambda_powertools.event_handler.openapi.params import Path, Query

from jobtriggers.models import (
    DRS_ID_PATTERN,
    ID_MAX_LENGTH,
    ID_PATTERN,
    JOB_ID_MAX_LENGTH,
    JOB_ID_PATTERN,
)

ObjectIdPath = Annotated[str, Path(min_length=1, max_length=200, pattern=DRS_ID_PATTERN)]
RegistryIdPath = Annotated[str, Path(min_length=1, max_length=ID_MAX_LENGTH, pattern=ID_PATTERN)]
JobIdPath = Annotated[str, Path(min_length=1, max_length=JOB_ID_MAX_LENGTH, pattern=JOB_ID_PATTERN)]

# The OpenAPI security requirement of routes that need a site token.
SITE_TOKEN: list[dict[str, list[str]]] = [{"siteToken": []}]

# --------------------------------------------------------------------------- list requests

# The NMDC Runtime's ListRequest: `filter` (MongoDB query JSON), `max_page_size`, `page_token`,
# `projection` (comma-separated fields; `id` always comes back). The watcher's filter over a few
# dozen workflow ids is about 2 KB; a URL stays well under API Gateway's 10 KB request line.
FILTER_MAX_LENGTH = 6000
FilterQuery = Annotated[
    str | None,
    Query(
        max_length=FILTER_MAX_LENGTH,
        description="a MongoDB query (JSON) in the subset NMDC's clients use: $and $or $nor $not $eq $ne "
        '$in $nin $gt $gte $lt $lte $exists $size $elemMatch $all, on dotted paths, e.g. {"workflow.id": '
        '{"$in": ["metag-1.0.0"]}, "claims": {"$size": 0}}. A page may hold fewer results than asked for '
        "and still have a next_page_token",
    ),
]
ProjectionQuery = Annotated[
    str | None,
    Query(
        max_length=2000,
        description="comma-separated (dotted) fields to return, e.g. config.git_repo,claims; id always",
    ),
]
PageSizeQuery = Annotated[int, Query(ge=1, le=1000)]
PageTokenQuery = Annotated[
    str | None, Query(max_length=4096, description="next_page_token of the previous page")
]
