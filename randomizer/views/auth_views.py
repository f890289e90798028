"""Sign in, sign out, language choice."""

from __future__ import annotations

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

from randomizer import audit
from randomizer.auth import current_actor, start_session
from randomizer.db import db
from randomizer.errors import AuthenticationFailed
from randomizer.forms import LoginForm, LogoutForm
from randomizer.services.users import LockoutPolicy, authenticate
from randomizer.settings import LANGUAGES

bp = Blueprint("auth", __name__)


@bp.route("/login", methods=["GET", "POST"])
def login() -> str | Response | tuple[str, int]:
    if current_user.is_authenticated:
        return redirect(url_for("main.home"))
    form = LoginForm()
    if session.pop("expired", False):
        flash(_("Your session ended. Please sign in again."), "info")
    if form.validate_on_submit():
        policy = LockoutPolicy(
            current_app.config["LOCKOUT_THRESHOLD"], current_app.config["LOCKOUT_MINUTES"]
        )
        try:
            user = authenticate(
                db.session(),
                username=form.username.data or "",
                password=form.password.data or "",
                policy=policy,
                source="web",
            )
        except AuthenticationFailed:
            db.session.commit()  # keep the failed-attempt record and the lockout counter
            form.password.errors.append(_("Unknown username or wrong password."))
            return render_template("login.html", form=form), 401
        db.session.commit()
        start_session(user)
        return redirect(url_for("main.home"))
    return render_template("login.html", form=form)


@bp.post("/logout")
def logout() -> Response:
    form = LogoutForm()
    if form.validate_on_submit() and current_user.is_authenticated:
        audit.record(
            db.session(),
            actor=current_actor(),
            action="logout",
            object_type="user",
            object_id=current_actor().username,
        )
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
