"""Site credentials and access tokens.

- A client secret is stored only as a salted scrypt hash (per-site random salt; the cost parameters
  are stored beside the hash so they can be raised later without breaking existing secrets).
- An access token is a short-lived JWT (HS256) naming the site (`sub`), the credential version
  it was issued under (`ver`) and the site's epoch (`epoch`): rotating a site's secret bumps the
  version, which revokes every token issued before; deleting the site revokes them all, and a site
  created again under the same id has a new random epoch (its version restarts at 1), so the
  earlier incarnation's tokens stay refused.
- Verification accepts HS256 only (never `none`, never an algorithm the token picks), and
  requires exp, nbf, iat, iss, sub, jti, ver and epoch. Tokens issued before epochs existed lack
  the claim and are refused: they live at most TokenTtlSeconds, and a site's client asks for a
  new token when one is refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, Protocol

import jwt

from jobtriggers.errors import UnauthorizedError
from jobtriggers.models import utcnow
from jobtriggers.models.sites import ClientRecord, Site, TokenResponse
from jobtriggers.settings import TokenSettings

ALGORITHM = "HS256"
REQUIRED_CLAIMS = ["exp", "nbf", "iat", "iss", "sub", "jti", "ver", "epoch"]
# scrypt cost: ~16 MiB and a few tens of ms per check, paid once per token request.
SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_DKLEN = 2**14, 8, 1, 32
# Clock skew tolerated between the token function and the authorizer (both Lambdas on AWS time).
LEEWAY_SECONDS = 5


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def new_client_id() -> str:
    return f"client-{secrets.token_hex(12)}"


def new_client_secret() -> str:
    return secrets.token_urlsafe(32)


def new_site_epoch() -> str:
    """The epoch of a new site (or of a site created again): random, never LEGACY_SITE_EPOCH."""
    return secrets.token_hex(16)


def hash_secret(secret: str, salt: bytes | None = None) -> dict[str, Any]:
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(
        secret.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=SCRYPT_DKLEN
    )
    return {
        "alg": "scrypt",
        "n": SCRYPT_N,
        "r": SCRYPT_R,
        "p": SCRYPT_P,
        "salt": _b64(salt),
        "hash": _b64(digest),
    }


def verify_secret(secret: str, stored: dict[str, Any]) -> bool:
    if stored.get("alg") != "scrypt":
        return False
    expected = base64.b64decode(stored["hash"])
    digest = hashlib.scrypt(
        secret.encode(),
        salt=base64.b64decode(stored["salt"]),
        n=int(stored["n"]),
        r=int(stored["r"]),
        p=int(stored["p"]),
        dklen=len(expected),
        maxmem=256 * 1024 * 1024,
    )
    return hmac.compare_digest(digest, expected)


@lru_cache(maxsize=1)
def _decoy_hash() -> dict[str, Any]:
    return hash_secret(secrets.token_urlsafe(16))


class CredentialStore(Protocol):
    def get_site(self, site_id: str) -> Site | None: ...

    def get_client(self, client_id: str) -> ClientRecord | None: ...


def expires_parts(seconds: int) -> dict[str, int]:
    """The NMDC Runtime's `expires` field ({days, hours, minutes}), which its site client reads."""
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    return {"days": days, "hours": hours, "minutes": rest // 60}


class TokenService:
    def __init__(
        self,
        store: CredentialStore,
        signing_key: Callable[[], str],
        settings: TokenSettings,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.signing_key = signing_key
        self.settings = settings
        self.clock = clock

    def issue(self, client_id: str, client_secret: str) -> TokenResponse:
        """A token for the site these client credentials belong to; 401 for anything that is wrong."""
        client = self.store.get_client(client_id)
        # Hash even for an unknown client, so response time does not tell which client ids exist.
        stored = client.secret_hash if client else _decoy_hash()
        if not verify_secret(client_secret, stored) or client is None:
            raise UnauthorizedError("invalid client credentials")
        now = self.clock()
        ttl = self.settings.token_ttl_seconds
        claims = {
            "sub": client.site_id,
            "iss": self.settings.issuer,
            "iat": now,
            "nbf": now,
            "exp": now + timedelta(seconds=ttl),
            "jti": secrets.token_hex(16),
            "ver": client.credential_version,
            "epoch": client.epoch,
        }
        token = jwt.encode(claims, self.signing_key(), algorithm=ALGORITHM)
        return TokenResponse(access_token=token, expires_in=ttl, expires=expires_parts(ttl))

    def verify(self, token: str) -> str:
        """The site id a valid token names; UnauthorizedError (with the reason, for logs) otherwise."""
        try:
            claims = jwt.decode(
                token,
                self.signing_key(),
                algorithms=[ALGORITHM],
                issuer=self.settings.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.InvalidTokenError as exc:
            raise UnauthorizedError(f"invalid token: {exc}") from exc
        site_id, version, epoch = claims["sub"], claims["ver"], claims["epoch"]
        if not isinstance(site_id, str) or not isinstance(version, int) or not isinstance(epoch, str):
            raise UnauthorizedError("invalid token: malformed sub, ver or epoch")
        site = self.store.get_site(site_id)
        if site is None:
            raise UnauthorizedError(f"site '{site_id}' no longer exists")
        if site.epoch != epoch:
            raise UnauthorizedError(
                f"token of site '{site_id}' was issued before the site was deleted and created again"
            )
        if site.credential_version != version:
            raise UnauthorizedError(f"token of site '{site_id}' predates its latest secret rotation")
        return site_id


def bearer_token(header: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` value."""
    scheme, _, token = (header or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthorizedError("expected 'Authorization: Bearer <token>'")
    return token.strip()
