"""The blinding-exposure register page and CSV (admin, statistician; SPEC §4.4)."""

from __future__ import annotations

import csv
import io

from flask import Blueprint, Response, render_template
from flask_babel import lazy_gettext as _l
from sqlalchemy import select

from randomizer.auth import roles_required
from randomizer.db import db
from randomizer.models import Role, Study
from randomizer.services.exposure import CSV_COLUMNS, exposure_register
from randomizer.services.studies import get_study
from randomizer.views import navigation

bp = Blueprint("exposure", __name__, url_prefix="/exposure")
READERS = (Role.ADMIN, Role.STATISTICIAN)

navigation.register(
    "exposure.index",
    _l("Blinding exposure"),
    set(READERS),
    _l("who holds or held an unblinded role, and every event that showed someone an arm."),
)


@bp.get("/")
@roles_required(*READERS)
def index() -> str:
    studies = db.session().scalars(select(Study).order_by(Study.code)).all()
    return render_template("exposure/index.html", studies=studies)


@bp.get("/<code>")
@roles_required(*READERS)
def register(code: str) -> str:
    study = get_study(db.session(), code)
    found = exposure_register(db.session(), study)
    return render_template("exposure/register.html", register=found, study=study)


@bp.get("/<code>/exposure.csv")
@roles_required(*READERS)
def register_csv(code: str) -> Response:
    found = exposure_register(db.session(), get_study(db.session(), code))
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    writer.writerows(e.csv_row for e in found.events)
    response = Response(out.getvalue(), mimetype="text/csv")
    response.headers["Content-Disposition"] = f"attachment; filename={code}-exposure.csv"
    return response
