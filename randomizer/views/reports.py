"""Report pages, each also a CSV download (UTF-8, header row): enrolment by site and stratum
with a monthly chart, the CONSORT-style screening log, kit accountability, and the DSMB
report (statistician only; every opening and download is audited). Site users see their
own sites; the blinded reports never depend on arms."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

from flask import Blueprint, Response, render_template, request
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from markupsafe import Markup, escape
from sqlalchemy import select

from randomizer.auth import current, current_actor, roles_required
from randomizer.db import db
from randomizer.models import Participant, Role, Study
from randomizer.services import reports
from randomizer.services.studies import definition_of, get_study
from randomizer.views import navigation
from randomizer.views.study_text import local_time

bp = Blueprint("reports", __name__, url_prefix="/reports")

READERS = (Role.ADMIN, Role.STATISTICIAN, Role.INVESTIGATOR, Role.ASSESSOR)
KIT_READERS = (Role.ADMIN, Role.STATISTICIAN, Role.PHARMACIST)
FORMAT = "<any(html, csv):fmt>"
Rows = Sequence[Sequence[object]]
MAX_SEARCH = 64

navigation.register(
    "reports.index",
    _l("Reports"),
    set(READERS) | set(KIT_READERS),
    _l("enrolment, screening log, kit accountability and, for the statistician, the DSMB report"),
)


def _sites(study: Study) -> list[str] | None:
    """The sites the user's reports cover (None: all)."""
    user = current()
    if user.role in (Role.ADMIN, Role.STATISTICIAN) or (
        user.role is Role.ASSESSOR and not user.sites
    ):
        return None
    return sorted(user.site_codes & {s.code for s in study.sites})


def _answer(fmt: str, study: Study, name: str, header: list[str], labels: list[str],
            rows: Rows, **extra: Any) -> Any:  # fmt: skip
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(header)
        writer.writerows(rows)
        disposition = f'attachment; filename="{study.code}-{name}.csv"'
        return Response(out.getvalue(), mimetype="text/csv",
                        headers={"Content-Disposition": disposition})  # fmt: skip
    return render_template("reports/table.html", study=study, name=name, labels=labels,
                           rows=rows, **extra)  # fmt: skip


@bp.get("/")
@roles_required(*READERS, *KIT_READERS)
def index() -> str:
    studies = db.session.scalars(select(Study).order_by(Study.code)).all()
    return render_template("reports/index.html", studies=studies, role=current().role)


@bp.get(f"/<code>/enrolment.{FORMAT}")
@roles_required(*READERS)
def enrolment(code: str, fmt: str) -> Any:
    study = get_study(db.session(), code)
    people = reports.participants(db.session(), study, _sites(study))
    rows = [(r.site, r.stratum, r.screened, r.randomized) for r in reports.enrolment(people)]
    months = reports.enrolment_by_month(people, definition_of(study).sites)
    return _answer(fmt, study, "enrolment", ["site", "stratum", "screened", "randomized"],
                   [_("Site"), _("Stratum"), _("Screened"), _("Randomized")], rows,
                   title=_("Enrolment"), chart=bar_chart(months))  # fmt: skip


@bp.get(f"/<code>/screening.{FORMAT}")
@roles_required(*READERS)
def screening(code: str, fmt: str) -> Any:
    study = get_study(db.session(), code)
    log = reports.screening_log(reports.participants(db.session(), study, _sites(study)))
    rows: list[tuple[str, str, int]] = [
        ("screened", str(_("Screened")), log.screened),
        ("screen_failed", str(_("Screen failed")), log.screen_failed),
        *((f"failed:{c}", str(_("failed criterion %(code)s", code=c)), n)
          for c, n in log.failed_criteria.items()),
        ("eligible", str(_("Eligible, not randomized")), log.eligible_waiting),
        ("withdrawn_before_randomization", str(_("Withdrawn before randomization")),
         log.withdrawn_before_randomization),
        ("randomized", str(_("Randomized")), log.randomized),
        ("withdrawn", str(_("Withdrawn after randomization")), log.withdrawn),
        ("randomized_in_error", str(_("Randomized in error")), log.randomized_in_error),
    ]  # fmt: skip
    return _answer(fmt, study, "screening-log", ["step", "label", "count"],
                   [_("What"), _("Participants")], rows,
                   title=_("Screening log"))  # fmt: skip


