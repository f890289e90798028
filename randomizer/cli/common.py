"""Helpers shared by the command modules: run a service in one transaction."""

from __future__ import annotations

import getpass
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import click
from sqlalchemy.orm import Session

from randomizer import audit
from randomizer.crypto import IntegrityFailure, KeyFileError
from randomizer.db import db
from randomizer.errors import RandomizerError

T = TypeVar("T")


@contextmanager
def transaction() -> Iterator[Session]:
    """Yield the session; commit on success, roll back and report a clean error otherwise."""
    session = db.session()
    try:
        yield session
        session.commit()
    except RandomizerError as exc:
        session.rollback()
        where = f"{exc.field}: " if exc.field and f"{exc.field}:" not in exc.message else ""
        raise click.ClickException(f"{where}{exc.message}") from None
    except (IntegrityFailure, KeyFileError) as exc:
        session.rollback()
        raise click.ClickException(str(exc)) from None
    except BaseException:
        session.rollback()
        raise


def run(service: Callable[[Session], T]) -> T:
    """Run one service call in its own transaction."""
    with transaction() as session:
        result: T = service(session)
    return result


def read_stdin_lines(count: int) -> list[str]:
    """Read ``count`` lines from standard input (passwords), without echo or prompts."""
    stream = sys.stdin
    lines = []
    for _ in range(count):
        line = stream.readline()
        if not line:
            raise click.ClickException(f"expected {count} line(s) on standard input")
        lines.append(line.rstrip("\r\n"))
    return lines


def console_actor() -> audit.Actor:
    """The person at the console, as far as the operating system knows them."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return audit.Actor(f"cli:{user}"[:64], audit.SYSTEM_ACTOR)
