"""Audit trail pages (admin, statistician): filter, export, verify, anchor, unblinding log."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator

from flask import Blueprint, Response, render_template, request
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from sqlalchemy import Engine

from randomizer import audit, audit_anchor
from randomizer.auth import current, roles_required
from randomizer.db import db, read_transaction
from randomizer.errors import InvalidInput, shown_message
from randomizer.instance import secrets_of
from randomizer.models import AuditHead, Role
from randomizer.services import audit_reports
from randomizer.services.audit_reports import CSV_COLUMNS, EventFilter
from randomizer.services.zones import instance_zone
from randomizer.views import navigation
from randomizer.views.audit_labels import action_label, readable
from randomizer.views.input_layer import query_number

bp = Blueprint("audit", __name__, url_prefix="/audit")
READERS = (Role.ADMIN, Role.STATISTICIAN)
#: Leading characters that make a spreadsheet treat a cell as a formula.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
#: Events read per short transaction of the CSV export.
EXPORT_CHUNK = 2000

bp.add_app_template_filter(action_label, "audit_action")
bp.add_app_template_filter(readable, "audit_values")

navigation.register(
    "audit.events",
    _l("Audit trail"),
    set(READERS),
    _l("every change and disclosure, filtered, exported, verified and anchored."),
)
navigation.register(
    "audit.unblinding_log",
    _l("Unblinding log"),
    set(READERS),
    _l("who unblinded which participant, when and why."),
)


@bp.get("")
@roles_required(*READERS)
def events() -> str | tuple[str, int]:
    try:
        flt = EventFilter.parse(request.args.to_dict(), zone=instance_zone(db.session()))
    except InvalidInput as err:
        return _events_page(EventFilter(), error=shown_message(err)), 422
    return _events_page(flt)


@bp.post("/verify")
@roles_required(*READERS)
def verify() -> str:
    return _events_page(EventFilter(), verification=verified_chain())


def verified_chain() -> audit.Verification:
    """Check the whole chain in a read transaction of its own, holding no lock meanwhile."""
    key = secrets_of(db.session()).audit_key
    db.session.rollback()
    with read_transaction(db.engine) as session:
        return audit.verify(session, key)


@bp.get("/export.csv")
@roles_required(*READERS)
def export() -> Response:
    flt = EventFilter.parse(request.args.to_dict(), zone=instance_zone(db.session()))
    # Not stream_with_context: the request's own transaction ends when this view returns,
    # and the rows are read in chunks, each in a short read transaction of its own.
    response = Response(_csv(_export_rows(db.engine, flt)), mimetype="text/csv")
    response.headers["Content-Disposition"] = "attachment; filename=audit-trail.csv"
    return response


@bp.get("/anchor")
@roles_required(*READERS)
def anchor_page() -> str:
    head = db.session.get(AuditHead, 1)
    public = secrets_of(db.session()).anchor_key().public_key().public_bytes_raw()
    return render_template(
        "audit/anchor.html", head=head, public_key=public.hex(), form=FlaskForm(), error=None
    )


@bp.post("/anchor")
@roles_required(*READERS)
def anchor_download() -> Response | tuple[str, int]:
    secrets = secrets_of(db.session())
    try:
        document = audit_anchor.make_anchor(db.session(), secrets.audit_key, secrets.anchor_key())
    except audit_anchor.AnchorError as err:
        db.session.rollback()
        return render_template(
            "error.html", title=_l("Not anchored"), detail=shown_message(err.text)
        ), 409
    db.session.rollback()
    response = Response(json.dumps(document, indent=2) + "\n", mimetype="application/json")
    name = f"audit-anchor-{document['events']}-{document['created_at'][:10]}.json"
    response.headers["Content-Disposition"] = f"attachment; filename={name}"
    return response


@bp.route("/unblinding", methods=["GET", "POST"])
@roles_required(*READERS)
def unblinding_log() -> str:
    form = FlaskForm()
    if request.method == "POST":
        entries = audit_reports.unblinding_log_with_arms(db.session(), current())
        db.session.commit()
        return render_template("audit/unblinding.html", entries=entries, arms=True, form=form)
    entries = audit_reports.unblinding_log(db.session(), current())
    return render_template("audit/unblinding.html", entries=entries, arms=False, form=form)


def _events_page(
    flt: EventFilter, *, error: str | None = None, verification: audit.Verification | None = None
) -> str:
    before = query_number("before", 0) or None
    page = audit_reports.find_events(db.session(), flt, before=before)
    more = len(page) == audit_reports.PAGE_SIZE
    return render_template(
        "audit/events.html",
        events=[audit_reports.event_dict(e) for e in page],
        flt=flt,
        args=flt.as_args(),
        next_before=page[-1].seq if more else None,
        error=error,
        verification=verification,
        form=FlaskForm(),
    )


def _export_rows(engine: Engine, flt: EventFilter) -> Iterator[tuple[object, ...]]:
    with read_transaction(engine) as session:
        after, upto = 0, audit_reports.head_seq(session)
    while True:
        with read_transaction(engine) as session:
            chunk = audit_reports.export_chunk(
                session, flt, after=after, upto=upto, limit=EXPORT_CHUNK
            )
        if not chunk:
            return
        yield from chunk
        after = int(chunk[-1][0])


def _csv(rows: Iterator[tuple[object, ...]]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow(_cell(value) for value in row)
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()


def _cell(value: object) -> object:
    # A reason typed by a user must not run as a formula when the export is opened.
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value
