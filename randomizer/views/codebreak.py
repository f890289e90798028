"""Code-break envelopes for the statistician: printable sheets, one per randomization number."""

from __future__ import annotations

from flask import Blueprint, render_template
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import SelectField, SubmitField
from wtforms.fields.choices import SelectChoice

from randomizer.auth import current, roles_required
from randomizer.db import db
from randomizer.errors import RandomizerError, shown_message
from randomizer.models import ListKind, Role, Site, Study
from randomizer.services import codebreak
from randomizer.services.studies import get_study
from randomizer.views import navigation

bp = Blueprint("codebreak", __name__)

navigation.register(
    "codebreak.envelopes",
    _l("Code-break envelopes"),
    {Role.STATISTICIAN},
    _l("print sealed envelopes for emergencies while the service is down (audited)."),
)


class EnvelopeForm(FlaskForm):
    study = SelectField(_l("Study"), validate_choice=False)
    kind = SelectField(
        _l("List"),
        choices=[
            SelectChoice("live", _l("Live list")),
            SelectChoice("dummy", _l("Dummy list (training)")),
        ],
    )
    site = SelectField(_l("Site"), validate_choice=False)
    submit = SubmitField(_l("Produce envelopes"))


@bp.route("/codebreak", methods=["GET", "POST"])
@roles_required(Role.STATISTICIAN)
def envelopes() -> str | tuple[str, int]:
    session = db.session()
    form = _form()
    if not form.validate_on_submit():
        return render_template("codebreak/form.html", form=form)
    try:
        study = get_study(session, form.study.data or "")
        run = codebreak.make_envelopes(
            session, study, kind=ListKind(form.kind.data), actor_user=current(),
            site=form.site.data or None,
        )  # fmt: skip
    except RandomizerError as err:
        session.rollback()
        form.form_errors.append(shown_message(err))
        return render_template("codebreak/form.html", form=form), err.status
    session.commit()
    return render_template("codebreak/envelopes.html", run=run)


def _form() -> EnvelopeForm:
    form = EnvelopeForm()
    studies = db.session.scalars(select(Study).order_by(Study.code)).all()
    form.study.choices = [SelectChoice(s.code, f"{s.code} · {s.title}") for s in studies]
    sites = db.session.scalars(select(Site.code).distinct().order_by(Site.code)).all()
    form.site.choices = [SelectChoice("", _l("All sites"))] + [SelectChoice(c) for c in sites]
    return form
