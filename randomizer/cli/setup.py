"""``randomizer init`` and ``randomizer demo``."""

from __future__ import annotations

import stat
from pathlib import Path

import click
from flask import Flask
from sqlalchemy import inspect, text

from randomizer import create_app, migrate
from randomizer.db import db
from randomizer.instance import AUDIT_KEY_FILE, MASTER_KEY_FILE, ensure_instance_files, mark_demo


def initialise() -> Flask:
    """Create missing keys, then create or upgrade the schema. Idempotent."""
    from randomizer.cli import instance_path

    path = instance_path()
    # Only the service account needs the folder: it holds the keys and, by default, the DB.
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    _refuse_new_keys_over_data(path)
    created = ensure_instance_files(path)
    for name in created:
        click.echo(f"created {path / name} (mode 0600) — back it up, see README")
    app = create_app()
    with app.app_context():
        before, after = migrate.upgrade(db.engine)
        url = db.engine.url.render_as_string(hide_password=True)
        _restrict_sqlite_file(
            db.engine.url.database if db.engine.dialect.name == "sqlite" else None
        )
    if before == after:
        click.echo(f"database {url} is up to date (revision {after})")
    else:
        click.echo(f"database {url}: schema {before or 'empty'} -> {after}")
    return app


def _restrict_sqlite_file(database: str | None) -> None:
    """Make the SQLite file (password hashes, sealed data) readable by its owner only."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    for name in (database, f"{database}-wal", f"{database}-shm"):
        target = Path(name)
        if target.exists() and stat.S_IMODE(target.stat().st_mode) & 0o077:
            target.chmod(0o600)


def _refuse_new_keys_over_data(path: Path) -> None:
    """Never create a new master or audit key beside data sealed or chained by the old one."""
    missing = [n for n in (MASTER_KEY_FILE, AUDIT_KEY_FILE) if not (path / n).exists()]
    if not missing:
        return
    app = create_app(require_keys=False)
    with app.app_context():
        tables = set(inspect(db.engine).get_table_names())
        rows = 0
        for table in ("data_key", "audit_event"):
            if table in tables:
                rows += db.session.scalar(text(f"SELECT count(*) FROM {table}")) or 0
        db.session.rollback()
    if rows:
        files = ", ".join(str(path / n) for n in missing)
        raise click.ClickException(
            f"key file {files} is missing but the database already holds sealed data or "
            "audit events. Restore the file from your key backup; a new key would make "
            "that data unreadable."
        )


@click.command("init")
def init_command() -> None:
    """Create or upgrade the schema and create the instance keys if absent."""
    initialise()


@click.command("demo")
@click.option(
    "--logins-only",
    is_flag=True,
    help="Only print the demo logins of an existing instance; change nothing.",
)
def demo_command(logins_only: bool) -> None:
    """Initialise and load the NCT03917797 demo study, users, a dummy list and kits."""
    from randomizer.services.demo import build_demo, demo_logins

    if logins_only:
        app = create_app()
        with app.app_context():
            lines = demo_logins(db.session())
            db.session.rollback()
        for line in lines:
            click.echo(line)
        return
    app = initialise()
    mark_demo(Path(app.instance_path))
    with app.app_context():
        lines = build_demo(db.session())
        db.session.commit()
    for line in lines:
        click.echo(line)


COMMANDS = [init_command, demo_command]
