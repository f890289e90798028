"""Forms of the participant pages. Shape checks only; the services judge eligibility.

The screening form is built per study from its definition: one select per stratification
factor and one field per eligibility item (yes/no radios for booleans, a number input with
its range and unit for numbers). Every action form carries a one-time ``submission`` token
so that a second click on the same form has no second effect.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any, ClassVar

from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import (
    Field,
    HiddenField,
    PasswordField,
    RadioField,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, InputRequired, Length, Optional

from randomizer.forms import LocaleDecimalField, format_number
from randomizer.services.enrollment import MAX_REASON, MAX_SCREENING_NUMBER
from randomizer.studydef import CriterionDef, StudyDefinition
from randomizer.views.study_text import study_text

YES, NO = "yes", "no"
FACTOR_PREFIX = "factor-"
CRITERION_PREFIX = "criterion-"


def new_submission() -> str:
    """A fresh one-time token for a form."""
    return uuid.uuid4().hex


class SignedForm(FlaskForm):
    """Base of the action forms: a one-time submission token."""

    submission = HiddenField(validators=[DataRequired(), Length(max=64)])

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.submission.data:
            self.submission.data = new_submission()


class RandomizeForm(SignedForm):
    password = PasswordField(
        _l("Your password (electronic signature)"),
        validators=[DataRequired(message=_l("Enter your password to sign.")), Length(max=256)],
    )


class DispenseForm(SignedForm):
    visit = SelectField(_l("Visit"), validators=[InputRequired()])
    override_reason = TextAreaField(
        _l("Reason for dispensing outside the visit window"),
        validators=[Optional(), Length(max=MAX_REASON)],
    )
    password = PasswordField(
        _l("Your password (electronic signature)"),
        validators=[DataRequired(message=_l("Enter your password to sign.")), Length(max=256)],
    )


class StatusForm(SignedForm):
    reason = TextAreaField(
        _l("Reason"),
        validators=[DataRequired(message=_l("Give the reason.")), Length(max=MAX_REASON)],
    )


class ReplaceKitForm(SignedForm):
    kit_code = SelectField(_l("Kit to replace"), validators=[InputRequired()])
    what = RadioField(
        _l("What happened to the kit"),
        choices=[SelectChoice("damaged", _l("Damaged")), SelectChoice("lost", _l("Lost"))],
        validators=[InputRequired(message=_l("Choose damaged or lost."))],
    )
    reason = TextAreaField(
        _l("Reason"),
        validators=[DataRequired(message=_l("Give the reason.")), Length(max=MAX_REASON)],
    )


class ScreeningBase(SignedForm):
    site = SelectField(_l("Site"), validators=[InputRequired(message=_l("Choose the site."))])
    screening_number = StringField(
        _l("Screening number"),
        validators=[
            DataRequired(message=_l("Enter the screening number.")),
            Length(max=MAX_SCREENING_NUMBER),
        ],
    )

    def factor_fields(self) -> list[Field]:
        return [f for f in self if f.name.startswith(FACTOR_PREFIX)]

    #: Criterion field name → "inclusion" or "exclusion" (set per study by screening_form).
    criterion_kinds: ClassVar[dict[str, str]] = {}

    def criterion_fields(self) -> list[Field]:
        return [f for f in self if f.name.startswith(CRITERION_PREFIX)]

    def criterion_groups(self) -> list[tuple[str, list[Field]]]:
        """The criterion fields in runs of the same kind, in the definition's order."""
        groups: list[tuple[str, list[Field]]] = []
        for f in self.criterion_fields():
            kind = self.criterion_kinds.get(f.name, "inclusion")
            if not groups or groups[-1][0] != kind:
                groups.append((kind, []))
            groups[-1][1].append(f)
        return groups

    def factors(self) -> dict[str, str]:
        return {f.name.removeprefix(FACTOR_PREFIX): f.data for f in self.factor_fields()}

    def answers(self) -> dict[str, object]:
        out: dict[str, object] = {}
        for f in self.criterion_fields():
            value = f.data
            if isinstance(f, RadioField):
                value = value == YES
            elif isinstance(value, Decimal):
                value = int(value) if value == value.to_integral_value() else float(value)
            out[f.name.removeprefix(CRITERION_PREFIX)] = value
        return out

    def field_for(self, path: str | None) -> Field | None:
        """The form field of a service error's field path (``factors.grade`` and so on)."""
        if not path:
            return None
        head, _sep, code = path.partition(".")
        name = {"factors": FACTOR_PREFIX + code, "eligibility": CRITERION_PREFIX + code}.get(
            head, path
        )
        return self._fields.get(name)


