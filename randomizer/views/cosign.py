"""Pages of the two-person steps (going live, database lock): a statistician and an admin
each sign with their own password, and the user filling in the page is one of them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from flask import render_template
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, Length

from randomizer.auth import current
from randomizer.db import db
from randomizer.errors import RandomizerError, shown_message
from randomizer.models import Role, Study

T = TypeVar("T")


class CosignForm(FlaskForm):
    statistician = StringField(_l("Statistician (username)"), validators=[DataRequired()])
    statistician_password = PasswordField(
        _l("Statistician's password"), validators=[DataRequired(), Length(max=256)]
    )
    admin = StringField(_l("Administrator (username)"), validators=[DataRequired()])
    admin_password = PasswordField(
        _l("Administrator's password"), validators=[DataRequired(), Length(max=256)]
    )


def cosigned_page(
    study: Study,
    form: CosignForm,
    template: str,
    service: Callable[..., T],
    done: Callable[[T], Any],
    **ctx: Any,
) -> Any:
    """Show the signing page; on a valid submission run ``service``, commit and ``done``."""
    user = current()
    if not form.is_submitted():
        (form.statistician if user.role is Role.STATISTICIAN else form.admin).data = user.username
    ctx.update(study=study, form=form)
    if not form.validate_on_submit():
        return render_template(template, **ctx)
    signers = {form.statistician.data.strip().lower(), form.admin.data.strip().lower()}
    if user.username not in signers:
        form.statistician.errors = [_("You must be one of the two signers.")]
        return render_template(template, **ctx), 403
    try:
        result = service(
            db.session(),
            study,
            statistician=form.statistician.data,
            statistician_password=form.statistician_password.data,
            admin=form.admin.data,
            admin_password=form.admin_password.data,
        )
    except RandomizerError as err:
        db.session.rollback()
        target = form[err.field] if err.field and err.field in form else form["confirm"]
        target.errors = [*target.errors, shown_message(err)]
        return render_template(template, **ctx), err.status
    db.session.commit()
    return done(result)
