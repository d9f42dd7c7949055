"""POST /token (TokenFunction): client credentials -> a short-lived access token.

As in the NMDC Runtime (and OAuth2's client credentials grant), the client sends
`grant_type=client_credentials` with `client_id` and `client_secret` as a form body, or the id and
secret as HTTP Basic. A missing field, another grant type or a client id no site can have (too
long, say) is a 400; wrong credentials a 401. The body is parsed here rather than by the
resolver's validation so those answers are OAuth2's.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any
from urllib.parse import parse_qs, unquote_plus

from jobtriggers import wiring
from jobtriggers.api.errors import register_error_handlers
from jobtriggers.api.resolver import SitesApiResolver
from jobtriggers.errors import BadRequestError
from jobtriggers.models import CLIENT_ID_MAX_LENGTH, CLIENT_ID_PATTERN

GRANT_TYPE = "client_credentials"
_CLIENT_ID_RE = re.compile(CLIENT_ID_PATTERN)

app = SitesApiResolver()
register_error_handlers(app)


def _form_fields(body: str, content_type: str) -> dict[str, str]:
    if content_type.startswith("application/json"):
        try:
            data = json.loads(body or "{}")
        except json.JSONDecodeError as exc:
            raise BadRequestError(
                "the body is not valid JSON; send a form (application/x-www-form-urlencoded)"
            ) from exc
        if not isinstance(data, dict):
            raise BadRequestError("the body must be a form with grant_type, client_id and client_secret")
        return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}
    return {k: v[0] for k, v in parse_qs(body or "", keep_blank_values=True).items() if v}


def _basic_credentials(header: str | None) -> tuple[str, str] | None:
    scheme, _, encoded = (header or "").strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise BadRequestError(
            "the Basic authorization header is not base64 of client_id:client_secret"
        ) from exc
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise BadRequestError("the Basic authorization header must hold client_id:client_secret")
    # RFC 6749 2.3.1: both parts are form-encoded before they are joined.
    return unquote_plus(client_id), unquote_plus(secret)


def _checked_client_id(client_id: str) -> str:
    """The client id becomes a key (`client#<id>`); one no site can have is a 400 before the store
    sees it (DynamoDB refuses keys over 2048 bytes with a 500). The value is not echoed: it may be
    anything, of any size."""
    if not _CLIENT_ID_RE.match(client_id):
        raise BadRequestError(
            f"client_id must be 1-{CLIENT_ID_MAX_LENGTH} printable ASCII characters without spaces "
            f"(this one has {len(client_id)} characters): the client id `jobtriggers sites create` printed"
        )
    return client_id


def client_credentials(body: str, content_type: str, authorization: str | None) -> tuple[str, str]:
    """(client_id, client_secret) of a token request; BadRequestError says what is missing or wrong."""
    fields = _form_fields(body, content_type.lower())
    grant_type = fields.get("grant_type")
    if not grant_type:
        raise BadRequestError(f"grant_type is required; send grant_type={GRANT_TYPE}")
    if grant_type != GRANT_TYPE:
        raise BadRequestError(f"grant_type '{grant_type}' is not supported; send grant_type={GRANT_TYPE}")
    basic = _basic_credentials(authorization)
    if basic:
        return _checked_client_id(basic[0]), basic[1]
    missing = [f for f in ("client_id", "client_secret") if not fields.get(f)]
    if missing:
        raise BadRequestError(f"{' and '.join(missing)} required (in the form, or as HTTP Basic)")
    return _checked_client_id(fields["client_id"]), fields["client_secret"]


@app.post("/token")
def issue_token() -> dict[str, Any]:
    event = app.current_event
    headers = event.headers
    client_id, secret = client_credentials(
        event.decoded_body or "",
        headers.get("content-type") or headers.get("Content-Type") or "",
        headers.get("authorization") or headers.get("Authorization"),
    )
    return wiring.token_service().issue(client_id, secret).model_dump()