class CorrectionMixin:
    reason = TextAreaField(
        _l("Reason for the correction"),
        validators=[DataRequired(message=_l("Give the reason.")), Length(max=MAX_REASON)],
    )


def screening_form(
    definition: StudyDefinition,
    sites: list[tuple[str, str]],
    *,
    correction: bool = False,
    data: dict[str, Any] | None = None,
) -> ScreeningBase:
    """The screening (or correction) form of this study, for these (code, label) sites."""
    bases = (ScreeningBase, CorrectionMixin) if correction else (ScreeningBase,)
    kinds = {CRITERION_PREFIX + c.code: c.kind for c in definition.eligibility}
    form_class: type[ScreeningBase] = type("ScreeningForm", bases, {"criterion_kinds": kinds})
    for factor in definition.factors:
        labels = [SelectChoice(lv, study_text(factor, f"levels.{lv}")) for lv in factor.levels]
        choices = [SelectChoice("", _("— choose —")), *labels]
        name = study_text(factor)
        setattr(form_class, FACTOR_PREFIX + factor.code, SelectField(
            name, choices=choices,
            validators=[DataRequired(message=_("Choose the %(name)s.", name=name))],
        ))  # fmt: skip
    for criterion in definition.eligibility:
        setattr(form_class, CRITERION_PREFIX + criterion.code, _criterion_field(criterion))
    form = form_class(data=data)
    site_choices = [SelectChoice(code, label) for code, label in sites]
    if len(sites) > 1:
        site_choices.insert(0, SelectChoice("", _("— choose —")))
    form.site.choices = site_choices
    return form


def _criterion_field(criterion: CriterionDef) -> Field:
    kind = _("Inclusion") if criterion.kind == "inclusion" else _("Exclusion")
    label = f"{study_text(criterion)} ({kind})"
    if criterion.type == "boolean":
        return RadioField(
            label, choices=[SelectChoice(YES, _("Yes")), SelectChoice(NO, _("No"))],
            validators=[InputRequired(message=_("Answer yes or no."))],
        )  # fmt: skip
    named = study_text(criterion)  # refusals name the criterion as the page shows it
    return LocaleDecimalField(
        label,
        validators=[InputRequired(message=_("%(field)s: enter a number.", field=named))],
        description=number_hint(criterion),
        named=named,
    )


def number_hint(criterion: CriterionDef) -> str:
    """Which numbers meet the inclusion (or trigger the exclusion), in words."""
    unit = f" {study_text(criterion, 'unit')}" if criterion.unit else ""
    low, high = criterion.min, criterion.max
    # A bound stored just past a round number ("below 40" as 39.99…) reads "below 40".
    lo, hi = (format_number(float(f"{b:g}")) if b is not None else "" for b in (low, high))
    if low is not None and high is not None:
        values = _("from %(low)s to %(high)s%(unit)s", low=lo, high=hi, unit=unit)
    elif low is not None and float(f"{low:g}") < low:
        values = _("above %(low)s%(unit)s", low=lo, unit=unit)
    elif low is not None:
        values = _("%(low)s or more%(unit)s", low=lo, unit=unit)
    elif high is not None and float(f"{high:g}") > high:
        values = _("below %(high)s%(unit)s", high=hi, unit=unit)
    else:
        values = _("%(high)s or less%(unit)s", high=hi or "0", unit=unit)
    if criterion.kind == "inclusion":
        return str(_("Included when the value is %(values)s.", values=values))
    return str(_("Excluded when the value is %(values)s.", values=values))


def screening_data(
    site: str, number: str, factors: dict[str, str], answers: dict[str, Any]
) -> dict[str, Any]:
    """Form data that pre-fills the correction form from a participant's screening."""
    data: dict[str, Any] = {"site": site, "screening_number": number}
    data.update({FACTOR_PREFIX + code: level for code, level in factors.items()})
    for code, value in answers.items():
        data[CRITERION_PREFIX + code] = (YES if value else NO) if isinstance(value, bool) else value
    return data
