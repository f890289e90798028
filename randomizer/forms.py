"""WTForms: shape checks only; business rules come back from the services."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import PasswordField, StringField, SubmitField
from wtforms.validators import DataRequired, Length, Regexp


class LoginForm(FlaskForm):
    username = StringField(_l("Username"), validators=[DataRequired(), Length(max=64)])
    password = PasswordField(_l("Password"), validators=[DataRequired(), Length(max=256)])
    submit = SubmitField(_l("Sign in"))


class TotpForm(FlaskForm):
    code = StringField(
        _l("6-digit code"),
        validators=[
            DataRequired(),
            Regexp(
                r"^\s*(\d{3}\s?\d{3}|[0-9a-fA-F]{4}(-[0-9a-fA-F]{4}){2})\s*$",
                message=_l("Enter the 6 digits of the code, or one of your recovery codes."),
            ),
        ],
    )
    submit = SubmitField(_l("Verify"))


class LogoutForm(FlaskForm):
    submit = SubmitField(_l("Sign out"))
