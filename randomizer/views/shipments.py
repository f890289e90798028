"""Admin shipment pages: proposals from the blinded resupply rule or made by hand, dispatch
and cancellation. Shipments list kit codes only; arms are never shown."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, redirect, render_template, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_babel import ngettext
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange

from randomizer.auth import current_actor, roles_required
from randomizer.db import db
from randomizer.errors import RandomizerError
from randomizer.forms import LocaleIntegerField
from randomizer.models import Role, Study
from randomizer.services import shipments
from randomizer.services.studies import get_study
from randomizer.services.supply import policy
from randomizer.views import navigation
from randomizer.views.kits import refuse

bp = Blueprint("shipments", __name__, url_prefix="/shipments")

navigation.register(
    "shipments.index",
    _l("Shipments"),
    {Role.ADMIN},
    _l("approve and dispatch resupply shipments to the sites (kit codes only)"),
)


class ShipmentForm(FlaskForm):
    site = SelectField(_l("Site"), choices=[])
    count = LocaleIntegerField(
        _l("Number of kits"),
        validators=[InputRequired(), NumberRange(1, shipments.MAX_SHIPMENT_KITS)],
    )


class CancelForm(FlaskForm):
    reason = StringField(_l("Reason"), validators=[DataRequired(), Length(max=500)])


class ConfirmForm(FlaskForm):
    """A button with nothing to fill in (CSRF only)."""


def _shipment_form(study: Study) -> ShipmentForm:
    form = ShipmentForm()
    form.site.choices = [SelectChoice(s.code, f"{s.code} — {s.name}") for s in study.sites]
    return form


def _index(forms: dict[str, ShipmentForm] | None = None) -> str:
    session = db.session()
    studies = session.scalars(select(Study).order_by(Study.code)).all()
    listed = {s.code: shipments.list_shipments(session, s) for s in studies}
    counts = shipments.line_counts(session, [sh.id for rows in listed.values() for sh in rows])
    forms = forms or {}
    return render_template(
        "shipments/index.html",
        studies=studies,
        listed=listed,
        counts=counts,
        forms={s.code: forms.get(s.code) or _shipment_form(s) for s in studies},
        confirm=ConfirmForm(),
    )


@bp.get("/")
@roles_required(Role.ADMIN)
def index() -> str:
    return _index()


@bp.post("/<code>/new")
@roles_required(Role.ADMIN)
def new(code: str) -> Any:
    study = get_study(db.session(), code)
    form = _shipment_form(study)
    if not form.validate_on_submit():
        return _index({code: form}), 422
    try:
        shipment = shipments.propose_manual(
            db.session(),
            study,
            site=form.site.data or "",
            count=form.count.data or 0,
            actor=current_actor(),
        )
    except RandomizerError as err:
        refuse(form, err, "count")
        return _index({code: form}), err.status
    db.session.commit()
    flash(_("Shipment %(id)d was proposed.", id=shipment.id), "success")
    return redirect(url_for(".detail", code=code, shipment_id=shipment.id))


@bp.post("/<code>/resupply")
@roles_required(Role.ADMIN)
def resupply(code: str) -> Any:
    study = get_study(db.session(), code)
    if not ConfirmForm().validate_on_submit():
        return redirect(url_for(".index"))
    proposed = policy.check_all(db.session(), study)
    db.session.commit()
    flash(
        ngettext(
            "Resupply check done: %(num)d shipment proposed.",
            "Resupply check done: %(num)d shipments proposed.",
            len(proposed),
        ),
        "success",
    )
    return redirect(url_for(".index"))


def _detail(study: Study, shipment_id: int, cancel: CancelForm | None = None) -> str:
    shipment = shipments.get_shipment(db.session(), study, shipment_id)
    return render_template(
        "shipments/detail.html",
        study=study,
        shipment=shipment,
        lines=shipments.shipment_lines(db.session(), shipment),
        confirm=ConfirmForm(),
        cancel=cancel or CancelForm(formdata=None),
    )


@bp.get("/<code>/<int:shipment_id>")
@roles_required(Role.ADMIN)
def detail(code: str, shipment_id: int) -> str:
    return _detail(get_study(db.session(), code), shipment_id)


@bp.post("/<code>/<int:shipment_id>/dispatch")
@roles_required(Role.ADMIN)
def dispatch(code: str, shipment_id: int) -> Any:
    study = get_study(db.session(), code)
    shipment = shipments.get_shipment(db.session(), study, shipment_id)
    if ConfirmForm().validate_on_submit():
        shipments.dispatch(db.session(), study, shipment=shipment, actor=current_actor())
        db.session.commit()
        flash(
            _(
                "Shipment %(id)d is on its way to %(site)s.",
                id=shipment.id,
                site=shipment.site_code,
            ),
            "success",
        )
    return redirect(url_for(".detail", code=code, shipment_id=shipment_id))


@bp.post("/<code>/<int:shipment_id>/cancel")
@roles_required(Role.ADMIN)
def cancel(code: str, shipment_id: int) -> Any:
    study = get_study(db.session(), code)
    shipment = shipments.get_shipment(db.session(), study, shipment_id)
    form = CancelForm()
    if not form.validate_on_submit():
        return _detail(study, shipment_id, form), 422
    shipments.cancel(
        db.session(), study, shipment=shipment, actor=current_actor(), reason=form.reason.data or ""
    )
    db.session.commit()
    flash(_("Shipment %(id)d was cancelled.", id=shipment.id), "success")
    return redirect(url_for(".detail", code=code, shipment_id=shipment_id))
