"""Consistent backups of the database, and restores into an empty one (SPEC §4.1).

PostgreSQL: ``pg_dump --format=custom`` (one snapshot, taken without blocking the service)
and ``pg_restore`` in a single transaction. SQLite: the online backup API, which copies a
consistent snapshot while the service keeps writing. The key files are never part of a
backup: the database holds allocations only sealed under keys that are escrowed apart, so a
backup alone discloses no arm. No Flask.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

from sqlalchemy import Engine, inspect
from sqlalchemy.engine import URL

from randomizer.errors import N_, Conflict, InvalidInput

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_MAGIC, SQLITE_MAGIC = b"PGDMP", b"SQLite format 3\x00"
TIMEOUT_SECONDS = 3600


class BackupFailed(Conflict):
    slug, title = "backup-failed", "Backup or restore failed"


def backup(engine: Engine, out: Path) -> int:
    """Write a consistent backup of the database to ``out``; returns its size in bytes."""
    if out.exists():
        raise InvalidInput(N_("%(out)s exists already: choose a new file."), field="out", out=out)
    tmp = out.with_name(out.name + ".partial")
    if engine.dialect.name == "sqlite":
        with _sqlite(engine.url) as source, sqlite3.connect(tmp) as target:
            source.backup(target)
        target.close()
    else:
        _run_pg("pg_dump", engine.url, "--format=custom", "--no-owner", f"--file={tmp}")
    os.chmod(tmp, 0o600)
    tmp.rename(out)
    return out.stat().st_size


def restore(engine: Engine, backup_file: Path) -> None:
    """Restore ``backup_file`` into the (empty) database of ``engine``."""
    magic = _magic(backup_file)
    if inspect(engine).get_table_names():
        raise Conflict(
            N_("The target database is not empty: restore only into a new, empty database."),
            field="database",
        )
    engine.dispose()  # no pooled connection may hold the file or the database
    if engine.dialect.name == "sqlite":
        if magic != SQLITE_MAGIC:
            raise InvalidInput(
                N_("%(backup_file)s is not a SQLite backup."), field="file", backup_file=backup_file
            )
        with sqlite3.connect(backup_file) as source, _sqlite(engine.url) as target:
            source.backup(target)
        source.close()
        os.chmod(str(engine.url.database), 0o600)
        return
    if magic != PG_MAGIC:
        raise InvalidInput(
            N_("%(backup_file)s is not a PostgreSQL backup (pg_dump)."),
            field="file",
            backup_file=backup_file,
        )
    _run_pg(
        "pg_restore", engine.url, "--no-owner", "--no-privileges", "--exit-on-error",
        "--single-transaction", str(backup_file),
    )  # fmt: skip


def _magic(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            head = handle.read(16)
    except OSError as exc:
        raise InvalidInput(
            N_("%(path)s: %(strerror)s."), field="file", path=path, strerror=exc.strerror
        ) from None
    for magic in (PG_MAGIC, SQLITE_MAGIC):
        if head.startswith(magic):
            return magic
    raise InvalidInput(N_("%(path)s is not a randomizer backup."), field="file", path=path)


def _sqlite(url: URL) -> sqlite3.Connection:
    return sqlite3.connect(str(url.database), timeout=30)


def _run_pg(tool: str, url: URL, *args: str) -> None:
    """Run a PostgreSQL client tool against the URL's database (password via PGPASSWORD)."""
    program = shutil.which(tool) or str(PG_BIN / tool)
    target = url.set(drivername="postgresql", password=None).render_as_string()
    env = {**os.environ, "PGPASSWORD": url.password or os.environ.get("PGPASSWORD", "")}
    try:
        subprocess.run(
            [program, f"--dbname={target}", *args],
            env=env, check=True, capture_output=True, text=True, timeout=TIMEOUT_SECONDS,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", None) or str(exc)
        raise BackupFailed(
            N_("%(tool)s failed: %(detail)s"), tool=tool, detail=detail.strip()[-500:]
        ) from None
