"""Helpers shared by the command modules: run a service in one transaction."""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO, TypeVar

import click
from sqlalchemy.orm import Session

from randomizer import audit
from randomizer.crypto import IntegrityFailure, KeyFileError
from randomizer.db import db
from randomizer.errors import RandomizerError
from randomizer.services.bulk_unblinding import Signature

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


@contextmanager
def file_after_commit(out: Path) -> Iterator[TextIO]:
    """A UTF-8 text file (mode 0600) written beside ``out`` and renamed to it only when the
    block succeeds (its transaction committed): an audited export never exists without its
    audit event, and a refusal leaves no file."""
    partial = out.with_name(f".{out.name}.partial")
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        raise click.ClickException(f"{out}: cannot be written ({exc.strerror})") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            yield handle
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)


def signature_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--statistician NAME --second NAME``: the signers of a two-person unblinded export."""
    second = click.option(
        "--second", metavar="NAME", help="Second unblinded signer (statistician or pharmacist)."
    )
    first = click.option(
        "--statistician", metavar="NAME", help="Signing statistician (passwords on stdin)."
    )
    return first(second(command))


def read_signatures(statistician: str | None, second: str | None) -> list[Signature]:
    """The signers named, with their passwords from standard input (one per line)."""
    if second and not statistician:
        raise click.UsageError("--second needs --statistician (the first signer)")
    names = [name for name in (statistician, second) if name]
    passwords = read_stdin_lines(len(names)) if names else []
    return [Signature(name, password) for name, password in zip(names, passwords, strict=True)]
