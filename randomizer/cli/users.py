"""``randomizer user add`` and ``randomizer token create``."""

from __future__ import annotations

import click
from flask.cli import with_appcontext

from randomizer.cli.common import read_stdin_lines, run
from randomizer.models import Role
from randomizer.services.users import create_token, create_user, get_user


@click.group("user")
def user_group() -> None:
    """User accounts."""


@user_group.command("add")
@click.argument("name")
@click.option("--role", required=True, type=click.Choice([r.value for r in Role]))
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


COMMANDS = [user_group, token_group]
