"""WTForms: shape checks only; business rules come back from the services.

Also the number fields every HTML form uses: numbers are read in the page's language."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from babel import Locale
from babel.numbers import NumberFormatError, format_decimal, get_decimal_symbol, parse_decimal
from flask_babel import get_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import Field, PasswordField, StringField, SubmitField
from wtforms.validators import DataRequired, Length, Regexp
from wtforms.widgets import TextInput


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


class LocaleDecimalField(Field):
    """A number typed as people write it in the page's language (``0,8`` on a Spanish page,
    ``0.8`` on an English one), read with Babel in strict mode.

    A thousands separator, an exponent, digits of another script or anything Babel would
    read two ways is refused with a message naming the field: a decimal comma must never
    become a thousands separator (``0,8`` read as 8). ``data`` is a ``Decimal`` or None.
    """

    widget = TextInput()
    whole = False
    data: Any

    def __init__(
        self, label: Any = None, validators: Any = None, *, named: Any = None, **kwargs: Any
    ) -> None:
        #: How refusals name the field (the label unless a shorter name is given).
        self.named = named
        render_kw = {"inputmode": "numeric" if self.whole else "decimal", "autocomplete": "off"}
        render_kw.update(kwargs.pop("render_kw", None) or {})
        super().__init__(label, validators, render_kw=render_kw, **kwargs)

    def _value(self) -> str:
        if self.raw_data:
            return str(self.raw_data[0])
        if self.data is None or self.data == "":
            return ""
        return format_number(self.data)

    def process_formdata(self, valuelist: list[Any]) -> None:
        self.data = None
        if valuelist and str(valuelist[0]).strip():
            number = read_number(
                str(valuelist[0]), field=str(self.named or self.label.text), whole=self.whole
            )
            self.data = int(number) if self.whole else number


class LocaleIntegerField(LocaleDecimalField):
    """A count typed in the page's language: digits only, no separators; ``data`` is an int."""

    whole = True


#: Longer typed numbers are refused (a float keeps about 15 significant digits).
MAX_NUMBER_LENGTH = 16
_PLAIN_NUMBER = re.compile(r"[+-]?[0-9]+(?:[.,][0-9]+)?")


def read_number(text: str, *, field: str, whole: bool = False) -> Decimal:
    """The number ``text`` names in the current page language, else ValueError naming the field."""
    locale = get_locale() or Locale("en")
    decimal = get_decimal_symbol(locale)
    typed = text.strip()
    ok = (
        len(typed) <= MAX_NUMBER_LENGTH
        and _PLAIN_NUMBER.fullmatch(typed) is not None
        and (("." not in typed and "," not in typed) or (not whole and decimal in typed))
    )
    if ok:
        try:
            return parse_decimal(typed, locale=locale, strict=True)
        except NumberFormatError:
            pass
    shown = typed[:MAX_NUMBER_LENGTH]
    if whole:
        message = _(
            "%(field)s: “%(value)s” is not a whole number; type digits only, without "
            "separators (for example 120).",
            field=field, value=shown,
        )  # fmt: skip
    else:
        message = _(
            "%(field)s: “%(value)s” is not a number as written on this page; use “%(decimal)s” "
            "for decimals and no thousands separator (for example %(example)s).",
            field=field, value=shown, decimal=decimal, example=format_number(Decimal("39.5")),
        )  # fmt: skip
    raise ValueError(message)


def format_number(value: Decimal | float | int) -> str:
    """A number as the current page language writes it, without thousands separators."""
    return str(format_decimal(value, format="0.##########", locale=get_locale() or Locale("en")))
