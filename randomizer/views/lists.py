"""Statistician pages: allocation lists (generate, import, summary, extend, verify, unblinded
export) and the signed go-live. Admins see summaries only; site users never see a list."""

from __future__ import annotations

import io
import tempfile
from decimal import Decimal
from fractions import Fraction
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, send_file, url_for
from flask_babel import format_decimal
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from sqlalchemy import select
from wtforms import BooleanField, PasswordField, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional

from randomizer.auth import current, current_actor, roles_required
from randomizer.crypto import IntegrityFailure
from randomizer.db import db
from randomizer.errors import RandomizerError, shown_message, unreadable
from randomizer.forms import LocaleIntegerField
from randomizer.models import ListKind, Role, Study
from randomizer.predictability import decimals
from randomizer.services.bulk_unblinding import Signature, signers_needed
from randomizer.services.commitment import extend_list, list_commitments
from randomizer.services.golive import GoLiveResult, go_live
from randomizer.services.list_files import export_list, import_list
from randomizer.services.list_predictability import assess_list
from randomizer.services.list_summary import summarize
from randomizer.services.list_verify import verify_list
from randomizer.services.lists import find_list, get_list
from randomizer.services.minimization import is_minimization, make_list
from randomizer.services.studies import definition_of, get_study
from randomizer.views import navigation
from randomizer.views.cosign import CosignForm, cosigned_page
from randomizer.views.downloads import SPOOL_BYTES

bp = Blueprint("lists", __name__, url_prefix="/lists")

STAT = Role.STATISTICIAN
KIND = "<any(dummy, live):kind>"

navigation.register(
    "lists.index",
    _l("Allocation lists"),
    {Role.STATISTICIAN, Role.ADMIN},
    _l("generate, import, verify and export the allocation lists; go live"),
)

_KIND_CHOICES = [
    SelectChoice("dummy", _l("Dummy list (training and testing)")),
    SelectChoice("live", _l("Live list")),
]


class GenerateForm(FlaskForm):
    kind = SelectField(_l("List"), choices=_KIND_CHOICES)
    per_stratum = LocaleIntegerField(
        _l("Slots per stratum"), validators=[Optional(), NumberRange(1, 100_000)]
    )


class ImportForm(FlaskForm):
    kind = SelectField(_l("List"), choices=_KIND_CHOICES)
    file = FileField(_l("CSV file"), validators=[FileRequired()])


class ExtendForm(FlaskForm):
    stratum = SelectField(_l("Stratum"), choices=[])
    slots = LocaleIntegerField(
        _l("Slots to add"), validators=[InputRequired(), NumberRange(1, 100_000)]
    )


class VerifyForm(FlaskForm):
    pass


class SignForm(FlaskForm):
    password = PasswordField(_l("Your password"), validators=[DataRequired(), Length(max=256)])


class TwoPersonSignForm(SignForm):
    second = StringField(
        _l("Second unblinded person (username)"), validators=[DataRequired(), Length(max=64)]
    )
    second_password = PasswordField(
        _l("Second person's password"), validators=[DataRequired(), Length(max=256)]
    )


class GoLiveForm(CosignForm):
    confirm = BooleanField(
        _l("I understand that going live cannot be undone."), validators=[DataRequired()]
    )


@bp.app_template_filter("fixed")
def _fixed(value: Fraction, places: int = 2) -> str:
    """An exact figure rounded half up, written the page's way (2.50 or 2,50)."""
    return str(format_decimal(Decimal(decimals(value, places)), format="0." + "0" * places))


def _study(code: str) -> Study:
    return get_study(db.session(), code)


def _refused(form: FlaskForm, err: RandomizerError, field: str, template: str, **ctx: Any) -> Any:
    """Roll back and show a refusal next to the field it concerns."""
    db.session.rollback()
    target = form[err.field] if err.field and err.field in form else form[field]
    target.errors = [*target.errors, shown_message(err)]
    return render_template(template, form=form, **ctx), err.status


