"""Running a study (admin and statistician): its status, pausing and resuming randomization,
and the signed database lock. Every page shows the open pauses and locks of the studies."""

from __future__ import annotations

import datetime as dt
from typing import Any, TextIO

from flask import Blueprint, flash, redirect, render_template, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import BooleanField, HiddenField, SelectField, TextAreaField
from wtforms.validators import DataRequired, Length

from randomizer.auth import can_see_site, current, current_actor, roles_required
from randomizer.db import db
from randomizer.errors import RandomizerError, shown_message
from randomizer.models import RandomizationPause, Role, Study
from randomizer.services import pausing
from randomizer.services.database_lock import lock_study
from randomizer.services.sdtm import export_dm
from randomizer.services.studies import get_study
from randomizer.views import navigation
from randomizer.views.cosign import CosignForm, cosigned_page
from randomizer.views.downloads import signed_download
from randomizer.views.study_text import study_text

bp = Blueprint("studies", __name__, url_prefix="/studies")

RUNNERS = (Role.ADMIN, Role.STATISTICIAN)
WHOLE_STUDY = ""

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


class PauseForm(FlaskForm):
    site = SelectField(_l("Where"), choices=[])
    reason = TextAreaField(
        _l("Reason (shown to every user of the study: never mention a treatment)"),
        validators=[DataRequired(), Length(max=pausing.MAX_REASON)],
    )


class ResumeForm(FlaskForm):
    site = HiddenField()


def _pause_form(study: Study, form: PauseForm | None = None) -> PauseForm:
    form = form or PauseForm(formdata=None, prefix=f"pause-{study.code}-")
    form.site.choices = [(WHOLE_STUDY, str(_("The whole study")))] + [
        (s.code, f"{s.code} — {study_text(s)}") for s in study.sites
    ]
    return form


def _index(failed: dict[str, PauseForm] | None = None) -> str:
    session = db.session()
    studies = session.scalars(select(Study).order_by(Study.code)).all()
    return render_template(
        "studies/index.html",
        studies=studies,
        pauses={s.code: pausing.open_pauses(session, s) for s in studies},
        pause_forms={s.code: _pause_form(s, (failed or {}).get(s.code)) for s in studies},
        resume_form=ResumeForm(formdata=None),
    )


@bp.get("/")
@roles_required(*RUNNERS)
def index() -> str:
    return _index()


@bp.post("/<code>/pause")
@roles_required(*RUNNERS)
def pause(code: str) -> Any:
    study = get_study(db.session(), code)
    form = _pause_form(study, PauseForm(prefix=f"pause-{code}-"))
    try:
        if not form.validate_on_submit():
            return _index({code: form}), 422
        pausing.pause(db.session(), study, site=form.site.data or None,
                      reason=form.reason.data, actor=current_actor())  # fmt: skip
    except RandomizerError as err:
        db.session.rollback()
        target = form.reason if err.field == "reason" else form.site
        target.errors = [*target.errors, shown_message(err)]
        return _index({code: form}), err.status
    db.session.commit()
    flash(_("Randomization is paused."), "success")
    return redirect(url_for(".index"))


@bp.post("/<code>/resume")
@roles_required(*RUNNERS)
def resume(code: str) -> Any:
    study, form = get_study(db.session(), code), ResumeForm()
    if not form.validate_on_submit():
        return _index(), 400
    pausing.resume(db.session(), study, site=form.site.data or None, actor=current_actor())
    db.session.commit()
    flash(_("Randomization is resumed."), "success")
    return redirect(url_for(".index"))


@bp.route("/<code>/lock", methods=["GET", "POST"])
@roles_required(*RUNNERS)
def lock(code: str) -> Any:
    study = get_study(db.session(), code)

    def done(locked_at: dt.datetime) -> Any:
        flash(_("The database of %(study)s is locked.", study=study.code), "success")
        return redirect(url_for(".index"))

    return cosigned_page(study, LockForm(), "studies/lock.html", lock_study, done)


@bp.route("/<code>/sdtm-dm", methods=["GET", "POST"])
@roles_required(Role.STATISTICIAN)
def sdtm_dm(code: str) -> Any:
    study = get_study(db.session(), code)

    def write(out: TextIO) -> int:
        return export_dm(db.session(), study, out=out, actor=current_actor())

    name = f"{study.code}-sdtm-dm.csv"
    return signed_download("studies/sdtm_dm.html", "SDTM DM export", write, name, study=study)


@bp.app_context_processor
def _banners() -> dict[str, Any]:
    return {"study_banners": study_banners}


def study_banners() -> list[tuple[Study, RandomizationPause | None]]:
    """What every page shows the signed-in user: open pauses in their scope, and locks."""
    if not current_user.is_authenticated:
        return []
    session, user = db.session(), current()
    shown: list[tuple[Study, RandomizationPause | None]] = []
    for study in session.scalars(select(Study).order_by(Study.code)):
        shown += [
            (study, p)
            for p in pausing.open_pauses(session, study)
            if p.site_code is None or can_see_site(user, p.site_code)
        ]
        if study.locked_at is not None:
            shown.append((study, None))
    return shown
