"""The signed-in user's own account: change the password (forced after a reset), enrol the
second factor (QR code rendered on the server) and receive single-use recovery codes."""

from __future__ import annotations

import io
from typing import Any

import segno
from flask import Blueprint, flash, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from markupsafe import Markup
from werkzeug.wrappers import Response
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, EqualTo, Length

from randomizer.auth import current, current_actor, login_required, start_session
from randomizer.db import db
from randomizer.errors import RandomizerError, shown_message
from randomizer.services.accounts import change_password
from randomizer.services.passwords import MAX_PASSWORD_LENGTH
from randomizer.services.second_factor import confirm_totp, new_totp_secret, provisioning_uri
from randomizer.views import navigation

bp = Blueprint("account", __name__, url_prefix="/account")
#: Session key of a second-factor secret shown but not yet confirmed with a code.
PENDING_TOTP = "pending_totp"
#: What a user who must change the password may still reach.
OPEN_DURING_CHANGE = frozenset({"account.password", "auth.logout", "auth.set_language", "static"})

navigation.register(
    "account.password",
    _l("My account"),
    set(navigation.ROLE_LABELS),
    _l("change your password; set up your authenticator app"),
)


class PasswordForm(FlaskForm):
    old_password = PasswordField(
        _l("Current password"), validators=[DataRequired(), Length(max=MAX_PASSWORD_LENGTH)]
    )
    new_password = PasswordField(
        _l("New password"), validators=[DataRequired(), Length(max=MAX_PASSWORD_LENGTH)]
    )
    confirm = PasswordField(
        _l("New password again"),
        validators=[DataRequired(), EqualTo("new_password", message=_l("The two do not match."))],
    )


class ConfirmTotpForm(FlaskForm):
    code = StringField(_l("6-digit code"), validators=[DataRequired(), Length(max=16)])


def qr_svg(text: str) -> Markup:
    """An inline SVG QR code (no external script or image)."""
    out = io.BytesIO()
    segno.make(text, error="m").save(out, kind="svg", scale=5, xmldecl=False, svgns=True)
    return Markup(out.getvalue().decode("utf-8"))


def _refuse(form: FlaskForm, err: RandomizerError, field: str) -> None:
    db.session.rollback()
    target = form[err.field] if err.field and err.field in form else form[field]
    target.errors = [*target.errors, shown_message(err)]


@bp.route("/password", methods=["GET", "POST"])
@login_required
def password() -> Any:
    form, user = PasswordForm(), current()
    if not form.validate_on_submit():
        return render_template(
            "account/password.html", form=form, forced=user.password_change_required
        )
    try:
        change_password(db.session(), user, old_password=form.old_password.data,
                        new_password=form.new_password.data)  # fmt: skip
    except RandomizerError as err:
        _refuse(form, err, "new_password")
        return render_template("account/password.html", form=form), err.status
    db.session.commit()
    start_session(user)  # this session goes on under the new version; all others have ended
    flash(_("Your password was changed. You were signed out everywhere else."), "success")
    return redirect(url_for("main.home"))


@bp.route("/totp", methods=["GET", "POST"])
@login_required
def totp() -> Any:
    user, form = current(), ConfirmTotpForm()
    secret = session.get(PENDING_TOTP) if form.is_submitted() else None
    if not isinstance(secret, str):
        secret = session[PENDING_TOTP] = new_totp_secret()
    uri = provisioning_uri(secret, user.username)
    page = {"form": form, "secret": secret, "qr": qr_svg(uri), "enrolled": user.totp_sealed}
    if not form.validate_on_submit():
        return render_template("account/totp.html", **page)
    try:
        codes = confirm_totp(db.session(), user, secret=secret, code=form.code.data,
                             actor=current_actor())  # fmt: skip
    except RandomizerError as err:
        _refuse(form, err, "code")
        return render_template("account/totp.html", **page), err.status
    db.session.commit()
    session.pop(PENDING_TOTP, None)
    return render_template("account/recovery_codes.html", codes=codes)


@bp.before_app_request
def _forced_password_change() -> Response | None:
    """A user whose password was reset reaches nothing but the change page."""
    if (
        request.endpoint in OPEN_DURING_CHANGE
        or request.path.startswith("/api/")
        or not current_user.is_authenticated
        or not current().password_change_required
    ):
        return None
    return redirect(url_for("account.password"))
