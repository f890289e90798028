"""Pharmacist pages, own sites only: inventory with products and the preparation queue (each
view audited as a disclosure), receipt of shipments kit by kit, dispensing, damage reports."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_babel import ngettext
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, Optional

from randomizer.auth import current, current_actor, roles_required
from randomizer.db import db
from randomizer.errors import N_, NotFound, RandomizerError, shown_message
from randomizer.models import KitStatus, Role, ShipmentStatus, Study
from randomizer.services import pharmacy, shipments
from randomizer.services.database_lock import refuse_if_locked
from randomizer.services.kits import confirm_dispensing, count_kits, get_kit, set_status
from randomizer.services.studies import get_study
from randomizer.services.supply import policy
from randomizer.services.supply.allocation import replace_kit
from randomizer.transaction import run_in_transaction
from randomizer.views import navigation
from randomizer.views.kits import kit_status_label, refuse

#: Kits per inventory page: only the kits shown are opened, whatever the site holds.
INVENTORY_PAGE = 200

bp = Blueprint("pharmacy", __name__, url_prefix="/pharmacy")
PHARM = Role.PHARMACIST

navigation.register(
    "pharmacy.index",
    _l("Pharmacy"),
    {Role.PHARMACIST},
    _l("receive shipments, prepare and dispense kits, report damage (your sites)"),
)


class ReceiveForm(FlaskForm):
    codes = TextAreaField(_l("Kit codes"), validators=[DataRequired(), Length(max=20_000)])
    outcome = SelectField(
        _l("Condition"),
        choices=[SelectChoice("received", _l("Good")), SelectChoice("damaged", _l("Damaged"))],
    )
    remark = StringField(_l("Remark"), validators=[Optional(), Length(max=500)])


class FinishForm(FlaskForm):
    missing_remark = StringField(
        _l("Remark on missing kits"), validators=[Optional(), Length(max=500)]
    )


class DispenseForm(FlaskForm):
    kit_code = StringField(
        _l("Scan the kit"),
        validators=[
            DataRequired(message=_l("Scan the kit: scan or type the code on the kit's label.")),
            Length(max=32),
        ],
    )


class SetAsideForm(FlaskForm):
    pass


class DamageForm(FlaskForm):
    code = StringField(_l("Kit code"), validators=[DataRequired(), Length(max=32)])
    kind = SelectField(
        _l("What happened"),
        choices=[SelectChoice("damaged", _l("Damaged")), SelectChoice("lost", _l("Lost"))],
    )
    reason = StringField(_l("Reason"), validators=[DataRequired(), Length(max=500)])


def _own(study: Study) -> frozenset[str]:
    """The pharmacist's sites in this study; a study without any answers 404."""
    sites = current().site_codes & {s.code for s in study.sites}
    if not sites:
        raise NotFound(N_("No study %(study)s at your sites."), field="study", study=study.code)
    return frozenset(sites)


def _index(damage: dict[str, DamageForm] | None = None) -> str:
    session, damage = db.session(), damage or {}
    studies = [
        s
        for s in session.scalars(select(Study).order_by(Study.code))
        if current().site_codes & {site.code for site in s.sites}
    ]
    incoming = {
        s.code: shipments.list_shipments(
            session, s, sites=_own(s), statuses=[ShipmentStatus.IN_TRANSIT]
        )
        for s in studies
    }
    return render_template(
        "pharmacy/index.html",
        studies=studies,
        incoming=incoming,
        damage={s.code: damage.get(s.code) or DamageForm(formdata=None) for s in studies},
    )


@bp.get("/")
@roles_required(PHARM)
def index() -> str:
    return _index()