@bp.get("/")
@roles_required(STAT, Role.ADMIN)
def index() -> str:
    return _index_with(GenerateForm(), ImportForm())


@bp.post("/<code>/generate")
@roles_required(STAT)
def generate(code: str) -> Any:
    study, form = _study(code), GenerateForm()
    if not form.validate_on_submit():
        return _index_with(form, ImportForm()), 422
    kind = ListKind(form.kind.data)
    try:
        row = make_list(
            db.session(), study, kind=kind, actor=current_actor(), per_stratum=form.per_stratum.data
        )
    except RandomizerError as err:
        db.session.rollback()
        form.per_stratum.errors = [*form.per_stratum.errors, shown_message(err)]
        return _index_with(form, ImportForm()), err.status
    db.session.commit()
    if definition_of(study).method == "minimization":
        message = _("The %(kind)s minimization record was made: each assignment will be drawn "
                    "at randomization.", kind=_kind_label(kind))  # fmt: skip
    else:
        message = _("The %(kind)s list was generated: %(n)d slots.", kind=_kind_label(kind),
                    n=sum(row.params["slots"].values()))  # fmt: skip
    flash(message, "success")
    return redirect(url_for(".summary", code=code, kind=kind.value))


@bp.post("/<code>/import")
@roles_required(STAT)
def upload(code: str) -> Any:
    study, form = _study(code), ImportForm()
    if not form.validate_on_submit():
        return _index_with(GenerateForm(), form), 422
    kind = ListKind(form.kind.data)
    text = io.TextIOWrapper(form.file.data.stream, encoding="utf-8-sig", newline="")
    try:
        row = import_list(
            db.session(),
            study,
            kind=kind,
            source=text,
            actor=current_actor(),
            filename=form.file.data.filename or "upload.csv",
        )
    except RandomizerError as err:
        db.session.rollback()
        form.file.errors = [*form.file.errors, *shown_message(err).splitlines()]
        return _index_with(GenerateForm(), form), err.status
    db.session.commit()
    flash(
        _(
            "The %(kind)s list was imported: %(n)d slots.",
            kind=_kind_label(kind),
            n=sum(row.params["slots"].values()),
        ),
        "success",
    )
    return redirect(url_for(".summary", code=code, kind=kind.value))


def _index_with(generate: GenerateForm, upload: ImportForm) -> str:
    session = db.session()
    studies = session.scalars(select(Study).order_by(Study.code)).all()
    found = {(s.code, k.value): find_list(session, s, k) for s in studies for k in ListKind}
    return render_template(
        "lists/index.html",
        studies=studies,
        found=found,
        generate=generate,
        upload=upload,
        may_change=current().role is STAT,
        minimizing={s.code for s in studies if definition_of(s).method == "minimization"},
    )


@bp.get(f"/<code>/{KIND}")
@roles_required(STAT, Role.ADMIN)
def summary(code: str, kind: str, extend: ExtendForm | None = None) -> Any:
    study = _study(code)
    # Block structure and slot totals are list structure: the statistician's page only.
    result = summarize(db.session(), study, ListKind(kind), with_blocks=current().role is STAT)
    form = extend or ExtendForm()
    form.stratum.choices = [SelectChoice(s) for s in result.row.params["strata"]]
    # The figures depend on the arms: the statistician's page only, never the admin's.
    figures, problem = None, None
    if current().role is STAT and not is_minimization(result.row):
        try:
            figures = assess_list(db.session(), study, ListKind(kind))
        except IntegrityFailure as err:
            problem = str(err)
    return render_template(
        "lists/summary.html",
        study=study,
        kind=ListKind(kind),
        summary=result,
        predictability=figures,
        predictability_problem=problem,
        commitments=list_commitments(db.session(), study) if kind == ListKind.LIVE.value else [],
        extend=form,
        verify=VerifyForm(),
        may_change=current().role is STAT,
    )


