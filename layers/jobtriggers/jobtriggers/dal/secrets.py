"""The key that signs access tokens: Secrets Manager on AWS (cached), an env variable locally."""

from __future__ import annotations

from jobtriggers.errors import JobTriggersError
from jobtriggers.settings import TokenSettings

# A rotated signing key reaches warm Lambdas within this many seconds.
SECRET_CACHE_SECONDS = 300


def signing_key(settings: TokenSettings) -> str:
    if settings.signing_key:
        return settings.signing_key
    if settings.signing_key_secret_arn:
        from aws_lambda_powertools.utilities import parameters

        value = parameters.get_secret(settings.signing_key_secret_arn, max_age=SECRET_CACHE_SECONDS)
        return value.decode() if isinstance(value, bytes) else str(value)
    raise JobTriggersError(
        "no token signing key: set SIGNING_KEY_SECRET_ARN (on AWS) or SIGNING_KEY (locally)"
    )
