"""Predictability of a stored list (SPEC §4.4), for the statistician only.

The figures depend on the arms (they are computed from the list actually drawn), so only
unblinded screens show them. They name no slot and no arm, and reading them changes
nothing, so they are not an audited disclosure.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from sqlalchemy.orm import Session

from randomizer import predictability
from randomizer.crypto import IntegrityFailure
from randomizer.models import ListKind, Study
from randomizer.predictability import Figures
from randomizer.services.list_contents import blocks_by_stratum
from randomizer.services.lists import get_list, recorded_arms
from randomizer.services.studies import definition_of


@dataclass(frozen=True)
class StratumPredictability:
    stratum: str
    figures: Figures
    #: Participants the stratum may expect (the study's expected enrolment shared evenly).
    expected: Fraction | None
    small: bool


@dataclass(frozen=True)
class ListPredictability:
    strata: list[StratumPredictability]
    total: Figures
    block_sizes: list[int]
    expected_enrolment: int | None

    @property
    def line(self) -> str:
        """The contract line for the whole list."""
        return predictability.summary_line(self.total)

    @property
    def small_strata(self) -> list[StratumPredictability]:
        return [s for s in self.strata if s.small]


def assess_list(session: Session, study: Study, kind: ListKind) -> ListPredictability:
    """Exact predictability figures of the list, per stratum and in total."""
    row = get_list(session, study, kind)
    ratios = {arm.code: arm.ratio for arm in recorded_arms(row)}
    sizes = sorted(int(size) for size in row.params["block_sizes"])
    enrolment = definition_of(study).expected_enrolment
    strata = row.params["strata"]
    expected = Fraction(enrolment, len(strata)) if enrolment is not None and strata else None
    try:
        per_stratum = [
            StratumPredictability(
                stratum,
                predictability.assess(blocks, ratios),
                expected,
                expected is not None and predictability.small_stratum(expected, sizes),
            )
            for stratum, blocks in blocks_by_stratum(session, study, row).items()
        ]
    except ValueError as exc:  # a stored block out of ratio: the list was altered
        raise IntegrityFailure(f"the {kind.value} list of study {study.code}: {exc}") from None
    total = sum((s.figures for s in per_stratum), Figures())
    return ListPredictability(per_stratum, total, sizes, enrolment)
