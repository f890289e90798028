"""Participant pages: list, screening, randomization with signature, blinded confirmation,
later dispensing, withdrawal and randomized-in-error. Site-scoped; another site's
participant is "not found". Every action runs at most once per form (a second click shows
the first click's result)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, NamedTuple

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from werkzeug.wrappers import Response
from wtforms.fields.choices import SelectChoice

from randomizer.auth import can_see_site, current, current_actor, roles_required
from randomizer.db import db, utcnow
from randomizer.errors import RandomizerError, shown_message
from randomizer.forms import format_number
from randomizer.models import Participant, ParticipantStatus, Role, Study
from randomizer.services import enrollment, idempotency
from randomizer.services.studies import definition_of, get_study
from randomizer.services.unblinding import unblinding_visible
from randomizer.transaction import run_in_transaction
from randomizer.views import navigation
from randomizer.views.participant_forms import (
    DispenseForm,
    RandomizeForm,
    ReplaceKitForm,
    ScreeningBase,
    StatusForm,
    screening_data,
    screening_form,
)
from randomizer.views.study_text import study_text, visit_name

bp = Blueprint("participants", __name__)

READERS = (Role.INVESTIGATOR, Role.ASSESSOR, Role.ADMIN, Role.STATISTICIAN, Role.PHARMACIST)
#: Roles that may see kit codes (assessors never do).
KIT_CODE_ROLES = frozenset({Role.INVESTIGATOR, Role.PHARMACIST, Role.ADMIN, Role.STATISTICIAN})
P = ParticipantStatus

navigation.register(
    "participants.index",
    _l("Participants"),
    {Role.INVESTIGATOR, Role.ASSESSOR, Role.ADMIN},
    _l("screen, randomize and follow participants at your sites"),
)


StatusChange = Callable[..., Participant]
STATUS_CHANGES: dict[str, tuple[StatusChange, Any, Any]] = {
    "withdraw": (
        enrollment.withdraw,
        _l("Withdraw participant"),
        _l("The participant keeps the randomization number and kits; nothing is deleted."),
    ),
    "randomized-in-error": (
        enrollment.mark_randomized_in_error,
        _l("Mark as randomized in error"),
        _l(
            "The randomization stays on record and its place in the list is never reused; "
            "the participant is marked as randomized in error."
        ),
    ),
}


def visible_participant(participant_id: int) -> Participant:
    """The participant if it is at one of the user's sites; 404 otherwise (same answer)."""
    session = db.session()
    participant = enrollment.get_participant(session, participant_id)
    if not can_see_site(current(), participant.site_code):
        raise enrollment.participant_not_found(participant_id)
    return participant


def _my_sites(study: Study) -> list[tuple[str, str]]:
    user = current()
    return [
        (s.code, f"{s.code} — {study_text(s)}") for s in study.sites if can_see_site(user, s.code)
    ]


def _scope(study: Study) -> frozenset[str] | None:
    user = current()
    if user.role in (Role.ADMIN, Role.STATISTICIAN) or (
        user.role is Role.ASSESSOR and not user.sites
    ):
        return None
    return frozenset(user.site_codes)


class Next(NamedTuple):
    """Where a successful action leads, and what to tell the user there."""

    location: str
    message: str | None = None
    category: str = "success"


def once(action: str, target_id: object, perform: Callable[[], Next]) -> Response:
    """Run ``perform`` at most once for this form submission, then go where it leads.

    The submission token is recorded in the transaction of the work itself: a second click
    with the same form waits for the first click's transaction and goes to the same place
    with the same message. A refusal leaves nothing, so the corrected form can be sent again.
    """
    session = db.session()
    key = "web:" + idempotency.check_key(request.form.get("submission"))
    fingerprint = hashlib.sha256(f"{action}\x1e{target_id}".encode()).hexdigest()

    def work() -> Next:
        held = idempotency.claim(
            session, user_id=current().id, key=key, endpoint=f"web {action}",
            request_hash=fingerprint,
        )  # fmt: skip
        if held.answer is not None:
            return Next(**held.answer[1])
        outcome = perform()
        idempotency.complete(session, held, 303, outcome._asdict())
        return outcome

    return _go(run_in_transaction(session, work))


