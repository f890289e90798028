"""Admin kit pages: codes and statuses, totals per location and status (never per arm),
kit generation and status changes at the depot or a site."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import DateField, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional

from randomizer.auth import current_actor, roles_required
from randomizer.db import db
from randomizer.errors import RandomizerError, shown_message
from randomizer.forms import LocaleIntegerField
from randomizer.models import KitStatus, Role, ShipmentStatus, Study
from randomizer.services.blinded_kits import AT_SITE, blinded_kits, blinded_totals
from randomizer.services.kits import MAX_KITS_PER_CALL, generate_kits, set_status
from randomizer.services.studies import get_study
from randomizer.views import navigation
from randomizer.views.study_text import study_text

bp = Blueprint("kits", __name__, url_prefix="/kits")

PAGE_SIZE = 200

navigation.register(
    "kits.index",
    _l("Kits"),
    {Role.ADMIN},
    _l("kit codes and statuses, totals per site; generate kits"),
)

KIT_STATUS_LABELS = {
    KitStatus.AT_DEPOT: _l("at depot"),
    KitStatus.IN_TRANSIT: _l("in transit"),
    KitStatus.AVAILABLE: _l("available"),
    KitStatus.ALLOCATED: _l("allocated"),
    KitStatus.DISPENSED: _l("dispensed"),
    KitStatus.DAMAGED: _l("damaged"),
    KitStatus.LOST: _l("lost"),
    KitStatus.EXPIRED: _l("expired"),
    KitStatus.QUARANTINED: _l("quarantined"),
    KitStatus.RETURNED: _l("returned"),
    KitStatus.DESTROYED: _l("destroyed"),
}
#: The statuses a masked role can meet (besides "at site"): the depot's, the road's, and
#: those of kits bound to participants.
MASKED_STATUSES = (KitStatus.AT_DEPOT, KitStatus.IN_TRANSIT, KitStatus.ALLOCATED,
                   KitStatus.DISPENSED, KitStatus.DAMAGED, KitStatus.LOST, KitStatus.EXPIRED,
                   KitStatus.QUARANTINED, KitStatus.RETURNED, KitStatus.DESTROYED)  # fmt: skip
SHIPMENT_STATUS_LABELS = {
    ShipmentStatus.PROPOSED: _l("proposed"),
    ShipmentStatus.IN_TRANSIT: _l("in transit"),
    ShipmentStatus.RECEIVED: _l("received"),
    ShipmentStatus.CANCELLED: _l("cancelled"),
}
OUTCOME_LABELS = {
    "pending": _l("not checked yet"),
    "received": _l("received"),
    "damaged": _l("damaged"),
    "missing": _l("missing"),
    "cancelled": _l("cancelled"),
}


#: What masked roles see of a site's kit bound to no participant (``blinded_kits``).
AT_SITE_LABEL = _l("at site")


@bp.app_template_filter("kit_status")
def kit_status_label(status: KitStatus | str) -> str:
    if status == AT_SITE:
        return str(AT_SITE_LABEL)
    return str(KIT_STATUS_LABELS[KitStatus(status)])


@bp.app_template_filter("shipment_status")
def shipment_status_label(status: ShipmentStatus | str) -> str:
    return str(SHIPMENT_STATUS_LABELS[ShipmentStatus(status)])


@bp.app_template_filter("receipt_outcome")
def outcome_label(outcome: str) -> str:
    return str(OUTCOME_LABELS.get(outcome, outcome))


class GenerateKitsForm(FlaskForm):
    count = LocaleIntegerField(
        _l("Number of kits"), validators=[InputRequired(), NumberRange(1, MAX_KITS_PER_CALL)]
    )
    site = SelectField(_l("Where"), choices=[])
    lot = StringField(_l("Lot"), validators=[Optional(), Length(max=64)])
    expiry = DateField(_l("Expiry date"), validators=[Optional()])


class KitStatusForm(FlaskForm):
    code = StringField(_l("Kit code"), validators=[DataRequired(), Length(max=32)])
    status = SelectField(
        _l("New status"),
        choices=[SelectChoice(s.value, label) for s, label in KIT_STATUS_LABELS.items()],
    )
    reason = StringField(_l("Reason"), validators=[Optional(), Length(max=500)])


def refuse(form: FlaskForm, err: RandomizerError, default: str) -> None:
    """Roll back and put a service's refusal next to the field it names."""
    db.session.rollback()
    target = form[err.field] if err.field and err.field in form else form[default]
    target.errors = [*target.errors, shown_message(err)]


