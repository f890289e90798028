"""``randomizer user …`` and ``randomizer token …``."""

from __future__ import annotations

import click
from flask.cli import with_appcontext
from sqlalchemy import select
from sqlalchemy.orm import Session

from randomizer.audit import SYSTEM
from randomizer.cli.common import read_stdin_lines, run
from randomizer.models import ApiToken, Role, User
from randomizer.services.users import (
    create_token,
    create_user,
    enrol_totp,
    get_user,
    remove_totp,
    revoke_token,
    update_user,
)

ROLE_CHOICE = click.Choice([r.value for r in Role])


@click.group("user")
def user_group() -> None:
    """User accounts."""


@user_group.command("add")
@click.argument("name")
@click.option("--role", required=True, type=ROLE_CHOICE)
@click.option("--site", "sites", multiple=True, help="Site code (repeat for several sites).")
@click.option("--email")
@click.option("--full-name")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@with_appcontext
def add_command(
    name: str,
    role: str,
    sites: tuple[str, ...],
    email: str | None,
    full_name: str | None,
    password_stdin: bool,
) -> None:
    """Create a user."""
    if password_stdin:
        password = read_stdin_lines(1)[0]
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    user = run(
        lambda s: create_user(
            s,
            username=name,
            role=role,
            password=password,
            email=email,
            full_name=full_name,
            sites=sites,
        )
    )
    scope = ", ".join(sorted(user.site_codes)) or "all sites"
    click.echo(f"created user {user.username} ({user.role.value}; {scope})")


@user_group.command("update")
@click.argument("name")
@click.option("--role", type=ROLE_CHOICE, help="New role.")
@click.option("--site", "sites", multiple=True, help="New site scope (repeat; replaces).")
@click.option("--all-sites", is_flag=True, help="Remove the site scope (admin, assessor).")
@click.option("--active/--inactive", default=None, help="Reactivate or deactivate the account.")
@click.option("--reason", help="Why (kept in the audit trail).")
@click.option(
    "--acknowledge-exposure",
    is_flag=True,
    help="Confirm a change that leaves exposure behind: unblinded to masked, or an "
    "assessor to unblinded (recorded in the audit trail).",
)
@with_appcontext
def update_command(
    name: str,
    role: str | None,
    sites: tuple[str, ...],
    all_sites: bool,
    active: bool | None,
    reason: str | None,
    acknowledge_exposure: bool,
) -> None:
    """Change a user's role, sites or status; their open sessions end at once."""
    if sites and all_sites:
        raise click.UsageError("give --site or --all-sites, not both")
    new_sites = () if all_sites else (sites or None)
    user = run(
        lambda s: update_user(
            s,
            get_user(s, name),
            actor=SYSTEM,
            role=Role(role) if role else None,
            sites=new_sites,
            active=active,
            reason=reason,
            acknowledge_exposure=acknowledge_exposure,
        )
    )
    scope = ", ".join(sorted(user.site_codes)) or "all sites"
    status = "active" if user.active else "inactive"
    click.echo(f"user {user.username}: {user.role.value}; {scope}; {status}")


@user_group.command("totp")
@click.argument("name")
@click.option("--replace", is_flag=True, help="Replace an existing second factor.")
@click.option("--remove", is_flag=True, help="Remove the second factor (e.g. a lost phone).")
@with_appcontext
def totp_command(name: str, replace: bool, remove: bool) -> None:
    """Enrol a user in TOTP; prints the otpauth:// URI for the authenticator app."""
    if remove:
        run(lambda s: remove_totp(s, get_user(s, name), actor=SYSTEM))
        click.echo(f"second factor of {name} removed")
        return
    uri = run(lambda s: enrol_totp(s, get_user(s, name), replace=replace))
    click.echo(
        f"Second factor enrolled for {name}. Add this URI to the user's authenticator app "
        "(as a QR code or by hand) and then delete it; it is shown only now:"
    )
    click.echo(uri)


@click.group("token")
def token_group() -> None:
    """API tokens."""


@token_group.command("create")
@click.argument("name")
@with_appcontext
def token_create_command(name: str) -> None:
    """Print a new API token for a user (stored hashed; shown only now)."""
    token = run(lambda s: create_token(s, get_user(s, name)))
    click.echo(f"API token for {name} (shown once; store it safely):")
    click.echo(token)


@token_group.command("list")
@click.argument("name", required=False)
@with_appcontext
def token_list_command(name: str | None) -> None:
    """List API tokens (id, user, prefix, created, revoked), of one user or all."""

    def rows(session: Session) -> list[str]:
        query = select(ApiToken, User.username).join(User).order_by(ApiToken.id)
        if name:
            query = query.where(User.id == get_user(session, name).id)
        lines = []
        for token, username in session.execute(query).tuples():
            revoked = (
                f"revoked {token.revoked_at:%Y-%m-%d %H:%M}Z" if token.revoked_at else "active"
            )
            lines.append(
                f"{token.id:>5}  {username:<16} {token.prefix}…  "
                f"created {token.created_at:%Y-%m-%d %H:%M}Z  {revoked}"
            )
        return lines

    for line in run(rows) or ["no tokens"]:
        click.echo(line)


@token_group.command("revoke")
@click.argument("token_id", type=int)
@with_appcontext
def token_revoke_command(token_id: int) -> None:
    """Revoke an API token by its id (see ``token list``)."""
    run(lambda s: revoke_token(s, token_id, actor=SYSTEM))
    click.echo(f"token {token_id} revoked")


COMMANDS = [user_group, token_group]
