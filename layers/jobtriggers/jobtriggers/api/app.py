"""The sites' REST API (ApiFunction): one resolver, one router per area.

To add an area: write `api/routes_<area>.py` with `router = Router()` and add one
`app.include_router(...)` line below. Errors map to HTTP in api/errors.py, nowhere else; the caller's
site id comes from api/auth.require_site_id().
"""

from __future__ import annotations

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.openapi.models import HTTPBearer, Server

from jobtriggers.api import routes_claims, routes_jobs, routes_objects, routes_operations, routes_registry
from jobtriggers.api.errors import register_error_handlers
from jobtriggers.api.resolver import SitesApiResolver

TITLE = "jobtriggers"
VERSION = "1.0.0"
DESCRIPTION = (
    "Workflow jobs for the NMDC Runtime's sites. Get a token with POST /token "
    "(client credentials), then send `Authorization: Bearer <token>`."
)

app = SitesApiResolver(enable_validation=True)
register_error_handlers(app)
app.configure_openapi(
    title=TITLE,
    version=VERSION,
    description=DESCRIPTION,
    security_schemes={"siteToken": HTTPBearer(bearerFormat="JWT", description="from POST /token")},
)

app.include_router(routes_registry.router)
app.include_router(routes_objects.router)
app.include_router(routes_jobs.router)
app.include_router(routes_claims.router)
app.include_router(routes_operations.router)

# /docs serves Swagger UI with the document embedded (and as JSON at /docs?format=json).
app.enable_swagger(path="/docs")


@app.get("/health", tags=["service"])
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/openapi.json", include_in_schema=False)
def openapi_document() -> Response[str]:
    """The OpenAPI document /docs embeds, as a resource of its own (for clients and fuzzers).

    Its server is the stage prefix when the request came through one (`/v1` on AWS), as /docs does."""
    servers = [Server(url=app._get_base_path() or "/")]
    return Response(
        status_code=200,
        content_type=content_types.APPLICATION_JSON,
        body=app.get_openapi_json_schema(servers=servers),
    )
