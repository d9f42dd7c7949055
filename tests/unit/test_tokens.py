"""Client secrets and access tokens, with an in-memory credential store (no network)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jwt
import pytest

from jobtriggers.api.token import client_credentials
from jobtriggers.errors import BadRequestError, UnauthorizedError
from jobtriggers.logic.tokens import (
    TokenService,
    bearer_token,
    expires_parts,
    hash_secret,
    new_site_epoch,
    verify_secret,
)
from jobtriggers.models.sites import LEGACY_SITE_EPOCH, ClientRecord, Site
from jobtriggers.settings import TokenSettings
from tests.api_events import basic_auth

KEY = "k" * 64
SETTINGS = TokenSettings(SIGNING_KEY=KEY, TOKEN_TTL_SECONDS=3600, TOKEN_ISSUER="jobtriggers")


class FakeStore:
    def __init__(self) -> None:
        self.sites: dict[str, Site] = {}
        self.clients: dict[str, ClientRecord] = {}

    def add(self, site_id: str, secret: str, version: int = 1, epoch: str = "epoch-1") -> None:
        self.sites[site_id] = Site(
            id=site_id,
            client_id=f"c-{site_id}",
            created_at="2024-01-01T00:00:00.000Z",
            credential_version=version,
            epoch=epoch,
        )
        self.clients[f"c-{site_id}"] = ClientRecord(
            f"c-{site_id}", site_id, hash_secret(secret), version, epoch
        )

    def get_site(self, site_id: str) -> Site | None:
        return self.sites.get(site_id)

    def get_client(self, client_id: str) -> ClientRecord | None:
        return self.clients.get(client_id)


@pytest.fixture
def store() -> FakeStore:
    s = FakeStore()
    s.add("nersc", "s3cret")
    return s


def _service(store: FakeStore, clock: datetime | None = None) -> TokenService:
    if clock is None:
        return TokenService(store, lambda: KEY, SETTINGS)
    return TokenService(store, lambda: KEY, SETTINGS, clock=lambda: clock)


def _claims(**overrides: object) -> dict[str, object]:
    now = datetime.now(UTC)
    claims: dict[str, object] = {
        "sub": "nersc",
        "iss": "jobtriggers",
        "iat": now,
        "nbf": now,
        "exp": now + timedelta(minutes=5),
        "jti": "j1",
        "ver": 1,
        "epoch": "epoch-1",
    }
    claims.update(overrides)
    return claims


def test_secret_hash_is_salted_and_verifies() -> None:
    # Given the same secret hashed twice
    a, b = hash_secret("pw"), hash_secret("pw")
    # Then the salts (and so the hashes) differ, both verify, and a wrong secret does not
    assert a["salt"] != b["salt"] and a["hash"] != b["hash"]
    assert verify_secret("pw", a) and verify_secret("pw", b)
    assert not verify_secret("pw2", a)
    assert "pw" not in a.values()


def test_issue_returns_nmdc_and_oauth_expiry_fields(store: FakeStore) -> None:
    # When the right credentials ask for a token
    resp = _service(store).issue("c-nersc", "s3cret")
    # Then it is a bearer token with OAuth2's expires_in and the NMDC Runtime's expires parts
    assert resp.token_type == "bearer"
    assert resp.expires_in == 3600
    assert resp.expires == {"days": 0, "hours": 1, "minutes": 0}
    claims = jwt.decode(resp.access_token, KEY, algorithms=["HS256"], issuer="jobtriggers")
    assert claims["sub"] == "nersc" and claims["ver"] == 1 and claims["jti"]
    assert claims["epoch"] == "epoch-1"


def test_expires_parts_splits_days_hours_minutes() -> None:
    assert expires_parts(86400 + 2 * 3600 + 5 * 60 + 7) == {"days": 1, "hours": 2, "minutes": 5}


@pytest.mark.parametrize(("client_id", "secret"), [("c-nersc", "wrong"), ("c-unknown", "s3cret")])
def test_wrong_credentials_are_unauthorized(store: FakeStore, client_id: str, secret: str) -> None:
    with pytest.raises(UnauthorizedError):
        _service(store).issue(client_id, secret)


def test_valid_token_verifies_to_its_site(store: FakeStore) -> None:
    token = _service(store).issue("c-nersc", "s3cret").access_token
    assert _service(store).verify(token) == "nersc"


def test_expired_token_is_refused(store: FakeStore) -> None:
    # Given a token issued two hours ago with a one-hour lifetime
    token = (
        _service(store, clock=datetime.now(UTC) - timedelta(hours=2)).issue("c-nersc", "s3cret").access_token
    )
    # Then it no longer verifies
    with pytest.raises(UnauthorizedError, match="expired"):
        _service(store).verify(token)


def test_not_yet_valid_token_is_refused(store: FakeStore) -> None:
    token = jwt.encode(_claims(nbf=datetime.now(UTC) + timedelta(minutes=10)), KEY, algorithm="HS256")
    with pytest.raises(UnauthorizedError, match="not yet valid"):
        _service(store).verify(token)


def test_wrong_signature_is_refused(store: FakeStore) -> None:
    token = jwt.encode(_claims(), "another-key-" + "x" * 52, algorithm="HS256")
    with pytest.raises(UnauthorizedError, match="Signature"):
        _service(store).verify(token)


def test_alg_none_is_refused(store: FakeStore) -> None:
    # Given a token that claims no signature is needed
    token = jwt.encode(_claims(), "", algorithm="none")
    # Then it is refused whatever its claims say
    with pytest.raises(UnauthorizedError):
        _service(store).verify(token)


def test_other_algorithm_is_refused(store: FakeStore) -> None:
    # Given a token correctly signed with the right key but HS512
    token = jwt.encode(_claims(), KEY, algorithm="HS512")
    with pytest.raises(UnauthorizedError, match="alg value is not allowed"):
        _service(store).verify(token)


def test_token_without_version_claim_is_refused(store: FakeStore) -> None:
    claims = _claims()
    del claims["ver"]
    with pytest.raises(UnauthorizedError, match="ver"):
        _service(store).verify(jwt.encode(claims, KEY, algorithm="HS256"))


def test_token_without_epoch_claim_is_refused(store: FakeStore) -> None:
    # Given a token as issued before sites had epochs (otherwise valid)
    claims = _claims()
    del claims["epoch"]
    # Then it is refused: such tokens were short-lived, and a site's client asks for a new one
    with pytest.raises(UnauthorizedError, match="epoch"):
        _service(store).verify(jwt.encode(claims, KEY, algorithm="HS256"))


def test_token_of_an_earlier_incarnation_of_the_site_is_refused(store: FakeStore) -> None:
    # Given a token of site nersc
    token = _service(store).issue("c-nersc", "s3cret").access_token
    # When the site is deleted and created again under the same id: version 1 again, a new epoch
    del store.sites["nersc"]
    store.add("nersc", "another-secret", version=1, epoch="epoch-2")
    # Then the old token is refused, and the new incarnation's token works
    with pytest.raises(UnauthorizedError, match="deleted and created again"):
        _service(store).verify(token)
    fresh = _service(store).issue("c-nersc", "another-secret").access_token
    assert _service(store).verify(fresh) == "nersc"


def test_a_site_stored_before_epochs_existed_still_gets_working_tokens(store: FakeStore) -> None:
    # Given a site whose records have no epoch (read as the legacy epoch)
    store.add("legacy", "pw", epoch=LEGACY_SITE_EPOCH)
    # Then its tokens carry that epoch and verify; a token of any other epoch does not
    token = _service(store).issue("c-legacy", "pw").access_token
    assert _service(store).verify(token) == "legacy"
    forged = jwt.encode(_claims(sub="legacy", epoch="epoch-1"), KEY, algorithm="HS256")
    with pytest.raises(UnauthorizedError, match="deleted and created again"):
        _service(store).verify(forged)


def test_new_site_epochs_are_random_and_never_the_legacy_one() -> None:
    epochs = {new_site_epoch() for _ in range(50)}
    assert len(epochs) == 50
    assert LEGACY_SITE_EPOCH not in epochs
    assert all(len(e) >= 32 for e in epochs)


def test_token_of_other_issuer_is_refused(store: FakeStore) -> None:
    with pytest.raises(UnauthorizedError, match="issuer"):
        _service(store).verify(jwt.encode(_claims(iss="someone-else"), KEY, algorithm="HS256"))


def test_deleted_site_token_is_refused(store: FakeStore) -> None:
    token = _service(store).issue("c-nersc", "s3cret").access_token
    # When the site is deleted
    del store.sites["nersc"]
    with pytest.raises(UnauthorizedError, match="no longer exists"):
        _service(store).verify(token)


def test_rotation_revokes_older_tokens(store: FakeStore) -> None:
    token = _service(store).issue("c-nersc", "s3cret").access_token
    # When the site's credentials are rotated (version 2)
    store.add("nersc", "new-secret", version=2)
    with pytest.raises(UnauthorizedError, match="rotation"):
        _service(store).verify(token)
    # Then a token of the new secret works
    fresh = _service(store).issue("c-nersc", "new-secret").access_token
    assert _service(store).verify(fresh) == "nersc"


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer   ", "Basic abc", "token abc"])
def test_bearer_header_must_be_bearer(header: str | None) -> None:
    with pytest.raises(UnauthorizedError):
        bearer_token(header)


def test_bearer_header_scheme_is_case_insensitive() -> None:
    assert bearer_token("bearer abc.def") == "abc.def"


FORM = "application/x-www-form-urlencoded"


def test_form_credentials_are_read() -> None:
    body = "grant_type=client_credentials&client_id=c-1&client_secret=a%2Bb"
    assert client_credentials(body, FORM, None) == ("c-1", "a+b")


def test_basic_credentials_are_read() -> None:
    assert client_credentials("grant_type=client_credentials", FORM, basic_auth("c-1", "pw:x")) == (
        "c-1",
        "pw:x",
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("client_id=c&client_secret=s", "grant_type is required"),
        ("grant_type=password&client_id=c&client_secret=s", "not supported"),
        ("grant_type=client_credentials&client_id=c", "client_secret required"),
        ("grant_type=client_credentials", "client_id and client_secret required"),
    ],
)
def test_incomplete_token_requests_are_bad_requests(body: str, message: str) -> None:
    with pytest.raises(BadRequestError, match=message):
        client_credentials(body, FORM, None)
