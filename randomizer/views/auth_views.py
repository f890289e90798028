"""Sign in (password, then the one-time code where enrolled), sign out, language choice."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import gettext as _
from flask_login import current_user, logout_user
from werkzeug.wrappers import Response

from randomizer.auth import current, current_actor, start_session
from randomizer.db import db, utcnow
from randomizer.errors import AuthenticationFailed
from randomizer.forms import LoginForm, LogoutForm, TotpForm
from randomizer.inputs import has_control_character
from randomizer.services.users import (
    PRIVILEGED_ROLES,
    LockoutPolicy,
    SecondFactorInvalid,
    SecondFactorMissing,
    authenticate,
    complete_sign_in,
    end_sessions,
)
from randomizer.settings import LANGUAGES

bp = Blueprint("auth", __name__)

#: Session key of a sign-in whose password was accepted and whose code is still owed.
PENDING = "pending_sign_in"
#: How long the code may take after the password (seconds).
PENDING_SECONDS = 300


def _policy() -> LockoutPolicy:
    config = current_app.config
    roles = PRIVILEGED_ROLES if config["REQUIRE_TOTP_FOR_PRIVILEGED"] else frozenset()
    return LockoutPolicy(config["LOCKOUT_THRESHOLD"], config["LOCKOUT_MINUTES"], roles)


def _safe_next(target: str | None) -> str:
    """Where to go after sign-in: a path on this site only, else the start page."""
    parts = urlsplit(target or "")
    if (
        target
        and target.startswith("/")
        and not target.startswith("//")
        and "\\" not in target
        and not has_control_character(target)
        and not parts.scheme
        and not parts.netloc
    ):
        return target
    return url_for("main.home")


def _refused(form: LoginForm, message: str, status: int) -> tuple[str, int]:
    db.session.commit()  # keep the failed-attempt record and the lockout counter
    form.password.errors.append(message)
    return render_template("login.html", form=form), status


@bp.route("/login", methods=["GET", "POST"])
def login() -> str | Response | tuple[str, int]:
    if current_user.is_authenticated:
        return redirect(_safe_next(request.args.get("next")))
    form = LoginForm()
    if session.pop("expired", False):
        flash(_("Your session ended. Please sign in again."), "info")
    if not form.validate_on_submit():
        return render_template("login.html", form=form)
    try:
        step = authenticate(
            db.session(),
            username=form.username.data or "",
            password=form.password.data or "",
            policy=_policy(),
            source="web",
        )
    except SecondFactorMissing:
        message = _(
            "Your role may only sign in with a second factor (an authenticator app), "
            "and you have none yet. Ask an administrator to enrol you."
        )
        return _refused(form, message, 403)
    except AuthenticationFailed:
        return _refused(form, _("Unknown username or wrong password."), 401)
    db.session.commit()
    target = _safe_next(request.args.get("next"))
    if step.second_factor_pending:
        session[PENDING] = {
            "user": step.user.id,
            "version": step.user.session_version,
            "at": utcnow().timestamp(),
            "next": target,
        }
        return redirect(url_for("auth.login_totp"))
    start_session(step.user)
    return redirect(target)


def _pending() -> dict[str, Any] | None:
    pending = session.get(PENDING)
    if not isinstance(pending, dict):
        return None
    if utcnow().timestamp() - float(pending.get("at", 0)) > PENDING_SECONDS:
        session.pop(PENDING, None)
        return None
    return pending


@bp.route("/login/totp", methods=["GET", "POST"])
def login_totp() -> str | Response | tuple[str, int]:
    pending = _pending()
    if pending is None:
        flash(_("Please sign in again."), "info")
        return redirect(url_for("auth.login"))
    form = TotpForm()
    if not form.validate_on_submit():
        return render_template("login_totp.html", form=form)
    try:
        user = complete_sign_in(
            db.session(),
            user_id=int(pending["user"]),
            session_version=int(pending["version"]),
            code=form.code.data or "",
            policy=_policy(),
            source="web",
        )
    except SecondFactorInvalid:
        db.session.commit()
        form.code.errors.append(
            _("That code is not valid. Enter the current 6-digit code from your authenticator app.")
        )
        return render_template("login_totp.html", form=form), 401
    except AuthenticationFailed:
        db.session.commit()
        session.pop(PENDING, None)
        flash(_("Unknown username or wrong password."), "error")
        return redirect(url_for("auth.login"))
    db.session.commit()
    start_session(user)
    return redirect(_safe_next(pending.get("next")))


@bp.post("/logout")
def logout() -> Response:
    form = LogoutForm()
    if form.validate_on_submit() and current_user.is_authenticated:
        # Sessions live in signed cookies: bumping the version is what makes a copy of
        # this cookie (or another tab's) useless from now on.
        end_sessions(db.session(), current(), actor=current_actor(), action="logout")
        db.session.commit()
        logout_user()
    lang = session.get("lang")
    session.clear()
    if lang:
        session["lang"] = lang
    flash(_("You have signed out."), "info")
    return redirect(url_for("auth.login"))


@bp.get("/lang/<code>")
def set_language(code: str) -> Response:
    if code in LANGUAGES:
        session["lang"] = code
    target = request.referrer or url_for("main.home")
    if not target.startswith(request.host_url):
        target = url_for("main.home")
    return redirect(target)
