"""POST /token (TokenFunction) and the Lambda authorizer (AuthorizerFunction), against moto.

Sites are made as operators make them (logic.sites through the repository); tokens are then got
and checked through the two handlers, as API Gateway would call them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from jobtriggers.dal.registry import RegistryRepository
from jobtriggers.dal.sites import SiteRepository
from jobtriggers.logic.sites import create_site, rotate_secret
from jobtriggers.logic.tokens import TokenService
from jobtriggers.models.sites import SiteCredentials
from jobtriggers.settings import reset_settings_cache, token_settings
from tests.api_events import (
    API_ID,
    STAGE,
    ApiCaller,
    LambdaContextStub,
    authorizer_event,
    basic_auth,
    form_event,
    json_body,
    load_function,
    module_tables,
    unique,
    use_tables,
)

KEY = "test-signing-key-" + "0" * 48


@pytest.fixture(scope="module")
def site_tables(dynamo_endpoint: str) -> dict[str, str]:
    return module_tables()


@pytest.fixture(scope="module")
def function_environment(site_tables: dict[str, str]) -> Iterator[None]:
    """What the template gives both functions (tables, the key's source): they read it at import."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SIGNING_KEY", KEY)
        mp.delenv("SIGNING_KEY_SECRET_ARN", raising=False)
        use_tables(site_tables)
        yield


@pytest.fixture(scope="module")
def token_fn(function_environment: None) -> ApiCaller:
    return ApiCaller(load_function("token"))


@pytest.fixture(scope="module")
def authorizer_fn(function_environment: None) -> ApiCaller:
    return ApiCaller(load_function("authorizer"))


@pytest.fixture(autouse=True)
def _env(site_tables: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("SIGNING_KEY", KEY)
    monkeypatch.delenv("SIGNING_KEY_SECRET_ARN", raising=False)
    use_tables(site_tables)
    yield
    reset_settings_cache()


@pytest.fixture
def site() -> SiteCredentials:
    return create_site(SiteRepository(), RegistryRepository(), unique("site"), [])


def _token_request(creds: SiteCredentials, basic: bool = False, **fields: str) -> dict:
    form = {"grant_type": "client_credentials"}
    headers = {}
    if basic:
        headers["Authorization"] = basic_auth(creds.client_id, creds.client_secret)
    else:
        form |= {"client_id": creds.client_id, "client_secret": creds.client_secret}
    form |= fields
    return form_event(form, headers=headers)


def _get_token(token_fn: ApiCaller, creds: SiteCredentials, basic: bool = False) -> str:
    response = token_fn.raw(_token_request(creds, basic=basic))
    assert response["statusCode"] == 200, response["body"]
    return str(json_body(response)["access_token"])


def _authorize(authorizer_fn: ApiCaller, header: str | None) -> dict:
    return authorizer_fn.handler(authorizer_event(header), LambdaContextStub())


# --------------------------------------------------------------------------- POST /token


@pytest.mark.parametrize("basic", [False, True], ids=["form", "basic"])
def test_token_for_form_or_basic_credentials(token_fn: ApiCaller, site: SiteCredentials, basic: bool) -> None:
    # When the site posts its credentials as the NMDC site client does (a form), or as HTTP Basic
    response = token_fn.raw(_token_request(site, basic=basic))
    # Then it gets a bearer token naming it, with both expiry fields
    assert response["statusCode"] == 200
    body = json_body(response)
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == token_settings().token_ttl_seconds
    assert body["expires"] == {"days": 0, "hours": 1, "minutes": 0}
    assert (
        jwt.decode(body["access_token"], KEY, algorithms=["HS256"], issuer="jobtriggers")["sub"]
        == site.site_id
    )


def test_wrong_secret_is_401(token_fn: ApiCaller, site: SiteCredentials) -> None:
    response = token_fn.raw(_token_request(site, client_secret="not-it"))
    assert response["statusCode"] == 401
    assert json_body(response) == {"detail": "invalid client credentials"}
    assert "not-it" not in response["body"]


def test_unknown_client_is_401(token_fn: ApiCaller) -> None:
    creds = SiteCredentials(site_id="x", client_id="client-unknown", client_secret="s")
    assert token_fn.raw(_token_request(creds))["statusCode"] == 401


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"grant_type": "client_credentials", "client_id": "c"}, "client_secret required"),
        ({"client_id": "c", "client_secret": "s"}, "grant_type is required"),
        ({"grant_type": "password", "client_id": "c", "client_secret": "s"}, "'password' is not supported"),
    ],
)
def test_incomplete_requests_are_400(token_fn: ApiCaller, fields: dict, fragment: str) -> None:
    response = token_fn.raw(form_event(fields))
    assert response["statusCode"] == 400
    assert fragment in json_body(response)["detail"]


# --------------------------------------------------------------------------- the authorizer


def test_valid_token_is_allowed_for_the_whole_api(
    token_fn: ApiCaller, authorizer_fn: ApiCaller, site: SiteCredentials
) -> None:
    token = _get_token(token_fn, site)
    policy = _authorize(authorizer_fn, f"Bearer {token}")
    # Then the policy allows every method and path of this API's stage, and names the site
    assert policy["principalId"] == site.site_id
    assert policy["context"] == {"site_id": site.site_id}
    [statement] = policy["policyDocument"]["Statement"]
    assert statement["Effect"] == "Allow"
    assert statement["Resource"] == [f"arn:aws:execute-api:us-east-1:123456789012:{API_ID}/{STAGE}/*/*"]