def _go(outcome: Next) -> Response:
    if outcome.message:
        flash(outcome.message, outcome.category)
    return redirect(outcome.location)


def _show_error(form: Any, err: RandomizerError, field: Any = None) -> None:
    target = field or (form.field_for(err.field) if hasattr(form, "field_for") else None)
    if target is None and err.field:
        target = form._fields.get(err.field.split(".")[-1])
    if target is not None:
        target.errors = [*target.errors, shown_message(err)]
    else:
        form.form_errors.append(shown_message(err))


@bp.app_template_filter("number")
def number_filter(value: float | int) -> str:
    """A stored number as the page's language writes it (``0,8`` on a Spanish page)."""
    return format_number(value)


# --- lists -----------------------------------------------------------------------------


@bp.get("/participants")
@roles_required(*READERS)
def index() -> str | Response:
    from sqlalchemy import select

    studies = db.session.scalars(select(Study).order_by(Study.code)).all()
    if len(studies) == 1:
        return redirect(url_for("participants.study_list", code=studies[0].code))
    return render_template("participants/studies.html", studies=studies)


@bp.get("/studies/<code>/participants")
@roles_required(*READERS)
def study_list(code: str) -> str:
    study = get_study(db.session(), code)
    rows = enrollment.list_participants(db.session(), study, sites=_scope(study))
    return render_template(
        "participants/list.html", study=study, participants=rows, user=current(),
        can_screen=current().role is Role.INVESTIGATOR and bool(_my_sites(study)),
    )  # fmt: skip


# --- screening -------------------------------------------------------------------------


@bp.route("/studies/<code>/participants/new", methods=["GET", "POST"])
@roles_required(Role.INVESTIGATOR)
def screen(code: str) -> str | Response | tuple[str, int]:
    study = get_study(db.session(), code)
    sites = _my_sites(study)
    if not sites:
        abort(403)
    form = screening_form(definition_of(study), sites)
    if not form.validate_on_submit():
        status = 422 if form.is_submitted() else 200
        return render_template("participants/screen.html", study=study, form=form), status
    try:
        return once("screen", study.code, lambda: _register(study.id, form))
    except RandomizerError as err:
        _show_error(form, err)
        return render_template("participants/screen.html", study=study, form=form), err.status


def _register(study_id: int, form: ScreeningBase) -> Next:
    session = db.session()
    study = session.get_one(Study, study_id)
    if not can_see_site(current(), form.site.data or ""):
        abort(403)
    participant = enrollment.register_participant(
        session, study, site=form.site.data or "", screening_number=form.screening_number.data
        or "", factors=form.factors(), eligibility=form.answers(), actor=current_actor(),
    )  # fmt: skip
    location = url_for("participants.show", participant_id=participant.id)
    if participant.status is P.ELIGIBLE:
        return Next(location, _("Registered: the participant is eligible and can be randomized."))
    definition = definition_of(study)
    failed = "; ".join(study_text(definition.criterion(c)) for c in participant.failed_criteria)
    message = _("Screen failure recorded. Criteria not met: %(failed)s.", failed=failed)
    return Next(location, message, "error")


@bp.route("/participants/<int:participant_id>/correct", methods=["GET", "POST"])
@roles_required(Role.INVESTIGATOR)
def correct(participant_id: int) -> str | Response | tuple[str, int]:
    participant = visible_participant(participant_id)
    study = db.session.get_one(Study, participant.study_id)
    data = screening_data(
        participant.site_code, participant.screening_number, participant.factors,
        participant.eligibility,
    )  # fmt: skip
    form = screening_form(definition_of(study), _my_sites(study), correction=True, data=data)
    page = {"study": study, "form": form, "participant": participant}
    if participant.status not in enrollment.SCREENING:
        flash(_("Screening data can be corrected only before randomization."), "error")
        return redirect(url_for("participants.show", participant_id=participant_id))
    if not form.validate_on_submit():
        status = 422 if form.is_submitted() else 200
        return render_template("participants/correct.html", **page), status
    try:
        return once("correct", participant_id, lambda: _correct(participant_id, form))
    except RandomizerError as err:
        _show_error(form, err)
        return render_template("participants/correct.html", **page), err.status


