"""Declarative base, naming convention and the engine tweaks each backend needs."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, ClassVar

from flask import current_app
from flask_sqlalchemy import SQLAlchemy
from flask_sqlalchemy.session import Session as FlaskSession
from sqlalchemy import DateTime, Engine, MetaData, String, TypeDecorator, event
from sqlalchemy.orm import DeclarativeBase, Session, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> dt.datetime:
    """Return the current time, timezone-aware, in UTC."""
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timestamp stored in UTC that always comes back timezone-aware.

    SQLite keeps no zone; PostgreSQL would convert to the session zone. Normalising here
    keeps comparisons and the audit chain's canonical form identical on both backends.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given for a UTC column")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {dt.datetime: UTCDateTime()}


intpk = Annotated[int, mapped_column(primary_key=True)]
code = Annotated[str, mapped_column(String(64))]
name = Annotated[str, mapped_column(String(200))]
created = Annotated[dt.datetime, mapped_column(default=utcnow)]


class AppSession(FlaskSession):
    """Carries the app's instance secrets in ``info`` so services need no Flask import."""

    def __init__(self, db: SQLAlchemy, **kwargs: Any) -> None:
        super().__init__(db, **kwargs)
        self.info["secrets"] = current_app.extensions.get("randomizer.secrets")
        self.info["signature_throttle"] = current_app.extensions.get("randomizer.throttle")


db = SQLAlchemy(
    metadata=Base.metadata, disable_autonaming=True, session_options={"class_": AppSession}
)


#: Execution option of a connection whose transactions only read (see ``read_transaction``).
READ_ONLY = "randomizer_read_only"


@contextmanager
def read_transaction(engine: Engine) -> Iterator[Session]:
    """A short read-only transaction on a connection of its own, for streamed or long reads.

    It never takes the write lock (SQLite: a deferred, query-only transaction reading a WAL
    snapshot; PostgreSQL: READ ONLY), so a download that is slow to consume blocks no one;
    and it ends when the block does, whatever the request's own session is doing.
    """
    with engine.connect() as conn:
        conn.execution_options(**{READ_ONLY: True})
        with Session(bind=conn) as session:
            try:
                yield session
            finally:
                session.rollback()
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("PRAGMA query_only=OFF")  # the pooled connection writes again
            conn.rollback()


def configure_engine(engine: Engine) -> None:
    """Apply per-connection settings that the backend needs for safe concurrent use."""
    if engine.dialect.name != "sqlite":

        @event.listens_for(engine, "begin")
        def _read_only_begin(conn: Any) -> None:
            if conn.get_execution_options().get(READ_ONLY):
                conn.exec_driver_sql("SET TRANSACTION READ ONLY")

        return

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy emit BEGIN itself (below) instead of pysqlite's lazy BEGIN, so
        # that a transaction takes the write lock up front and never deadlocks on upgrade.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _sqlite_begin(conn: Any) -> None:
        if conn.get_execution_options().get(READ_ONLY):
            conn.exec_driver_sql("BEGIN")  # deferred: a snapshot, never the write lock
            conn.exec_driver_sql("PRAGMA query_only=ON")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
