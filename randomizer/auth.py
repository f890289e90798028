"""Sign-in sessions, bearer tokens, role and site checks."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

from flask import Flask, abort, current_app, g, redirect, request, session, url_for
from flask_babel import lazy_gettext as _l
from flask_login import AnonymousUserMixin, LoginManager, current_user, logout_user
from sqlalchemy import select

from randomizer import audit
from randomizer.db import db, utcnow
from randomizer.models import Role, User
from randomizer.services.users import actor_of, verify_totp

F = TypeVar("F", bound=Callable[..., Any])

login_manager = LoginManager()
login_manager.login_view = "auth.login"
login_manager.login_message = _l("Please sign in to continue.")
login_manager.session_protection = "strong"


class SessionUser:
    """What Flask-Login keeps: the account plus the session version it was issued for."""

    def __init__(self, user: User) -> None:
        self.user = user
        self.is_authenticated = True
        self.is_active = user.active
        self.is_anonymous = False

    def get_id(self) -> str:
        return f"{self.user.id}:{self.user.session_version}"


def init_app(app: Flask) -> None:
    """Register the login manager and the per-request session checks."""
    login_manager.init_app(app)
    login_manager.anonymous_user = AnonymousUserMixin

    @login_manager.user_loader
    def _load(ident: str) -> SessionUser | None:
        user_id, _, version = ident.partition(":")
        if not user_id.isdigit() or not version.isdigit():
            return None
        user = db.session.get(User, int(user_id))
        # A change of role, site or status bumps session_version: old sessions end here.
        if user is None or not user.active or user.session_version != int(version):
            return None
        return SessionUser(user)

    @app.before_request
    def _session_timeouts() -> Any:
        if request.path.startswith(("/static/", "/api/")) or "_user_id" not in session:
            return None
        now = utcnow().timestamp()
        started = float(session.get("signed_in_at", 0))
        seen = float(session.get("seen_at", 0))
        idle = current_app.config["IDLE_TIMEOUT_MINUTES"] * 60
        absolute = current_app.config["ABSOLUTE_TIMEOUT_HOURS"] * 3600
        if now - seen > idle or now - started > absolute:
            logout_user()
            session.clear()
            session["expired"] = True
            return redirect(url_for("auth.login"))
        session["seen_at"] = now
        return None


def start_session(user: User) -> None:
    """Begin a fresh signed-in session (new session contents, no fixation)."""
    from flask_login import login_user

    lang = session.get("lang")
    session.clear()
    if lang:
        session["lang"] = lang
    login_user(SessionUser(user))
    now = utcnow().timestamp()
    session["signed_in_at"] = now
    session["seen_at"] = now


def current() -> User:
    """The signed-in (or token-authenticated) user; 401 when there is none."""
    api_user: User | None = g.get("api_user")
    if api_user is not None:
        return api_user
    if not current_user.is_authenticated:
        abort(401)
    return cast(SessionUser, current_user._get_current_object()).user


def current_actor() -> audit.Actor:
    """The audit actor for the current user."""
    return actor_of(current())


def verify_second_factor(user: User, code: object) -> bool:
    """Check a one-time code of an enrolled user (e-signatures); each code works once.

    False for users without a second factor: callers ask for a code only when
    ``services.users.has_second_factor(user)``. The caller's commit keeps the used step.
    """
    return verify_totp(db.session(), user, code)


def roles_required(*roles: Role) -> Callable[[F], F]:
    """Let only these roles through (403 for other signed-in users)."""

    def decorator(view: F) -> F:
        @functools.wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if not current_user.is_authenticated and g.get("api_user") is None:
                return login_manager.unauthorized()
            if current().role not in roles:
                abort(403)
            return view(*args, **kwargs)

        return cast(F, wrapped)

    return decorator


def login_required(view: F) -> F:
    """Any signed-in user."""
    return roles_required(*Role)(view)


def can_see_site(user: User, site_code: str) -> bool:
    """Site scope: admin and statistician see all sites; assessors without sites see all."""
    if user.role in (Role.ADMIN, Role.STATISTICIAN):
        return True
    if user.role is Role.ASSESSOR and not user.sites:
        return True
    return site_code in user.site_codes


def users_by_name(names: list[str]) -> dict[str, User]:
    """Users keyed by username (for showing full names beside audit entries)."""
    return {u.username: u for u in db.session.scalars(select(User).where(User.username.in_(names)))}