@bp.post(f"/<code>/{KIND}/extend")
@roles_required(STAT)
def extend(code: str, kind: str) -> Any:
    study, form = _study(code), ExtendForm()
    strata = get_list(db.session(), study, ListKind(kind)).params["strata"]
    form.stratum.choices = [SelectChoice(s) for s in strata]
    if not form.validate_on_submit():
        return summary(code, kind, extend=form), 422
    try:
        added = extend_list(
            db.session(),
            study,
            kind=ListKind(kind),
            stratum=form.stratum.data,
            slots=form.slots.data or 0,
            actor=current_actor(),
        )
    except (RandomizerError, IntegrityFailure) as err:
        db.session.rollback()
        message = shown_message(err if isinstance(err, RandomizerError) else unreadable(err))
        form.slots.errors = [*form.slots.errors, message]
        return summary(code, kind, extend=form), getattr(err, "status", 409)
    db.session.commit()
    flash(
        _("%(n)d slots were added to stratum %(stratum)s.", n=added, stratum=form.stratum.data),
        "success",
    )
    return redirect(url_for(".summary", code=code, kind=kind))


@bp.post(f"/<code>/{KIND}/verify")
@roles_required(STAT)
def verify(code: str, kind: str) -> Any:
    if not VerifyForm().validate_on_submit():
        abort(400)
    study = _study(code)
    report = verify_list(db.session(), study, kind=ListKind(kind), actor=current_actor())
    db.session.commit()
    return render_template("lists/verify.html", study=study, kind=ListKind(kind), report=report)


@bp.route(f"/<code>/{KIND}/export", methods=["GET", "POST"])
@roles_required(STAT)
def export(code: str, kind: str) -> Any:
    study = _study(code)
    two_person = signers_needed(study, live=kind == ListKind.LIVE.value) > 1
    form = TwoPersonSignForm() if two_person else SignForm()
    ctx = {"study": study, "kind": ListKind(kind), "two_person": two_person}
    if not form.validate_on_submit():
        return render_template("lists/export.html", form=form, **ctx)
    session = db.session()
    signatures = [Signature(current().username, form.password.data)]
    if isinstance(form, TwoPersonSignForm):
        signatures.append(Signature(form.second.data, form.second_password.data))
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 (sent, then closed)
    try:
        text = io.TextIOWrapper(spool, encoding="utf-8", newline="")
        export_list(
            session, study, kind=ListKind(kind), out=text, unblinded=True,
            actor=current_actor(), signatures=signatures,
        )  # fmt: skip
        text.flush()
        text.detach()
    except (RandomizerError, IntegrityFailure) as err:
        spool.close()
        refusal = err if isinstance(err, RandomizerError) else unreadable(err)
        return _refused(form, refusal, "password", "lists/export.html", **ctx)
    except BaseException:
        spool.close()
        raise
    # The audit event is committed before a single byte of the file leaves the server.
    db.session.commit()
    spool.seek(0)
    return send_file(
        spool,
        mimetype="text/csv",
        as_attachment=True,
        download_name=f"{study.code}-{kind}-list-unblinded.csv",
    )


@bp.route("/<code>/go-live", methods=["GET", "POST"])
@roles_required(STAT, Role.ADMIN)
def golive(code: str) -> Any:
    study = _study(code)

    def done(result: GoLiveResult) -> Any:
        flash(
            _(
                "%(study)s is live. Test data was archived: %(p)d participants, %(k)d kits.",
                study=study.code,
                p=result.participants_archived,
                k=result.kits_quarantined,
            ),
            "success",
        )
        return redirect(url_for(".index"))

    live = find_list(db.session(), study, ListKind.LIVE)
    return cosigned_page(study, GoLiveForm(), "lists/go_live.html", go_live, done, live=live)


def _kind_label(kind: ListKind) -> str:
    return str(_("dummy") if kind is ListKind.DUMMY else _("live"))
