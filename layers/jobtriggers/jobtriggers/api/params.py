"""Path and query parameter types the routes share (bounded before they reach a key)."""

from __future__ import annotations

from typing import Annotated

from aws_lambda_powertools.event_handler.openapi.params import Path

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
