"""The sites' REST API (ApiFunction): one resolver, one router per area.

To add an area: write `api/routes_<area>.py` with `router = Router()` and add one
`app.include_router(...)` line below. Errors map to HTTP in api/errors.py, nowhere else; the caller's
site id comes from api/auth.require_site_id().

Importing this module registers the routes and nothing more (it is every cold start of the API):
the OpenAPI document, and the hundred pydantic models Powertools describes it with, are built only
when /openapi.json or /docs is asked for.
"""

from __future__ import annotations

from aws_lambda_powertools.event_handler import Response, content_types

from jobtriggers.api import (
    routes_claims,
    routes_jobs,
    routes_lineage,
    routes_objects,
    routes_operations,
    routes_registry,
)
from jobtriggers.api.errors import register_error_handlers
from jobtriggers.api.resolver import SitesApiResolver

TITLE = "jobtriggers"
VERSION = "1.0.0"
DESCRIPTION = (
    "Workflow jobs for the NMDC Runtime's sites. Get a token with POST /token "
    "(client credentials), then send `Authorization: Bearer <token>`."
)
# /docs loads Swagger UI's script and stylesheet from here, as FastAPI's /docs (and so the NMDC
# Runtime's) does: the Lambda layer leaves out Powertools' 1.7 MB copy, and /docs answers 2 KB.
SWAGGER_UI_URL = "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5"

app = SitesApiResolver(enable_validation=True)
register_error_handlers(app)

app.include_router(routes_registry.router)
app.include_router(routes_objects.router)
app.include_router(routes_jobs.router)
app.include_router(routes_claims.router)
app.include_router(routes_operations.router)
app.include_router(routes_lineage.router)


@app.get("/health", tags=["service"])
def health() -> dict[str, str]:
    return {"status": "ok"}


def openapi_json() -> str:
    """The OpenAPI document. Its server is the stage prefix when the request came through one
    (`/v1` on AWS), so that Swagger UI's "try it out" reaches the API."""
    from aws_lambda_powertools.event_handler.openapi.models import HTTPBearer, Server

    return app.get_openapi_json_schema(
        title=TITLE,
        version=VERSION,
        description=DESCRIPTION,
        servers=[Server(url=app._get_base_path() or "/")],
        security_schemes={"siteToken": HTTPBearer(bearerFormat="JWT", description="from POST /token")},
    )


@app.get("/openapi.json", include_in_schema=False)
def openapi_document() -> Response[str]:
    """The document /docs embeds, as a resource of its own (for clients and fuzzers)."""
    return Response(status_code=200, content_type=content_types.APPLICATION_JSON, body=openapi_json())


@app.get("/docs", include_in_schema=False)
def docs() -> Response[str]:
    """Swagger UI with the document embedded (the document alone at /docs?format=json)."""
    from aws_lambda_powertools.event_handler.openapi.swagger_ui import generate_swagger_html

    spec = openapi_json()
    if (app.current_event.query_string_parameters or {}).get("format") == "json":
        return Response(status_code=200, content_type=content_types.APPLICATION_JSON, body=spec)
    html = generate_swagger_html(
        spec.replace("</", "<\\/"),  # the document sits in a <script>: it must not close it
        f"{SWAGGER_UI_URL}/swagger-ui-bundle.js",
        f"{SWAGGER_UI_URL}/swagger-ui.css",
        SWAGGER_UI_URL,
        None,
    )
    return Response(status_code=200, content_type="text/html", body=html)
