"""Running a study (admin and statistician): its status, and the signed database lock."""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import Blueprint, flash, redirect, render_template, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import select
from wtforms import BooleanField
from wtforms.validators import DataRequired

from randomizer.auth import current, roles_required
from randomizer.db import db
from randomizer.models import Role, Study
from randomizer.services.database_lock import lock_study
from randomizer.services.studies import get_study
from randomizer.views import navigation
from randomizer.views.cosign import CosignForm, cosigned_page

bp = Blueprint("studies", __name__, url_prefix="/studies")

RUNNERS = (Role.ADMIN, Role.STATISTICIAN)

navigation.register(
    "studies.index",
    _l("Study status"),
    set(RUNNERS),
    _l("pause or resume randomization; lock the database at the end of the study"),
)


class LockForm(CosignForm):
    confirm = BooleanField(
        _l("I understand that the database lock cannot be undone."), validators=[DataRequired()]
    )


@bp.get("/")
@roles_required(*RUNNERS)
def index() -> str:
    studies = db.session.scalars(select(Study).order_by(Study.code)).all()
    return render_template("studies/index.html", studies=studies, role=current().role)


@bp.route("/<code>/lock", methods=["GET", "POST"])
@roles_required(*RUNNERS)
def lock(code: str) -> Any:
    study = get_study(db.session(), code)

    def done(locked_at: dt.datetime) -> Any:
        flash(_("The database of %(study)s is locked.", study=study.code), "success")
        return redirect(url_for(".index"))

    return cosigned_page(study, LockForm(), "studies/lock.html", lock_study, done)
