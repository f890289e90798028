"""``GET /healthz`` (SPEC §4.2): for load balancers and monitoring; no sign-in, no details.

200 ``{"status": "ok"}`` when the database answers, its schema is at the head migration and
the instance keys are loaded; 503 ``{"status": "unavailable"}`` otherwise. Which of the
three failed is not said: the answer is public.
"""

from __future__ import annotations

import functools

from alembic.runtime.migration import MigrationContext
from flask import Blueprint, Response, current_app, jsonify
from sqlalchemy.exc import SQLAlchemyError

from randomizer import migrate
from randomizer.db import db, read_transaction
from randomizer.errors import RETRY_AFTER_SECONDS

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    if _healthy():
        return jsonify({"status": "ok"}), 200
    response = jsonify({"status": "unavailable"})
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response, 503


def _healthy() -> bool:
    if current_app.extensions.get("randomizer.secrets") is None:
        return False
    try:
        with read_transaction(db.engine) as session:
            revision = MigrationContext.configure(session.connection()).get_current_revision()
    except SQLAlchemyError:
        db.session.remove()
        return False
    return revision == _head()


@functools.cache
def _head() -> str | None:
    return migrate.head_revision(db.engine)
