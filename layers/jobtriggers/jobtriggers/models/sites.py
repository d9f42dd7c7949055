"""Sites, their client credentials and tokens (only the token and authorizer handlers, the API and
the CLI need them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from jobtriggers.models import ClientId, SiteId, _Deferred

# A site record (and its client record) written before sites had an epoch reads as this one. Tokens
# carry their site's epoch; every site created since has a random one, so a token of a site that
# was deleted can never match the epoch of a site created again under the same id.
LEGACY_SITE_EPOCH = ""


class Site(_Deferred):
    id: SiteId
    capability_ids: list[str] = Field(default_factory=list)
    # May create jobs over the API (POST /jobs); an operator grants it (`jobtriggers sites create
    # --can-create-jobs`, `jobtriggers sites allow-job-creation`).
    can_create_jobs: bool = False
    client_id: ClientId
    created_at: str
    credential_version: int = 1
    # Random per incarnation: deleting a site and creating it again gives a new epoch, and tokens
    # are valid only for the epoch they were issued under (credential_version restarts at 1).
    epoch: str = LEGACY_SITE_EPOCH


@dataclass(frozen=True)
class ClientRecord:
    """The stored side of a site's client credentials: a salted hash, never the secret."""

    client_id: str
    site_id: str
    secret_hash: dict[str, Any]
    credential_version: int
    epoch: str = LEGACY_SITE_EPOCH


class SiteCredentials(_Deferred):
    """Printed once by `jobtriggers sites create`; only a salted hash of the secret is stored."""

    site_id: str
    client_id: str
    client_secret: str


class TokenResponse(_Deferred):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int
    expires: dict[str, int]
