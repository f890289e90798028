"""``GET /api/v1/audit`` (events after a sequence number) and ``GET /api/v1/audit/verify``."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify

from randomizer.db import db
from randomizer.models import AuditHead, Role
from randomizer.services import audit_reports
from randomizer.views.api import bp, require
from randomizer.views.audit_views import verified_chain
from randomizer.views.input_layer import query_number

DEFAULT_LIMIT = 500


@bp.get("/audit")
def audit_feed() -> Response:
    require(Role.ADMIN, Role.STATISTICIAN)
    after, limit = query_number("after", 0), query_number("limit", DEFAULT_LIMIT)
    page = audit_reports.events_after(db.session(), after, limit)
    head = db.session.get(AuditHead, 1)
    last = page[-1].seq if page else after
    return jsonify(
        {
            "after": after,
            "events": [audit_reports.event_dict(e) for e in page],
            "next_after": last,
            "more": bool(head and head.seq > last),
            "head": {"events": head.seq if head else 0, "digest": head.digest if head else None},
        }
    )


@bp.get("/audit/verify")
def audit_verify() -> Response:
    require(Role.ADMIN, Role.STATISTICIAN)
    result = verified_chain()
    body: dict[str, Any] = {"ok": result.ok, "events": result.events, "head": result.head}
    if not result.ok:
        body.update(first_bad_event=result.bad_seq, problem=result.problem)
    return jsonify(body)