def _correct(participant_id: int, form: Any) -> Next:
    participant = visible_participant(participant_id)
    if not can_see_site(current(), form.site.data or ""):
        abort(403)
    enrollment.correct_screening(
        db.session(), participant, actor=current_actor(), reason=form.reason.data,
        site=form.site.data, screening_number=form.screening_number.data,
        factors=form.factors(), eligibility=form.answers(),
    )  # fmt: skip
    return Next(
        url_for("participants.show", participant_id=participant_id),
        _("The correction was saved and recorded in the audit trail."),
    )


# --- one participant -------------------------------------------------------------------


@bp.get("/participants/<int:participant_id>")
@roles_required(*READERS)
def show(participant_id: int) -> str:
    participant = visible_participant(participant_id)
    study = db.session.get_one(Study, participant.study_id)
    user = current()
    kits = enrollment.kits_of(db.session(), participant) if user.role in KIT_CODE_ROLES else None
    return render_template(
        "participants/show.html", participant=participant, study=study, kits=kits, user=user,
        definition=definition_of(study), later_visits=_later_visits(study),
        can_act=user.role is Role.INVESTIGATOR,
        unblind_url=_unblind_url(participant),
        show_unblinding=unblinding_visible(user.role, definition_of(study)),
    )  # fmt: skip


def _later_visits(study: Study) -> list[str]:
    return [v.code for v in enrollment.dispensing_visits(definition_of(study))[1:]]


def _unblind_url(participant: Participant) -> str | None:
    from flask import current_app

    if participant.status is P.SCREEN_FAILED or participant.randomization_number is None:
        return None
    if "unblinding.unblind" not in current_app.view_functions:
        return None
    return url_for("unblinding.unblind", participant_id=participant.id)


@bp.route("/participants/<int:participant_id>/randomize", methods=["GET", "POST"])
@roles_required(Role.INVESTIGATOR)
def randomize(participant_id: int) -> str | Response | tuple[str, int]:
    participant = visible_participant(participant_id)
    if participant.randomization_number is not None and request.method == "GET":
        return redirect(url_for("participants.confirmation", participant_id=participant_id))
    study = db.session.get_one(Study, participant.study_id)
    form = RandomizeForm()
    page = {"participant": participant, "study": study, "form": form,
            "definition": definition_of(study),
            "meaning": _(enrollment.RANDOMIZE_MEANING)}  # fmt: skip
    if not form.validate_on_submit():
        status = 422 if form.is_submitted() else 200
        return render_template("participants/randomize.html", **page), status
    try:
        return once("randomize", participant_id, lambda: _randomize(participant_id, form))
    except RandomizerError as err:
        _show_error(form, err, form.password if err.field == "password" else None)
        form.password.data = ""
        db.session.rollback()
        page["participant"] = visible_participant(participant_id)
        return render_template("participants/randomize.html", **page), err.status


def _randomize(participant_id: int, form: RandomizeForm) -> Next:
    participant = visible_participant(participant_id)
    enrollment.randomize(
        db.session(), participant, signer=current(), password=form.password.data, translate=_
    )
    return Next(url_for("participants.confirmation", participant_id=participant_id))


@bp.get("/participants/<int:participant_id>/confirmation")
@roles_required(Role.INVESTIGATOR, Role.ADMIN)
def confirmation(participant_id: int) -> str | Response:
    participant = visible_participant(participant_id)
    if participant.randomization_number is None:
        return redirect(url_for("participants.show", participant_id=participant_id))
    study = db.session.get_one(Study, participant.study_id)
    kits = enrollment.kits_of(db.session(), participant)
    signer = _user_named(participant.randomized_by)
    return render_template(
        "participants/confirmation.html", participant=participant, study=study, kits=kits,
        signer=signer, meaning=_(enrollment.RANDOMIZE_MEANING), printed_at=utcnow(),
    )  # fmt: skip


def _user_named(username: str | None) -> Any:
    from randomizer.auth import users_by_name

    return users_by_name([username]).get(username) if username else None


