"""Signed downloads of unblinded files (the unblinded list export, the SDTM DM dataset):
the user re-enters the password, the file is written with its audit event, and the event
is committed before a single byte leaves the server."""

from __future__ import annotations

import io
import tempfile
from collections.abc import Callable
from typing import Any, TextIO

from flask import render_template, send_file
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import PasswordField
from wtforms.validators import DataRequired, Length

from randomizer.auth import current
from randomizer.crypto import IntegrityFailure
from randomizer.db import db
from randomizer.errors import RandomizerError, shown_message, unreadable
from randomizer.services.users import check_signature

#: Spooled export files move from memory to a temporary file past this size.
SPOOL_BYTES = 4 * 1024 * 1024


class SignForm(FlaskForm):
    password = PasswordField(_l("Your password"), validators=[DataRequired(), Length(max=256)])


def signed_download(
    template: str, meaning: str, write: Callable[[TextIO], object], name: str, **ctx: Any
) -> Any:
    """The signing page, or (signed) the CSV that ``write`` produces, as ``name``."""
    form = SignForm()
    if not form.validate_on_submit():
        return render_template(template, form=form, **ctx)
    session = db.session()
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 (sent, then closed)
    text = io.TextIOWrapper(spool, encoding="utf-8", newline="")
    try:
        check_signature(session, current(), form.password.data, meaning)
        write(text)
        text.flush()
    except (RandomizerError, IntegrityFailure) as err:
        _discard(text)
        db.session.rollback()
        refusal = err if isinstance(err, RandomizerError) else unreadable(err)
        form.password.errors = [*form.password.errors, shown_message(refusal)]
        return render_template(template, form=form, **ctx), refusal.status
    except BaseException:
        _discard(text)
        raise
    text.detach()
    db.session.commit()
    spool.seek(0)
    return send_file(spool, mimetype="text/csv", as_attachment=True, download_name=name)


def _discard(text: io.TextIOWrapper) -> None:
    # Detach first: a wrapper collected later would flush into the closed spool.
    text.detach().close()