def _forged(site_id: str, key: str = KEY, algorithm: str = "HS256", **claims: object) -> str:
    """A token that is right in every way (the site's real epoch included) but those in `claims`."""
    now = datetime.now(UTC)
    stored = SiteRepository().get_site(site_id)
    payload: dict[str, object] = {
        "sub": site_id,
        "iss": "jobtriggers",
        "iat": now,
        "nbf": now,
        "exp": now + timedelta(minutes=5),
        "jti": "j",
        "ver": 1,
        "epoch": stored.epoch if stored else "",
    }
    payload.update(claims)
    return jwt.encode(payload, key if algorithm != "none" else "", algorithm=algorithm)


@pytest.mark.parametrize(
    "make_header",
    [
        pytest.param(lambda s: None, id="no-header"),
        pytest.param(lambda s: "Basic abc", id="not-bearer"),
        pytest.param(lambda s: "Bearer not.a.jwt", id="garbage"),
        pytest.param(
            lambda s: "Bearer " + _forged(s, exp=datetime.now(UTC) - timedelta(minutes=1)), id="expired"
        ),
        pytest.param(
            lambda s: "Bearer " + _forged(s, nbf=datetime.now(UTC) + timedelta(hours=1)), id="not-yet-valid"
        ),
        pytest.param(lambda s: "Bearer " + _forged(s, key="other-key-" + "1" * 48), id="wrong-signature"),
        pytest.param(lambda s: "Bearer " + _forged(s, algorithm="none"), id="alg-none"),
        pytest.param(lambda s: "Bearer " + _forged(s, algorithm="HS384"), id="other-alg"),
        pytest.param(lambda s: "Bearer " + _forged(s, iss="elsewhere"), id="other-issuer"),
        pytest.param(lambda s: "Bearer " + _forged("no-such-site"), id="unknown-site"),
    ],
)
def test_bad_tokens_are_unauthorized(
    authorizer_fn: ApiCaller, site: SiteCredentials, make_header: Callable[[str], str | None]
) -> None:
    # When API Gateway asks about a token that is wrong in one way
    # Then the authorizer answers "Unauthorized", which API Gateway turns into a 401
    with pytest.raises(Exception, match=r"^Unauthorized$"):
        _authorize(authorizer_fn, make_header(site.site_id))


def test_deleted_site_loses_access_at_once(
    token_fn: ApiCaller, authorizer_fn: ApiCaller, site: SiteCredentials
) -> None:
    token = _get_token(token_fn, site)
    assert _authorize(authorizer_fn, f"Bearer {token}")["principalId"] == site.site_id
    # When the site is deleted
    SiteRepository().delete(site.site_id)
    # Then its token is refused, and its credentials get no new one
    with pytest.raises(Exception, match=r"^Unauthorized$"):
        _authorize(authorizer_fn, f"Bearer {token}")
    assert token_fn.raw(_token_request(site))["statusCode"] == 401


def test_rotation_revokes_old_tokens_and_secret(
    token_fn: ApiCaller, authorizer_fn: ApiCaller, site: SiteCredentials
) -> None:
    old_token = _get_token(token_fn, site)
    # When the secret is rotated
    new = rotate_secret(SiteRepository(), site.site_id)
    # Then the same client id has a new secret, the old secret and old tokens stop working
    assert new.client_id == site.client_id and new.client_secret != site.client_secret
    assert token_fn.raw(_token_request(site))["statusCode"] == 401
    with pytest.raises(Exception, match=r"^Unauthorized$"):
        _authorize(authorizer_fn, f"Bearer {old_token}")
    # And a token of the new secret is allowed
    new_token = _get_token(token_fn, new, basic=True)
    assert _authorize(authorizer_fn, f"Bearer {new_token}")["context"] == {"site_id": site.site_id}


def test_stored_credentials_hold_no_plain_secret(site: SiteCredentials, site_tables: dict[str, str]) -> None:
    import boto3

    items = boto3.client("dynamodb").scan(TableName=site_tables["SITES_TABLE"])["Items"]
    assert items and site.client_secret not in str(items)


def test_service_refuses_a_token_signed_for_another_version(site: SiteCredentials) -> None:
    service = TokenService(SiteRepository(), lambda: KEY, token_settings())
    with pytest.raises(Exception, match="rotation"):
        service.verify(_forged(site.site_id, ver=7))


def test_service_accepts_the_forge_helpers_baseline_and_refuses_another_epoch(site: SiteCredentials) -> None:
    # The bad-token cases above differ from a valid token in one claim only: the baseline verifies
    service = TokenService(SiteRepository(), lambda: KEY, token_settings())
    assert service.verify(_forged(site.site_id)) == site.site_id
    with pytest.raises(Exception, match="deleted and created again"):
        service.verify(_forged(site.site_id, epoch="0" * 32))


def test_sites_are_stored_with_a_random_epoch_on_both_records(site: SiteCredentials) -> None:
    stored = SiteRepository().get_site(site.site_id)
    client = SiteRepository().get_client(site.client_id)
    assert stored is not None and client is not None
    assert len(stored.epoch) == 32 and client.epoch == stored.epoch
