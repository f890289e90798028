"""A streamed download holds no lock and no transaction while the client reads it.

The audit CSV export is read in chunks, each in a short read-only transaction of its own:
while a slow client is half-way through it, everyone else signs in and randomizes.
"""

from __future__ import annotations

import threading
from typing import Any

import sqlalchemy as sa

from randomizer.audit import SYSTEM
from randomizer.services.kits import generate_kits
from tests.conftest import PASSWORD, login
from tests.enrollment_support import call, prepare_supply, register, token_for


def _half_read_export(app, session, study):
    """An admin's audit export with its first piece read and the rest not yet.

    It runs in a thread of its own, outside the test's app context, so that it gets a
    database session (and connection) of its own as under a real server.
    """
    prepare_supply(session, study)
    generate_kits(session, study, count=40, site="S1", actor=SYSTEM)  # a longer trail
    session.commit()
    started: list[Any] = []

    def download() -> None:
        admin = app.test_client()
        login(admin, "admin1")
        export = admin.get("/audit/export.csv")
        pieces = iter(export.response)
        started.extend([export.status_code, next(pieces), pieces])

    thread = threading.Thread(target=download)
    thread.start()
    thread.join(60)
    status, first, rest = started
    assert status == 200
    return first, rest


def test_sign_in_and_randomization_work_while_an_audit_export_is_being_read(
    app, session, study, users
):
    participant = register(session, study, users["investigator"], "SCR-1")
    token = token_for(session, users["investigator"])
    first, rest = _half_read_export(app, session, study)

    other = app.test_client()
    assert login(other, "inv1").status_code == 302
    body = {"signature": {"password": PASSWORD}}
    path = f"/api/v1/participants/{participant.id}/randomize"
    assert call(other, "POST", path, token, body).status_code == 201

    text = (first + b"".join(rest)).decode("utf-8")
    assert text.startswith("seq,")
    assert "kit.generate" in text or "kits.generate" in text
    # The export holds the trail as it was when it started.
    assert "participant.randomize" not in text


def test_a_half_read_export_keeps_no_transaction_open(app, session, study, users, backend):
    _half_read_export(app, session, study)
    session.rollback()
    engine = sa.create_engine(app.config["SQLALCHEMY_DATABASE_URI"])
    with engine.connect() as conn:
        if backend == "sqlite":
            conn.exec_driver_sql("PRAGMA busy_timeout=0")
            conn.exec_driver_sql("BEGIN IMMEDIATE")  # fails at once if a writer holds the lock
        else:
            open_ones = conn.scalar(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()"
                )
            )
            assert open_ones == 0
        conn.rollback()
    engine.dispose()