@bp.get("/<code>/inventory")
@roles_required(PHARM)
def inventory(code: str) -> str:
    study = get_study(db.session(), code)
    own = _own(study)
    site = request.args.get("site") or None
    if site is not None and site not in own:
        raise NotFound(
            N_("No site '%(site)s' of yours in study %(study)s."),
            field="site",
            site=site,
            study=study.code,
        )
    where = [site] if site else sorted(own)
    total = count_kits(db.session(), study, sites=where)
    pages = max(1, -(-total // INVENTORY_PAGE))
    page = min(pages, max(1, request.args.get("page", 1, type=int) or 1))
    kits = pharmacy.inventory(
        db.session(), study, sites=where, actor=current_actor(),
        offset=(page - 1) * INVENTORY_PAGE, limit=INVENTORY_PAGE,
    )  # fmt: skip
    db.session.commit()  # the disclosure is recorded before the page is sent
    return render_template(
        "pharmacy/inventory.html", study=study, kits=kits, own=sorted(own), site=site,
        page=page, pages=pages, total=total,
    )  # fmt: skip


def _queue(study: Study, forms: dict[int, DispenseForm] | None = None) -> str:
    items = pharmacy.preparation_queue(
        db.session(), study, sites=_own(study), actor=current_actor()
    )
    db.session.commit()  # the disclosure is recorded before the page is sent
    forms = forms or {}
    for item in items:
        if item.dispensation_id not in forms:
            prefix = f"d{item.dispensation_id}-"
            forms[item.dispensation_id] = DispenseForm(formdata=None, prefix=prefix)
    return render_template(
        "pharmacy/queue.html", study=study, items=items, forms=forms,
        set_aside=SetAsideForm(formdata=None),
    )  # fmt: skip


@bp.get("/<code>/queue")
@roles_required(PHARM)
def queue(code: str) -> str:
    return _queue(get_study(db.session(), code))


@bp.post("/<code>/queue/<int:dispensation_id>")
@roles_required(PHARM)
def dispense(code: str, dispensation_id: int) -> Any:
    study = get_study(db.session(), code)
    dispensation = pharmacy.get_dispensation(
        db.session(), study, dispensation_id, sites=_own(study)
    )
    form = DispenseForm(prefix=f"d{dispensation_id}-")
    try:
        if not form.validate_on_submit():
            return _queue(study, {dispensation_id: form}), 422
        refuse_if_locked(study)
        kit = confirm_dispensing(
            db.session(),
            study,
            dispensation=dispensation,
            actor=current_actor(),
            kit_code=form.kit_code.data or None,
        )
    except RandomizerError as err:
        refuse(form, err, "kit_code")
        return _queue(study, {dispensation_id: form}), err.status
    db.session.commit()
    flash(_("Kit %(code)s was dispensed.", code=kit.code), "success")
    return redirect(url_for(".queue", code=code))


@bp.post("/<code>/queue/<int:dispensation_id>/set-aside")
@roles_required(PHARM)
def set_aside(code: str, dispensation_id: int) -> Any:
    study = get_study(db.session(), code)
    own = _own(study)
    dispensation = pharmacy.get_dispensation(db.session(), study, dispensation_id, sites=own)
    if not SetAsideForm().validate_on_submit():
        return _queue(study), 400
    try:
        kit = pharmacy.set_aside(
            db.session(), study, dispensation=dispensation, actor=current_actor(), sites=own
        )
    except RandomizerError as err:
        db.session.rollback()
        flash(shown_message(err), "error")
        return _queue(study), err.status
    db.session.commit()
    flash(_("Kit %(code)s was set aside (quarantined); it will not be dispensed.", code=kit.code),
          "success")  # fmt: skip
    return redirect(url_for(".queue", code=code))


def _receipt(
    study: Study,
    shipment_id: int,
    receive: ReceiveForm | None = None,
    finish: FinishForm | None = None,
) -> str:
    shipment = shipments.get_shipment(db.session(), study, shipment_id, sites=_own(study))
    return render_template(
        "pharmacy/receive.html",
        study=study,
        shipment=shipment,
        lines=shipments.shipment_lines(db.session(), shipment),
        receive=receive or ReceiveForm(formdata=None),
        finish=finish or FinishForm(formdata=None),
    )


@bp.get("/<code>/shipments/<int:shipment_id>")
@roles_required(PHARM)
def receipt(code: str, shipment_id: int) -> str:
    return _receipt(get_study(db.session(), code), shipment_id)


@bp.post("/<code>/shipments/<int:shipment_id>/receive")
@roles_required(PHARM)
def receive(code: str, shipment_id: int) -> Any:
    study = get_study(db.session(), code)
    shipment = shipments.get_shipment(db.session(), study, shipment_id, sites=_own(study))
    form = ReceiveForm()
    if not form.validate_on_submit():
        return _receipt(study, shipment_id, receive=form), 422
    try:
        kits = shipments.receive_kits(
            db.session(),
            study,
            shipment=shipment,
            codes=shipments.parse_codes(form.codes.data or ""),
            outcome=form.outcome.data or "",
            actor=current_actor(),
            remark=form.remark.data,
        )
    except RandomizerError as err:
        refuse(form, err, "codes")
        return _receipt(study, shipment_id, receive=form), err.status
    db.session.commit()
    flash(ngettext("%(num)d kit checked in.", "%(num)d kits checked in.", len(kits)), "success")
    return redirect(url_for(".receipt", code=code, shipment_id=shipment_id))


@bp.post("/<code>/shipments/<int:shipment_id>/finish")
@roles_required(PHARM)
def finish(code: str, shipment_id: int) -> Any:
    study = get_study(db.session(), code)
    shipment = shipments.get_shipment(db.session(), study, shipment_id, sites=_own(study))
    form = FinishForm()
    if not form.validate_on_submit():
        return _receipt(study, shipment_id, finish=form), 422
    missing = policy.finish_receipt(
        db.session(),
        study,
        shipment=shipment,
        actor=current_actor(),
        remark=form.missing_remark.data,
    )
    db.session.commit()
    flash(
        ngettext(
            "Shipment %(id)d received; %(num)d kit reported missing.",
            "Shipment %(id)d received; %(num)d kits reported missing.",
            len(missing),
            id=shipment.id,
        ),
        "success",
    )
    return redirect(url_for(".receipt", code=code, shipment_id=shipment_id))


@bp.post("/<code>/damage")
@roles_required(PHARM)
def damage(code: str) -> Any:
    study = get_study(db.session(), code)
    own, form = _own(study), DamageForm()
    if not form.validate_on_submit():
        return _index({code: form}), 422
    study_id = study.id

    def work() -> str:
        # A replacement allocates a kit: it takes the site's stock lock like every allocation.
        return _report(db.session().get_one(Study, study_id), own, form)

    try:
        message = run_in_transaction(db.session(), work)
    except RandomizerError as err:
        refuse(form, err, "code")
        return _index({code: form}), err.status
    flash(message, "success")
    return redirect(url_for(".index"))


def _report(study: Study, own: frozenset[str], form: DamageForm) -> str:
    """Damage or loss of a kit; a kit held for a participant is replaced (same product)."""
    session, lost = db.session(), form.kind.data == "lost"
    kit = get_kit(session, study, form.code.data or "")
    held = pharmacy.dispensation_for_kit(session, study, kit) if kit.site_code in own else None
    if held is None:
        to = KitStatus.LOST if lost else KitStatus.DAMAGED
        set_status(
            session,
            study,
            code=kit.code,
            to=to,
            actor=current_actor(),
            reason=form.reason.data,
            sites=own,
        )
        return str(
            _("Kit %(code)s was reported %(what)s.", code=kit.code, what=kit_status_label(to))
        )
    refuse_if_locked(study)
    new = replace_kit(
        session,
        study,
        dispensation=held,
        reason=form.reason.data or "",
        actor=current_actor(),
        lost=lost,
        sites=own,
    )
    return str(
        _("Kit %(old)s was replaced by kit %(new)s (same product).", old=kit.code, new=new.code)
    )
