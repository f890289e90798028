"""The ``randomizer`` console script: Flask's CLI plus the service's command groups."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from flask import Flask
from flask.cli import FlaskGroup

from randomizer import create_app
from randomizer.errors import ConfigurationError


def _strict_app() -> Flask:
    return create_app()


cli = FlaskGroup(
    name="randomizer",
    create_app=_strict_app,
    add_version_option=False,
    load_dotenv=False,
    help="Randomization and blinding service for blinded clinical trials.",
)


#: Command modules; each exports COMMANDS. Areas not built yet are simply absent.
COMMAND_MODULES = (
    "setup", "study", "users", "audit", "lists", "kits", "keys", "participants", "outbox",
    "backup", "export", "reports",
)  # fmt: skip


def _register() -> None:
    import importlib

    for name in COMMAND_MODULES:
        qualified = f"randomizer.cli.{name}"
        try:
            module = importlib.import_module(qualified)
        except ModuleNotFoundError as exc:
            if exc.name != qualified:
                raise
            continue
        for command in module.COMMANDS:
            cli.add_command(command)


_register()


def main(argv: list[str] | None = None) -> Any:
    """Entry point of the console script."""
    try:
        return cli.main(args=argv, prog_name="randomizer")
    except ConfigurationError as exc:
        click.echo(f"Error: {exc.message}", err=True)
        sys.exit(2)


def instance_path() -> Path:
    """The instance folder (RANDOMIZER_INSTANCE_PATH, else ./instance)."""
    import os

    return Path(os.environ.get("RANDOMIZER_INSTANCE_PATH") or Path.cwd() / "instance").resolve()
