"""``GET /api/v1/audit`` (events after a sequence number) and ``GET /api/v1/audit/verify``."""

from __future__ import annotations

from flask import Response, jsonify

from randomizer.db import db
from randomizer.models import AuditHead, Role
from randomizer.services import audit_reports
from randomizer.views.api import bp
from randomizer.views.api_schema import operation, query_of, reply
from randomizer.views.api_shapes import (
    AuditEventView,
    AuditPage,
    AuditQuery,
    ChainHead,
    ChainVerification,
)
from randomizer.views.audit_views import verified_chain

READERS = (Role.ADMIN, Role.STATISTICIAN)


@bp.get("/audit")
@operation("Audit events after a sequence number", roles=READERS, query=AuditQuery,
           answer=AuditPage)  # fmt: skip
def audit_feed() -> Response:
    wanted = query_of(AuditQuery)
    page = audit_reports.events_after(db.session(), wanted.after, wanted.limit)
    head = db.session.get(AuditHead, 1)
    last = page[-1].seq if page else wanted.after
    answer = AuditPage(
        after=wanted.after,
        events=[AuditEventView.model_validate(audit_reports.event_dict(e)) for e in page],
        next_after=last,
        more=bool(head and head.seq > last),
        head=ChainHead(events=head.seq if head else 0, digest=head.digest if head else None),
    )
    return jsonify(reply(answer))


@bp.get("/audit/verify")
@operation("Verify the audit chain", roles=READERS, answer=ChainVerification)
def audit_verify() -> Response:
    result = verified_chain()
    answer = ChainVerification(ok=result.ok, events=result.events, head=result.head)
    if not result.ok:
        answer.first_bad_event, answer.problem = result.bad_seq, result.problem
    return jsonify(reply(answer))
