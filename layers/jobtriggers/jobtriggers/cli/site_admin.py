"""`jobtriggers sites ...`: operators create sites and manage their credentials (AWS access, not HTTP).

A client secret is printed once, by `create` and `rotate-secret`, and stored only as a salted hash.
Secrets never come in on the command line and are never logged.
"""

from __future__ import annotations

from typing import Any

import typer

from jobtriggers.cli.common import (
    EndpointOption,
    JsonOption,
    StackOption,
    configure_store,
    console,
    err_console,
    print_json,
    print_table,
    reported_errors,
)
from jobtriggers.models.sites import Site, SiteCredentials

app = typer.Typer(no_args_is_help=True, help="Create sites, rotate their secrets, list and delete them.")

SiteIdArgument = typer.Argument(..., help="The site's id, e.g. nersc (letters, digits, '.', '_', '-')")


SITE_COLUMNS = ["site_id", "client_id", "capabilities", "can_create_jobs", "created_at", "credential_version"]


def _site_row(site: Site) -> dict[str, Any]:
    return {
        "site_id": site.id,
        "client_id": site.client_id,
        "capabilities": ", ".join(site.capability_ids),
        "can_create_jobs": "yes" if site.can_create_jobs else "no",
        "created_at": site.created_at,
        "credential_version": site.credential_version,
    }


def _show_credentials(creds: SiteCredentials, as_json: bool, what: str) -> None:
    if as_json:
        print_json(creds.model_dump())
        return
    print_table([creds.model_dump()], ["site_id", "client_id", "client_secret"], title=what)
    err_console.print(
        "[yellow]The client secret is shown only now; only a hash of it is stored.[/yellow] "
        "Give it to the site over a secure channel."
    )


@app.command("create")
def create(
    site_id: str = SiteIdArgument,
    capability: list[str] = typer.Option(
        [],
        "--capability",
        "-c",
        help="A capability the site has (repeat for more); see seed/capabilities.json",
    ),
    can_create_jobs: bool = typer.Option(
        False,
        "--can-create-jobs",
        help="The site may create jobs over the API (POST /jobs), as NMDC's workflow automation does",
    ),
    endpoint_url: str | None = EndpointOption,
    stack: str | None = StackOption,
    as_json: bool = JsonOption,
) -> None:
    """Create a site and print its client id and secret (once)."""
    configure_store(endpoint_url, stack)
    from jobtriggers import wiring
    from jobtriggers.logic.sites import create_site

    with reported_errors():
        creds = create_site(
            wiring.sites(), wiring.registry(), site_id, capability, can_create_jobs=can_create_jobs
        )
    _show_credentials(creds, as_json, f"site {site_id} created")


@app.command("allow-job-creation")
def allow_job_creation(
    site_id: str = SiteIdArgument,
    revoke: bool = typer.Option(False, "--revoke", help="Take the permission away instead"),
    endpoint_url: str | None = EndpointOption,
    stack: str | None = StackOption,
    as_json: bool = JsonOption,
) -> None:
    """Let a site create jobs over the API (POST /jobs), or with --revoke stop it. Takes effect at
    the site's next request; the jobs it created stay, and it may still claim and cancel them."""
    configure_store(endpoint_url, stack)
    from jobtriggers import wiring
    from jobtriggers.logic.sites import check_site_id

    with reported_errors():
        check_site_id(site_id)
        site = wiring.sites().set_can_create_jobs(site_id, not revoke)
    if as_json:
        print_json({"site_id": site.id, "can_create_jobs": site.can_create_jobs})
        return
    state = "may create jobs" if site.can_create_jobs else "may no longer create jobs"
    console.print(f"site [bold]{site.id}[/bold] {state}")


@app.command("rotate-secret")
def rotate(
    site_id: str = SiteIdArgument,
    endpoint_url: str | None = EndpointOption,
    stack: str | None = StackOption,
    as_json: bool = JsonOption,
) -> None:
    """Give a site a new client secret; its old secret and every token issued under it stop working."""
    configure_store(endpoint_url, stack)
    from jobtriggers import wiring
    from jobtriggers.logic.sites import rotate_secret

    with reported_errors():
        creds = rotate_secret(wiring.sites(), site_id)
    _show_credentials(creds, as_json, f"new secret for site {site_id}")


@app.command("list")
def list_sites(
    endpoint_url: str | None = EndpointOption,
    stack: str | None = StackOption,
    as_json: bool = JsonOption,
) -> None:
    """List sites (never their secrets)."""
    configure_store(endpoint_url, stack)
    from jobtriggers import wiring

    with reported_errors():
        sites = wiring.sites().list_sites()
    if as_json:
        print_json([s.model_dump() for s in sites])
        return
    print_table(
        [_site_row(s) for s in sites],
        SITE_COLUMNS,
        title="sites",
    )


@app.command("show")
def show(
    site_id: str = SiteIdArgument,
    endpoint_url: str | None = EndpointOption,
    stack: str | None = StackOption,
    as_json: bool = JsonOption,
) -> None:
    """Show one site."""
    configure_store(endpoint_url, stack)
    from jobtriggers import wiring
    from jobtriggers.logic.sites import check_site_id

    with reported_errors():
        check_site_id(site_id)
        site = wiring.sites().require_site(site_id)
    if as_json:
        print_json(site.model_dump())
        return
    print_table(
        [_site_row(site)],
        SITE_COLUMNS,
        title=f"site {site_id}",
    )


@app.command("delete")
def delete(
    site_id: str = SiteIdArgument,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation"),
    endpoint_url: str | None = EndpointOption,
    stack: str | None = StackOption,
    as_json: bool = JsonOption,
) -> None:
    """Delete a site and its credentials; its tokens stop working at once (jobs and operations stay)."""
    if not yes and not typer.confirm(f"Delete site {site_id} and its credentials?"):
        raise typer.Exit(1)
    configure_store(endpoint_url, stack)
    from jobtriggers import wiring
    from jobtriggers.logic.sites import check_site_id

    with reported_errors():
        check_site_id(site_id)
        site = wiring.sites().delete(site_id)
    if as_json:
        print_json({"deleted": site.id})
    else:
        console.print(f"site [bold]{site.id}[/bold] deleted")
