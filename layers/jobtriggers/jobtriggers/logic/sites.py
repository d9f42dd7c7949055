"""Operator actions on sites: create one (credentials shown once), rotate its secret, delete it.

Sites are created with AWS access (the CLI), never over HTTP. Only a salted hash of a secret is
stored; the plain secret exists in the return value of these functions and nowhere else.
"""

from __future__ import annotations

import re
from typing import Any, Protocol

from jobtriggers.errors import NotFoundError, ValidationFailed
from jobtriggers.logic.tokens import hash_secret, new_client_id, new_client_secret, new_site_epoch
from jobtriggers.models import SITE_ID_MAX_LENGTH, SITE_ID_PATTERN, iso, utcnow
from jobtriggers.models.sites import ClientRecord, Site, SiteCredentials

SITE_ID_RE = re.compile(SITE_ID_PATTERN)


class SiteStore(Protocol):
    def create(self, site: Site, client: ClientRecord) -> None: ...

    def get_site(self, site_id: str) -> Site | None: ...

    def rotate(self, site: Site, secret_hash: dict[str, Any]) -> Site: ...


class CapabilityLookup(Protocol):
    def existing_ids(self, kind: str, ids: list[str]) -> set[str]: ...


def check_site_id(site_id: str) -> None:
    """Site ids become keys (`site#<id>`, `{site}#{done}`): refuse one that cannot be, naming why."""
    if not SITE_ID_RE.match(site_id):
        shown = site_id if len(site_id) <= 40 else f"{site_id[:40]}... ({len(site_id)} characters)"
        raise ValidationFailed(
            f"site id '{shown}' must be 1-{SITE_ID_MAX_LENGTH} letters, digits, '.', '_' or '-', "
            "starting with a letter or digit",
            loc=["site_id"],
        )


def create_site(
    store: SiteStore,
    registry: CapabilityLookup,
    site_id: str,
    capability_ids: list[str],
    *,
    can_create_jobs: bool = False,
) -> SiteCredentials:
    check_site_id(site_id)
    capabilities = sorted(set(capability_ids))
    unknown = sorted(set(capabilities) - registry.existing_ids("capability", capabilities))
    if unknown:
        raise ValidationFailed(f"unknown capability ids: {', '.join(unknown)}", loc=["capability_ids"])
    client_id, secret = new_client_id(), new_client_secret()
    site = Site(
        id=site_id,
        capability_ids=capabilities,
        client_id=client_id,
        created_at=iso(utcnow()),
        epoch=new_site_epoch(),
        can_create_jobs=can_create_jobs,
    )
    store.create(
        site,
        ClientRecord(
            client_id=client_id,
            site_id=site_id,
            secret_hash=hash_secret(secret),
            credential_version=site.credential_version,
            epoch=site.epoch,
        ),
    )
    return SiteCredentials(site_id=site_id, client_id=client_id, client_secret=secret)


def rotate_secret(store: SiteStore, site_id: str) -> SiteCredentials:
    """A new secret for the same client id; tokens issued under the old one stop working."""
    check_site_id(site_id)
    site = store.get_site(site_id)
    if site is None:
        raise NotFoundError(f"site '{site_id}' does not exist")
    secret = new_client_secret()
    store.rotate(site, hash_secret(secret))
    return SiteCredentials(site_id=site_id, client_id=site.client_id, client_secret=secret)