def _generate_form(study: Study) -> GenerateKitsForm:
    form = GenerateKitsForm()
    form.site.choices = [
        SelectChoice("", _("At the depot")),
        *(SelectChoice(s.code, study_text(s)) for s in study.sites),
    ]
    return form


@bp.get("/")
@roles_required(Role.ADMIN)
def index() -> str:
    studies = db.session.scalars(select(Study).order_by(Study.code)).all()
    totals = {s.code: blinded_totals(db.session(), s) for s in studies}
    return render_template("kits/index.html", studies=studies, totals=totals)


def _study_page(study: Study, generate: GenerateKitsForm, status: KitStatusForm) -> str:
    site = request.args.get("site") or None
    choices = {s.value: KIT_STATUS_LABELS[s] for s in MASKED_STATUSES} | {AT_SITE: AT_SITE_LABEL}
    wanted = request.args.get("status") or None
    wanted = wanted if wanted in choices else None
    kits = blinded_kits(db.session(), study, sites=[site] if site else None, status=wanted)
    page = max(1, request.args.get("page", 1, type=int) or 1)
    return render_template(
        "kits/study.html",
        study=study,
        totals=blinded_totals(db.session(), study),
        kits=kits[(page - 1) * PAGE_SIZE : page * PAGE_SIZE],
        total=len(kits),
        page=page,
        pages=max(1, -(-len(kits) // PAGE_SIZE)),
        site=site,
        status=wanted,
        statuses=choices,
        generate=generate,
        status_form=status,
    )


@bp.get("/<code>")
@roles_required(Role.ADMIN)
def study(code: str) -> str:
    study = get_study(db.session(), code)
    return _study_page(study, _generate_form(study), KitStatusForm(formdata=None))


@bp.post("/<code>/generate")
@roles_required(Role.ADMIN)
def generate(code: str) -> Any:
    study = get_study(db.session(), code)
    form = _generate_form(study)
    if not form.validate_on_submit():
        return _study_page(study, form, KitStatusForm(formdata=None)), 422
    try:
        kits = generate_kits(
            db.session(),
            study,
            count=form.count.data or 0,
            actor=current_actor(),
            site=form.site.data or None,
            lot=form.lot.data or None,
            expiry=form.expiry.data,
        )
    except RandomizerError as err:
        refuse(form, err, "count")
        return _study_page(study, form, KitStatusForm(formdata=None)), err.status
    db.session.commit()
    flash(_("%(n)d kits were created.", n=len(kits)), "success")
    return redirect(url_for(".study", code=code))


@bp.post("/<code>/status")
@roles_required(Role.ADMIN)
def change_status(code: str) -> Any:
    study = get_study(db.session(), code)
    form = KitStatusForm()
    if not form.validate_on_submit():
        return _study_page(study, _generate_form(study), form), 422
    try:
        kit = set_status(
            db.session(),
            study,
            code=form.code.data or "",
            to=KitStatus(form.status.data),
            actor=current_actor(),
            reason=form.reason.data,
            off_site_only=True,
        )
    except RandomizerError as err:
        refuse(form, err, "code")
        return _study_page(study, _generate_form(study), form), err.status
    db.session.commit()
    flash(
        _("Kit %(code)s is now %(status)s.", code=kit.code, status=kit_status_label(kit.status)),
        "success",
    )
    return redirect(url_for(".study", code=code))
