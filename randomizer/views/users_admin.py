"""User administration for admins: create users, change role, sites and status, reset a
password (a new one is chosen at next sign-in), enrol or reset the second factor. Each change
is audited and ends the user's sessions at their next request."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import BooleanField, EmailField, SelectField, SelectMultipleField, StringField
from wtforms.validators import DataRequired, Length, Optional
from wtforms.widgets import CheckboxInput, ListWidget

from randomizer.auth import current_actor, roles_required
from randomizer.db import db
from randomizer.errors import RandomizerError, shown_message
from randomizer.models import Role, Site, User
from randomizer.services.accounts import create_account, enrol_for_user, reset_password
from randomizer.services.users import get_user, remove_totp, update_user
from randomizer.views import navigation
from randomizer.views.account import qr_svg

bp = Blueprint("users", __name__, url_prefix="/users")

navigation.register(
    "users.index",
    _l("Users"),
    {Role.ADMIN},
    _l("create users, change roles and sites, reset passwords and second factors"),
)


class Checkboxes(SelectMultipleField):
    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()


class UserForm(FlaskForm):
    role = SelectField(_l("Role"), choices=[])
    sites = Checkboxes(_l("Sites"), choices=[])
    active = BooleanField(_l("Active"))


class EditUserForm(UserForm):
    acknowledge_exposure = BooleanField(
        _l("I acknowledge that this person has seen (or could have seen) treatment arms, "
           "and record it in the blinding-exposure register")
    )  # fmt: skip


class NewUserForm(UserForm):
    username = StringField(_l("Username"), validators=[DataRequired(), Length(max=64)])
    full_name = StringField(_l("Full name"), validators=[Optional(), Length(max=200)])
    email = EmailField(_l("E-mail"), validators=[Optional(), Length(max=254)])


class ActionForm(FlaskForm):
    pass


def _choices(form: UserForm) -> UserForm:
    form.role.choices = [(r.value, str(navigation.ROLE_LABELS[r])) for r in Role]
    codes = sorted(set(db.session.scalars(select(Site.code))))
    form.sites.choices = [(c, c) for c in codes]
    return form


def _refused(form: UserForm, err: RandomizerError, template: str, **ctx: Any) -> Any:
    db.session.rollback()
    target = form[err.field] if err.field and err.field in form else form["role"]
    target.errors = [*target.errors, shown_message(err)]
    return render_template(template, form=form, **ctx), err.status


@bp.get("/")
@roles_required(Role.ADMIN)
def index() -> str:
    users = db.session.scalars(select(User).order_by(User.username)).all()
    return render_template("users/index.html", users=users)


@bp.route("/new", methods=["GET", "POST"])
@roles_required(Role.ADMIN)
def new() -> Any:
    form = _choices(NewUserForm())
    if not form.validate_on_submit():
        return render_template("users/new.html", form=form)
    try:
        user, password = create_account(
            db.session(), username=form.username.data, role=form.role.data,
            full_name=form.full_name.data or None, email=form.email.data or None,
            sites=form.sites.data or [], actor=current_actor(),
        )  # fmt: skip
    except RandomizerError as err:
        return _refused(form, err, "users/new.html")
    db.session.commit()
    return render_template("users/temporary.html", user=user, password=password)


@bp.route("/<username>", methods=["GET", "POST"])
@roles_required(Role.ADMIN)
def edit(username: str) -> Any:
    user = get_user(db.session(), username)
    form = _choices(EditUserForm(obj=_Values(user)))  # a posted form overrides these values
    ctx = {"user": user, "action": ActionForm()}
    if not form.validate_on_submit():
        return render_template("users/edit.html", form=form, **ctx)
    try:
        update_user(db.session(), user, actor=current_actor(), role=Role(form.role.data),
                    sites=form.sites.data or [], active=form.active.data,
                    acknowledge_exposure=bool(form.acknowledge_exposure.data))  # fmt: skip
    except RandomizerError as err:
        return _refused(form, err, "users/edit.html", **ctx)
    db.session.commit()
    flash(_("%(user)s was updated.", user=user.username), "success")
    return redirect(url_for(".index"))


class _Values:
    """A user's current settings, as the edit form shows them."""

    def __init__(self, user: User) -> None:
        self.role, self.sites, self.active = user.role.value, sorted(user.site_codes), user.active
        self.acknowledge_exposure = False


def _action(username: str) -> User:
    if not ActionForm().validate_on_submit():
        abort(400)
    return get_user(db.session(), username)


@bp.post("/<username>/reset-password")
@roles_required(Role.ADMIN)
def password_reset(username: str) -> str:
    user = _action(username)
    password = reset_password(db.session(), user, actor=current_actor())
    db.session.commit()
    return render_template("users/temporary.html", user=user, password=password)


@bp.post("/<username>/totp")
@roles_required(Role.ADMIN)
def totp_enrol(username: str) -> str:
    user = _action(username)
    uri, codes = enrol_for_user(db.session(), user, actor=current_actor())
    db.session.commit()
    return render_template("users/totp.html", user=user, qr=qr_svg(uri), uri=uri, codes=codes)


@bp.post("/<username>/totp/remove")
@roles_required(Role.ADMIN)
def totp_remove(username: str) -> Any:
    user = _action(username)
    remove_totp(db.session(), user, actor=current_actor())
    db.session.commit()
    flash(_("The second factor of %(user)s was removed.", user=user.username), "success")
    return redirect(url_for(".edit", username=user.username))