@bp.route("/participants/<int:participant_id>/dispense", methods=["GET", "POST"])
@roles_required(Role.INVESTIGATOR)
def dispense(participant_id: int) -> str | Response | tuple[str, int]:
    participant = visible_participant(participant_id)
    study = db.session.get_one(Study, participant.study_id)
    definition = definition_of(study)
    form = DispenseForm()
    form.visit.choices = [SelectChoice(v, visit_name(study, v)) for v in _later_visits(study)]
    windows = (
        [enrollment.visit_window(definition, participant, v) for v in _later_visits(study)]
        if participant.randomized_at
        else []
    )
    page = {"participant": participant, "study": study, "form": form, "windows": windows,
            "today": utcnow().date(),
            "meaning": _(enrollment.DISPENSE_MEANING, visit=_("chosen above"))}  # fmt: skip
    if participant.status is not P.RANDOMIZED:
        flash(_("Only randomized participants receive kits."), "error")
        return redirect(url_for("participants.show", participant_id=participant_id))
    if not form.validate_on_submit():
        status = 422 if form.is_submitted() else 200
        return render_template("participants/dispense.html", **page), status
    try:
        return once("dispense", participant_id, lambda: _dispense(participant_id, form))
    except RandomizerError as err:
        _show_error(form, err)
        form.password.data = ""
        return render_template("participants/dispense.html", **page), err.status


def _dispense(participant_id: int, form: DispenseForm) -> Next:
    participant = visible_participant(participant_id)
    got = enrollment.dispense(
        db.session(), participant, visit=form.visit.data, signer=current(),
        password=form.password.data, override_reason=form.override_reason.data or None,
        translate=_,
    )  # fmt: skip
    visit = visit_name(db.session.get_one(Study, participant.study_id), got.visit)
    message = _("Kit %(code)s is allocated for visit %(visit)s.", code=got.kit_code, visit=visit)
    return Next(url_for("participants.show", participant_id=participant_id), message)


@bp.route("/participants/<int:participant_id>/replace-kit", methods=["GET", "POST"])
@roles_required(Role.INVESTIGATOR)
def replace_kit(participant_id: int) -> str | Response | tuple[str, int]:
    participant = visible_participant(participant_id)
    kits = enrollment.kits_of(db.session(), participant)
    form = ReplaceKitForm()
    study = db.session.get_one(Study, participant.study_id)
    form.kit_code.choices = [
        SelectChoice(code, f"{code} ({visit_name(study, visit)})") for visit, code in kits
    ]
    page = {"participant": participant, "form": form}
    if participant.status is not P.RANDOMIZED or not kits:
        flash(_("Only kits of randomized participants are replaced here."), "error")
        return redirect(url_for("participants.show", participant_id=participant_id))
    if not form.validate_on_submit():
        status = 422 if form.is_submitted() else 200
        return render_template("participants/replace_kit.html", **page), status

    def perform() -> Next:
        new = enrollment.replace_kit(
            db.session(), visible_participant(participant_id), kit_code=form.kit_code.data,
            reason=form.reason.data, lost=form.what.data == "lost", actor=current_actor(),
        )  # fmt: skip
        message = _("Kit %(old)s was replaced by kit %(new)s.", old=form.kit_code.data, new=new)
        return Next(url_for("participants.show", participant_id=participant_id), message)

    try:
        return once("replace-kit", participant_id, perform)
    except RandomizerError as err:
        _show_error(form, err)
        return render_template("participants/replace_kit.html", **page), err.status


@bp.route("/participants/<int:participant_id>/<any(withdraw, 'randomized-in-error'):change>",
          methods=["GET", "POST"])  # fmt: skip
@roles_required(Role.INVESTIGATOR)
def change_status(participant_id: int, change: str) -> str | Response | tuple[str, int]:
    participant = visible_participant(participant_id)
    service, title, explanation = STATUS_CHANGES[change]
    form = StatusForm()
    page = {"participant": participant, "form": form, "title": title,
            "explanation": explanation, "change": change}  # fmt: skip
    if not form.validate_on_submit():
        status = 422 if form.is_submitted() else 200
        return render_template("participants/status.html", **page), status

    def perform() -> Next:
        service(db.session(), visible_participant(participant_id), actor=current_actor(),
                reason=form.reason.data)  # fmt: skip
        return Next(
            url_for("participants.show", participant_id=participant_id),
            _("The status change was saved and recorded in the audit trail."),
        )

    try:
        return once(change, participant_id, perform)
    except RandomizerError as err:
        _show_error(form, err)
        return render_template("participants/status.html", **page), err.status