@bp.get(f"/<code>/kits.{FORMAT}")
@roles_required(*KIT_READERS)
def kits(code: str, fmt: str) -> Any:
    study = get_study(db.session(), code)
    sites = None if current().role is not Role.PHARMACIST else sorted(current().site_codes)
    if current().role.unblinded:
        by_product = reports.kit_accountability_by_product(db.session(), study, sites)
        return _answer(fmt, study, "kits", ["location", "status", "product", "kits"],
                       [_("Location"), _("Status"), _("Product"), _("Kits")], by_product,
                       title=_("Kit accountability"))  # fmt: skip
    rows = reports.kit_accountability(db.session(), study, sites)
    return _answer(fmt, study, "kits", ["location", "status", "kits"],
                   [_("Location"), _("Status"), _("Kits")], rows,
                   title=_("Kit accountability"))  # fmt: skip


@bp.get(f"/<code>/dsmb.{FORMAT}")
@roles_required(Role.STATISTICIAN)
def dsmb(code: str, fmt: str) -> Any:
    study = get_study(db.session(), code)
    found = reports.dsmb_report(db.session(), study, actor=current_actor())
    db.session.commit()  # the audit event is kept before the report leaves the server
    rows = [(r.arm, r.site, r.randomized, r.withdrawn, r.unblinded) for r in found]
    return _answer(fmt, study, "dsmb", ["arm", "site", "randomized", "withdrawn", "unblinded"],
                   [_("Arm"), _("Site"), _("Randomized"), _("Withdrawn"), _("Unblinded")],
                   rows, title=_("DSMB report"), unblinded=True)  # fmt: skip


@bp.get(f"/<code>/participants.{FORMAT}")
@roles_required(*READERS)
def participants(code: str, fmt: str) -> Any:
    study = get_study(db.session(), code)
    search = request.args.get("q", "").strip()[:MAX_SEARCH]
    page = request.args.get("page", 1, type=int)
    size = None if fmt == "csv" else reports.PAGE_SIZE
    found = reports.participant_page(db.session(), study, sites=_sites(study), search=search,
                                     page=page, size=size)  # fmt: skip

    # The CSV keeps UTC; the page shows each time in its site's zone, named.
    def when(p: Participant) -> str:
        if fmt == "csv":
            return p.randomized_at.strftime("%Y-%m-%d %H:%M") if p.randomized_at else ""
        return local_time(p.randomized_at, study, p.site_code)

    rows = [(p.screening_number, p.site_code, p.status.value, p.randomization_number or "",
             when(p)) for p in found.rows]  # fmt: skip
    header = ["screening_number", "site", "status", "randomization_number", "randomized_at_utc"]
    labels = [_("Screening number"), _("Site"), _("Status"), _("Randomization number"),
              _("Randomized")]  # fmt: skip
    return _answer(fmt, study, "participants", header, labels, rows, title=_("Participants"),
                   search=search, paging=found)  # fmt: skip


def bar_chart(points: list[tuple[str, int]]) -> Markup | None:
    """Randomizations per month as an SVG bar chart, drawn on the server (no script)."""
    if not points:
        return None
    top, bar, height = max(n for _m, n in points) or 1, 44, 140
    parts = []
    for i, (month, n) in enumerate(points):
        h = round(height * n / top)
        x = i * bar + 8
        parts.append(
            f'<rect x="{x}" y="{height - h + 20}" width="{bar - 12}" height="{h}" class="bar"/>'
            f'<text x="{x + (bar - 12) / 2}" y="{height - h + 14}" text-anchor="middle">{n}</text>'
            f'<text x="{x + (bar - 12) / 2}" y="{height + 36}" text-anchor="middle" '
            f'class="axis">{escape(month)}</text>'
        )
    width = len(points) * bar + 16
    label = escape(_("Randomizations per month"))
    return Markup(
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" aria-label="{label}" '
        f'viewBox="0 0 {width} {height + 44}" width="{width}" height="{height + 44}">'
        + "".join(parts) + "</svg>"
    )  # fmt: skip
