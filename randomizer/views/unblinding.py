"""Emergency unblinding pages (investigator) and the notification outbox (admin).

The arm is only ever in the body of the POST answer that discloses it: never in a URL, a
redirect, a flashed message or a log line, and the answer is not cached.
"""

from __future__ import annotations

from typing import Any

from flask import (
    Blueprint,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from werkzeug.wrappers import Response
from wtforms import PasswordField, SelectField, StringField, SubmitField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import Length

from randomizer.auth import current, roles_required
from randomizer.db import db
from randomizer.errors import N_, InvalidInput, RandomizerError, shown_message
from randomizer.models import Participant, Role, Study
from randomizer.services import notifications, unblinding
from randomizer.services.studies import definition_of
from randomizer.services.users import has_second_factor
from randomizer.views import navigation

bp = Blueprint("unblinding", __name__)

REASON_LABELS = {
    "adverse_event": _l("Serious adverse event"),
    "medical_emergency": _l("Medical emergency"),
    "overdose": _l("Overdose"),
    "pregnancy": _l("Pregnancy"),
    "other": _l("Other"),
}
#: Form fields that name a participant: each may appear once, and only for the URL's one.
PARTICIPANT_FIELDS = ("confirm_number", "participant_id", "participant_ids")

navigation.register(
    "unblinding.start",
    _l("Emergency unblinding"),
    {Role.INVESTIGATOR},
    _l("reveal one participant's treatment in an emergency (signed, audited, sponsor told)."),
)
navigation.register(
    "unblinding.outbox",
    _l("Notifications"),
    {Role.ADMIN},
    _l("the outbox of sponsor notifications, sent or waiting."),
)


class LookupForm(FlaskForm):
    randomization_number = StringField(_l("Randomization number"), validators=[Length(max=32)])
    submit = SubmitField(_l("Find participant"))


class UnblindForm(FlaskForm):
    reason_category = SelectField(_l("Reason category"), validate_choice=False)
    reason = TextAreaField(_l("Reason, in your own words"), validators=[Length(max=2000)])
    confirm_number = StringField(
        _l("Type the participant's randomization number to confirm"),
        validators=[Length(max=32)],
    )
    password = PasswordField(_l("Your password (electronic signature)"))
    totp_code = StringField(_l("One-time code from your authenticator app"))
    submit = SubmitField(_l("Unblind this participant"))


@bp.route("/unblinding", methods=["GET", "POST"])
@roles_required(Role.INVESTIGATOR)
def start() -> str | Response | tuple[str, int]:
    form = LookupForm()
    if not form.validate_on_submit():
        return render_template("unblinding/start.html", form=form, found=None)
    found = unblinding.find_by_number(db.session(), form.randomization_number.data or "", current())
    if len(found) == 1:
        return redirect(url_for("unblinding.unblind", participant_id=found[0].id))
    if not found:
        form.randomization_number.errors.append(
            _("No randomized participant with this number at your sites.")
        )
        return render_template("unblinding/start.html", form=form, found=None), 404
    return render_template("unblinding/start.html", form=form, found=found)


@bp.route("/participants/<int:participant_id>/unblind", methods=["GET", "POST"])
@roles_required(Role.INVESTIGATOR)
def unblind(participant_id: int) -> str | tuple[str, int]:
    session, user = db.session(), current()
    participant = unblinding.find_participant(session, participant_id, user)
    form = _unblind_form(session.get_one(Study, participant.study_id))
    if not form.validate_on_submit():
        return _form_page(form, participant, 422 if form.is_submitted() else 200)
    try:
        one_participant_only(participant_id)
        result = unblinding.unblind(
            session, participant, actor_user=user, reason_category=form.reason_category.data,
            reason=form.reason.data, password=form.password.data,
            totp_code=form.totp_code.data, confirm_number=form.confirm_number.data, translate=_,
        )  # fmt: skip
    except RandomizerError as err:
        session.rollback()
        _field_error(form, err)
        return _form_page(form, participant, err.status)
    session.commit()  # the sponsor's notice is in the outbox: the outbox worker sends it
    study = session.get_one(Study, participant.study_id)
    return render_template(
        "unblinding/result.html", result=result, participant=participant, study=study
    )


@bp.get("/admin/outbox")
@roles_required(Role.ADMIN)
def outbox() -> str:
    return render_template(
        "unblinding/outbox.html",
        messages=notifications.outbox(db.session()),
        configured=bool(current_app.config.get("MAIL_SERVER")),
        max_attempts=notifications.MAX_ATTEMPTS,
        form=FlaskForm(),
    )


@bp.post("/admin/outbox/send")
@roles_required(Role.ADMIN)
def send_outbox() -> Response:
    done = notifications.deliver_pending(db.session(), current_app.config, retry_failed=True)
    flash(
        _("Sent: %(sent)d. Failed: %(failed)d. Waiting (no mail server): %(waiting)d.",
          sent=done.sent, failed=done.failed, waiting=done.waiting),
        "success" if not done.failed else "error",
    )  # fmt: skip
    return redirect(url_for("unblinding.outbox"))


def one_participant_only(participant_id: int) -> None:
    """Refuse a form that names more than one participant, or another than the URL's."""
    for name in PARTICIPANT_FIELDS:
        values = request.form.getlist(name)
        if len(values) > 1 or (name == "participant_ids" and values):
            raise InvalidInput(N_("One participant per unblinding."), field="confirm_number")
    named = request.form.get("participant_id")
    if named is not None and named.strip() != str(participant_id):
        raise InvalidInput(N_("One participant per unblinding."), field="confirm_number")


def _unblind_form(study: Study) -> UnblindForm:
    form = UnblindForm()
    form.reason_category.choices = [SelectChoice("", _("Choose…"))] + [
        SelectChoice(code, REASON_LABELS.get(code, code))
        for code in definition_of(study).unblinding_reasons
    ]
    return form


def _form_page(form: UnblindForm, participant: Participant, status: int) -> tuple[str, int]:
    study = db.session.get_one(Study, participant.study_id)
    return render_template(
        "unblinding/form.html",
        form=form,
        participant=participant,
        study=study,
        needs_code=has_second_factor(current()),
        meaning=_(unblinding.UNBLIND_MEANING),
    ), status


def _field_error(form: UnblindForm, err: RandomizerError) -> None:
    target: Any = getattr(form, err.field or "", None)
    errors = target.errors if target is not None and hasattr(target, "errors") else None
    if isinstance(errors, list):
        errors.append(shown_message(err))
    else:
        form.form_errors.append(shown_message(err))
