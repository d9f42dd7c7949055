"""The sites table: `site#<site_id>` items (the site) and `client#<client_id>` items (its hashed
credentials), always written together in one transaction.

`credential_version` lives on both: tokens carry it, the authorizer compares it with the site's,
and a rotation bumps both at once (conditional on the version it read, so two rotations never
interleave). `epoch` lives on both too: random per incarnation of the site, carried by tokens, so a
site deleted and created again does not accept its earlier incarnation's tokens. Records written
before epochs existed have none and read as LEGACY_SITE_EPOCH.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from jobtriggers.dal.dynamo import (
    dynamodb,
    error_code,
    from_item,
    get_item,
    raise_store_error,
    to_attr,
    to_item,
    transact,
)
from jobtriggers.errors import ConflictError, NotFoundError
from jobtriggers.models import iso, utcnow
from jobtriggers.models.sites import LEGACY_SITE_EPOCH, ClientRecord, Site
from jobtriggers.settings import table_names


def site_key(site_id: str) -> dict[str, Any]:
    return {"pk": f"site#{site_id}"}


def client_key(client_id: str) -> dict[str, Any]:
    return {"pk": f"client#{client_id}"}


class SiteRepository:
    def __init__(self, table_name: str | None = None) -> None:
        self.table = table_name or table_names().sites_table

    def create(self, site: Site, client: ClientRecord) -> None:
        site_item = {"pk": f"site#{site.id}", "kind": "site", **site.model_dump()}
        client_item = {
            "pk": f"client#{client.client_id}",
            "kind": "client",
            "client_id": client.client_id,
            "site_id": client.site_id,
            "secret_hash": client.secret_hash,
            "credential_version": client.credential_version,
            "epoch": client.epoch,
            "created_at": site.created_at,
        }
        actions: list[dict[str, Any]] = [
            {
                "Put": {
                    "TableName": self.table,
                    "Item": to_item(item),
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            }
            for item in (site_item, client_item)
        ]
        done = transact(actions, action=f"create site {site.id}")
        if done.failed_at(0):
            raise ConflictError(
                f"site '{site.id}' already exists; use `jobtriggers sites rotate-secret {site.id}` "
                "for new credentials"
            )
        if not done:
            raise ConflictError("a client id collided (very unlikely); run the command again")

    def get_site(self, site_id: str) -> Site | None:
        # Strongly consistent: a deleted site or rotated secret must lose access at once.
        item = get_item(self.table, site_key(site_id), f"read site {site_id}")
        if item is None:
            return None
        return Site.model_validate({k: v for k, v in item.items() if k in Site.model_fields})

    def require_site(self, site_id: str) -> Site:
        site = self.get_site(site_id)
        if site is None:
            raise NotFoundError(f"site '{site_id}' does not exist")
        return site

    def get_client(self, client_id: str) -> ClientRecord | None:
        item = get_item(self.table, client_key(client_id), "read client credentials")
        if item is None:
            return None
        return ClientRecord(
            client_id=item["client_id"],
            site_id=item["site_id"],
            secret_hash=item["secret_hash"],
            credential_version=int(item["credential_version"]),
            epoch=str(item.get("epoch", LEGACY_SITE_EPOCH)),
        )

    def rotate(self, site: Site, secret_hash: dict[str, Any]) -> Site:
        """Store a new secret hash and bump the credential version, if nobody rotated meanwhile."""
        new_version = site.credential_version + 1
        values = {":old": to_attr(site.credential_version), ":new": to_attr(new_version)}
        actions: list[dict[str, Any]] = [
            {
                "Update": {
                    "TableName": self.table,
                    "Key": to_item(site_key(site.id)),
                    "UpdateExpression": "SET credential_version = :new, rotated_at = :now",
                    "ConditionExpression": "credential_version = :old",
                    "ExpressionAttributeValues": {**values, ":now": to_attr(iso(utcnow()))},
                }
            },
            {
                "Update": {
                    "TableName": self.table,
                    "Key": to_item(client_key(site.client_id)),
                    "UpdateExpression": "SET credential_version = :new, secret_hash = :h",
                    "ConditionExpression": "credential_version = :old AND site_id = :s",
                    "ExpressionAttributeValues": {
                        **values,
                        ":h": to_attr(secret_hash),
                        ":s": to_attr(site.id),
                    },
                }
            },
        ]
        if not transact(actions, action=f"rotate the secret of site {site.id}"):
            raise ConflictError(
                f"the credentials of site '{site.id}' changed meanwhile (another rotation or a "
                "delete); run the command again"
            )
        return site.model_copy(update={"credential_version": new_version})

    def set_can_create_jobs(self, site_id: str, allowed: bool) -> Site:
        """Grant or revoke the site's permission to create jobs (POST /jobs): one update,
        conditional on the site existing; the site as it now is."""
        try:
            resp = dynamodb().update_item(
                TableName=self.table,
                Key=to_item(site_key(site_id)),
                UpdateExpression="SET can_create_jobs = :allowed",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues={":allowed": to_attr(allowed)},
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                raise NotFoundError(f"site '{site_id}' does not exist") from exc
            raise_store_error(exc, f"change what site {site_id} may do")
        except BotoCoreError as exc:
            raise_store_error(exc, f"change what site {site_id} may do")
        item = from_item(resp["Attributes"])
        return Site.model_validate({k: v for k, v in item.items() if k in Site.model_fields})

    def delete(self, site_id: str) -> Site:
        site = self.require_site(site_id)
        actions: list[dict[str, Any]] = [
            {"Delete": {"TableName": self.table, "Key": to_item(site_key(site_id))}},
            {"Delete": {"TableName": self.table, "Key": to_item(client_key(site.client_id))}},
        ]
        transact(actions, action=f"delete site {site_id}")
        return site

    def list_sites(self) -> list[Site]:
        """Every site. An operator's command, not a request path: the table is small and has no
        index to Query, so this Scans it (sites only, a page at a time)."""
        sites: list[Site] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "FilterExpression": "begins_with(pk, :p)",
            "ExpressionAttributeValues": {":p": to_attr("site#")},
        }
        while True:
            try:
                resp = dynamodb().scan(**kwargs)
            except (ClientError, BotoCoreError) as exc:
                raise_store_error(exc, "list sites")
            for raw in resp.get("Items", []):
                item = from_item(raw)
                sites.append(Site.model_validate({k: v for k, v in item.items() if k in Site.model_fields}))
            if not resp.get("LastEvaluatedKey"):
                return sorted(sites, key=lambda s: s.id)
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
