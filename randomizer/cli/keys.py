"""``randomizer keys rotate``: a new master key, every data key re-wrapped under it."""

from __future__ import annotations

import getpass

import click
from flask.cli import with_appcontext

from randomizer import audit
from randomizer.cli.common import transaction
from randomizer.crypto import write_secret_file
from randomizer.instance import MASTER_KEY_FILE, secrets_of
from randomizer.services.keyring import rotate_master_key
from randomizer.services.users import reseal_second_factors


@click.group("keys")
def keys_group() -> None:
    """The master key."""


@keys_group.command("rotate")
@with_appcontext
def rotate_command() -> None:
    """Make a new master key and re-wrap every data key under it, in one transaction.

    The key file gets the new key ring (new key first, old keys kept so that backups still
    open) before the transaction commits: a crash in between leaves data wrapped under the
    old key, which is still on file, never under a key that is not.
    """
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    actor = audit.Actor(f"cli:{user}"[:64], audit.SYSTEM_ACTOR)
    with transaction() as session:
        secrets = secrets_of(session)
        if secrets.ring_from_env:
            raise click.ClickException(
                "the master key comes from RANDOMIZER_MASTER_KEY: rotate it in your secret "
                "store instead (a new key ring must be in place before data is re-wrapped)"
            )
        old_ring = secrets.reload_ring()
        try:
            old_id, new_id, count = rotate_master_key(session, actor=actor)
            resealed = reseal_second_factors(session)
            write_secret_file(secrets.path / MASTER_KEY_FILE, secrets.ring.to_text())
        except BaseException:
            secrets.ring = old_ring
            raise
    click.echo(f"master key rotated: {old_id} -> {new_id}")
    click.echo(f"{count} data key(s) re-wrapped, {resealed} second-factor secret(s) re-sealed")
    click.echo(f"{secrets.path / MASTER_KEY_FILE} now holds the new key and the old one(s); "
               "back it up now")  # fmt: skip


COMMANDS = [keys_group]
