"""The unblinded supply page: per site and product, real stock, guaranteed stock and the
margin the levels give (statistician: every site; pharmacist: own sites)."""

from __future__ import annotations

from flask import Blueprint, abort, render_template
from flask_babel import lazy_gettext as _l

from randomizer.auth import current, roles_required
from randomizer.db import db
from randomizer.models import Role
from randomizer.services.studies import definition_of, get_study
from randomizer.services.supply.report import site_supply
from randomizer.views import navigation

bp = Blueprint("supply", __name__, url_prefix="/supply")
UNBLINDED = (Role.STATISTICIAN, Role.PHARMACIST)

navigation.register(
    "supply.index",
    _l("Supply"),
    set(UNBLINDED),
    _l("stock per product at each site, the stock guaranteed whatever the arms, alerts"),
)


@bp.get("/")
@roles_required(*UNBLINDED)
def index() -> str:
    from sqlalchemy import select

    from randomizer.models import Study

    studies = db.session.scalars(select(Study).order_by(Study.code)).all()
    return render_template("supply/index.html", studies=studies)


@bp.get("/<code>")
@roles_required(*UNBLINDED)
def study(code: str) -> str:
    user = current()
    study = get_study(db.session(), code)
    sites = None if user.role is Role.STATISTICIAN else user.site_codes
    if sites is not None and not sites & {s.code for s in study.sites}:
        abort(404)
    figures = site_supply(db.session(), study, sites=sites)
    db.session.rollback()
    return render_template(
        "supply/study.html", study=study, sites=figures, definition=definition_of(study)
    )
