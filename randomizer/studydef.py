"""Study definitions (SPEC §4.3): parse and check the TOML file, list strata, judge eligibility.

Pure: no Flask, no database. ``parse_study`` refuses a bad file with the file, the field path
(``arms[1].ratio``, 0-based indexes) and the reason; a parsed ``StudyDefinition`` then answers
the questions the services ask of it: which stratum a participant falls in, and which
eligibility criteria an answer sheet fails.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import json
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from randomizer import studydef_minimization as minimization
from randomizer import studytext
from randomizer.studydef_minimization import Method, MinimizationDef
from randomizer.studytext import NO_TRANSLATIONS, Translations
from randomizer.wording import N_, Text

Kind = Literal["inclusion", "exclusion"]
AnswerType = Literal["boolean", "number"]

#: Codes appear in URLs, CSV files and stratum keys, so they are short and plain.
CODE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
DEFAULT_UNBLINDING_REASONS = (
    "adverse_event",
    "medical_emergency",
    "overdose",
    "pregnancy",
    "other",
)
DEMO_STUDY_FILE = "NCT03917797.toml"
#: Longest stratum key the database stores (``String(200)``).
MAX_STRATUM_KEY = 200
#: Most strata a study may have (sites crossed with factor levels).
MAX_STRATA = 10_000

# Sanity bounds: a typo such as ``per_stratum = 40000000`` is refused here, not at generation.
_MAX_RATIO = 100
_MAX_BLOCK = 1_000
_MAX_PER_STRATUM = 100_000
_MAX_STOCK = 100_000
_MAX_ENROLMENT = 10_000_000
_MAX_DAY = 36_500
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")  # a sanity check; delivery is the real test

_KINDS: dict[str, Kind] = {"inclusion": "inclusion", "exclusion": "exclusion"}
_TYPES: dict[str, AnswerType] = {"boolean": "boolean", "number": "number"}

# The keys each table accepts; anything else is refused by name, which catches typos.
_TABLE_KEYS: dict[str, tuple[str, ...]] = {
    "": ("study", "arms", "randomization", "factors", "sites", "visits", "eligibility"),
    "[study]": (
        "code",
        "title",
        "registry_id",
        "sponsor_contacts",
        "unblinding_reasons",
        "assessors_see_unblinding",
        "languages",
    ),
    "[[study.sponsor_contacts]]": ("name", "email"),
    "[[arms]]": ("code", "name", "ratio"),
    "[randomization]": (
        "block_sizes",
        "per_stratum",
        "stratify_by_site",
        "expected_enrolment",
        "bulk_export_signers",
        "method",
        "minimization",
    ),
    "[randomization.minimization]": minimization.KEYS,
    "[[factors]]": ("code", "name", "levels"),
    "[[sites]]": ("code", "name", "trigger_level", "resupply_level", "timezone"),
    "[[visits]]": ("code", "name", "day", "window_days", "dispense"),
    "[[eligibility]]": ("code", "text", "kind", "type", "min", "max", "unit"),
}


def _key_homes() -> dict[str, str]:
    """Keys that belong to exactly one table, for the hint when one is written elsewhere."""
    homes: dict[str, list[str]] = {}
    for table, keys in _TABLE_KEYS.items():
        for key in keys:
            homes.setdefault(key, []).append(table or "the top level")
    return {key: tables[0] for key, tables in homes.items() if len(tables) == 1}


_KEY_HOMES = _key_homes()


class StudyDefinitionError(ValueError):
    """A study definition file is refused: which file, which field, why."""

    def __init__(self, filename: str, field: str, reason: str) -> None:
        super().__init__(filename, field, reason)
        self.filename, self.field, self.reason = filename, field, reason

    def __str__(self) -> str:
        return f"{self.filename}: {self.field}: {self.reason}"


class InvalidAnswer(ValueError):
    """A site, factor level or eligibility answer that the study definition does not allow."""

    def __init__(self, field: str, reason: str, **params: object) -> None:
        super().__init__(field, reason)
        #: ``reason`` is an ``N_``-marked msgid filled from ``params`` (shown translated).
        self.field, self.reason = field, Text(reason, params)

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}"


@dataclass(frozen=True, slots=True)
class ArmDef:
    code: str
    name: str
    ratio: int
    translations: Translations = NO_TRANSLATIONS


@dataclass(frozen=True, slots=True)
class FactorDef:
    code: str
    name: str
    levels: tuple[str, ...]
    translations: Translations = NO_TRANSLATIONS


@dataclass(frozen=True, slots=True)
class SiteDef:
    code: str
    name: str
    trigger_level: int = 2
    resupply_level: int = 6
    #: IANA name of the zone the site's times are shown in (stored times stay UTC).
    timezone: str = studytext.DEFAULT_TIMEZONE
    translations: Translations = NO_TRANSLATIONS


@dataclass(frozen=True, slots=True)
class VisitDef:
    code: str
    day: int
    window_days: int = 0
    dispense: bool = False
    #: Shown instead of the code; the code when the file gives none.
    name: str = ""
    translations: Translations = NO_TRANSLATIONS


@dataclass(frozen=True, slots=True)
class CriterionDef:
    code: str
    text: str
    kind: Kind
    type: AnswerType
    min: float | None = None
    max: float | None = None
    unit: str | None = None
    translations: Translations = NO_TRANSLATIONS

    def disqualifies(self, answer: object) -> bool:
        """Whether this answer fails the criterion; InvalidAnswer when it has the wrong type."""
        field = f"eligibility.{self.code}"
        if self.type == "boolean":
            if not isinstance(answer, bool):
                raise InvalidAnswer(
                    field, N_("must be true or false (got %(got)s)"), got=_show(answer)
                )
            met = answer
        else:
            if (
                isinstance(answer, bool)
                or not isinstance(answer, int | float)
                or (isinstance(answer, float) and not math.isfinite(answer))
            ):
                raise InvalidAnswer(
                    field, N_("must be a finite number (got %(got)s)"), got=_show(answer)
                )
            met = (self.min is None or answer >= self.min) and (
                self.max is None or answer <= self.max
            )
        return met if self.kind == "exclusion" else not met


@dataclass(frozen=True, slots=True)
class ContactDef:
    name: str
    email: str


@dataclass(frozen=True, slots=True)
class StudyDefinition:
    code: str
    title: str
    registry_id: str
    arms: tuple[ArmDef, ...]
    block_sizes: tuple[int, ...]
    per_stratum: int
    stratify_by_site: bool
    factors: tuple[FactorDef, ...]
    sites: tuple[SiteDef, ...]
    visits: tuple[VisitDef, ...]
    eligibility: tuple[CriterionDef, ...]
    sponsor_contacts: tuple[ContactDef, ...] = ()
    unblinding_reasons: tuple[str, ...] = DEFAULT_UNBLINDING_REASONS
    assessors_see_unblinding: bool = False
    #: Participants the study expects to enrol in all (for the predictability warning).
    expected_enrolment: int | None = None
    #: Unblinded people who must sign an unblinded export of the live list or kit list.
    bulk_export_signers: int = 1
    #: ``permuted-blocks`` (a list made in advance) or ``minimization`` (SPEC §4.4).
    method: Method = "permuted-blocks"
    #: The Pocock–Simon parameters when ``method`` is ``minimization``.
    minimization: MinimizationDef | None = None
    #: Languages of the study texts, the default first; () when the file lists none.
    languages: tuple[str, ...] = ()
    translations: Translations = NO_TRANSLATIONS

    def arm(self, code: str) -> ArmDef:
        """The arm with this code; KeyError when there is none."""
        return _find(self.arms, code, "arm")

    def site(self, code: str) -> SiteDef:
        """The site with this code; KeyError when there is none."""
        return _find(self.sites, code, "site")

    def visit(self, code: str) -> VisitDef:
        """The visit with this code; KeyError when there is none."""
        return _find(self.visits, code, "visit")

    def factor(self, code: str) -> FactorDef:
        """The stratification factor with this code; KeyError when there is none."""
        return _find(self.factors, code, "factor")

    def criterion(self, code: str) -> CriterionDef:
        """The eligibility criterion with this code; KeyError when there is none."""
        return _find(self.eligibility, code, "criterion")

    @property
    def ratio_sum(self) -> int:
        """Sum of the arm ratios: the smallest block that holds every arm in ratio."""
        return sum(arm.ratio for arm in self.arms)

    def strata(self) -> list[str]:
        """Every stratum key: sites (when stratified) crossed with factor levels, file order."""
        axes = [[site.code for site in self.sites]] if self.stratify_by_site else []
        axes += [[f"{f.code}={level}" for level in f.levels] for f in self.factors]
        return ["|".join(parts) or "all" for parts in itertools.product(*axes)]

    def stratum_key(self, site: str, factors: Mapping[str, str]) -> str:
        """The stratum key of a participant, e.g. ``CUA|isn_class=IV``; InvalidAnswer if off."""
        if not any(site == s.code for s in self.sites):
            raise InvalidAnswer("site", N_("unknown site %(site)s"), site=_show(site))
        known = {f.code for f in self.factors}
        for code in factors:
            if code not in known:
                raise InvalidAnswer(f"factors.{code}", N_("unknown stratification factor"))
        parts = [site] if self.stratify_by_site else []
        for factor in self.factors:
            field = f"factors.{factor.code}"
            if factor.code not in factors:
                raise InvalidAnswer(field, N_("is required"))
            level = factors[factor.code]
            if level not in factor.levels:
                choices = ", ".join(factor.levels)
                raise InvalidAnswer(
                    field,
                    N_("must be one of %(choices)s (got %(got)s)"),
                    choices=choices,
                    got=_show(level),
                )
            parts.append(f"{factor.code}={level}")
        return "|".join(parts) or "all"

    def evaluate_eligibility(self, answers: Mapping[str, object]) -> list[str]:
        """Codes of the failed criteria, in file order; InvalidAnswer for a bad answer sheet."""
        known = {c.code for c in self.eligibility}
        for code in answers:
            if code not in known:
                raise InvalidAnswer(f"eligibility.{code}", N_("unknown criterion"))
        failed = []
        for criterion in self.eligibility:
            if criterion.code not in answers:
                raise InvalidAnswer(f"eligibility.{criterion.code}", N_("an answer is required"))
            if criterion.disqualifies(answers[criterion.code]):
                failed.append(criterion.code)
        return failed


class _Coded(Protocol):
    @property
    def code(self) -> str: ...


_C = TypeVar("_C", bound=_Coded)
_D = TypeVar("_D", ArmDef, FactorDef, SiteDef, VisitDef, CriterionDef)
_T = TypeVar("_T")


def _find(items: Sequence[_C], code: str, what: str) -> _C:
    for item in items:
        if item.code == code:
            return item
    raise KeyError(f"no {what} {code!r}")


def load_study_file(path: str | os.PathLike[str]) -> tuple[StudyDefinition, str]:
    """Read, parse and check a study file; return the definition and the text as read."""
    filename = os.fspath(path)
    try:
        raw = Path(filename).read_bytes()
    except OSError as exc:
        raise StudyDefinitionError(filename, "(file)", exc.strerror or str(exc)) from None
    try:
        text = raw.decode("utf-8-sig")  # editors on Windows like to add a BOM
    except UnicodeDecodeError as exc:
        reason = f"not UTF-8 text ({exc.reason} at byte {exc.start})"
        raise StudyDefinitionError(filename, "(encoding)", reason) from None
    return parse_study(text, filename), text


def load_demo_study() -> tuple[StudyDefinition, str]:
    """The NCT03917797 demo study shipped in ``randomizer/studies``, with its text."""
    text = resources.files("randomizer").joinpath("studies", DEMO_STUDY_FILE).read_text("utf-8")
    return parse_study(text, DEMO_STUDY_FILE), text


def parse_study(text: str, filename: str = "<study>") -> StudyDefinition:
    """Parse and check a study definition; StudyDefinitionError names the first problem."""
    try:
        data = tomllib.loads(text)
    except RecursionError:
        raise StudyDefinitionError(filename, "(syntax)", "nested too deeply") from None
    except tomllib.TOMLDecodeError as exc:
        raise StudyDefinitionError(filename, "(syntax)", str(exc)) from None
    except ValueError:  # Python's limit on the digits of an integer literal
        raise StudyDefinitionError(filename, "(syntax)", "an integer has too many digits") from None
    root = _Table(filename, "", data, "")
    study = root.table("study", "[study]")
    code = study.code("code")
    title = study.text("title", limit=500)
    languages = studytext.read_languages(study)
    texts = _TextReader(languages)
    registry_id = study.text("registry_id", limit=64)
    contacts = tuple(_contact(t) for t in study.tables("sponsor_contacts"))
    reasons = _unblinding_reasons(study)
    assessors_see_unblinding = study.flag("assessors_see_unblinding", default=False)
    arms = _coded_items(root, "arms", texts(_arm), minimum=2)
    randomization = root.table("randomization", "[randomization]")
    method = minimization.read_method(randomization)
    block_sizes = _block_sizes(randomization, sum(arm.ratio for arm in arms), method)
    per_stratum = randomization.integer("per_stratum", 1, _MAX_PER_STRATUM)
    stratify_by_site = randomization.flag("stratify_by_site")
    expected = None
    if "expected_enrolment" in randomization.data:
        expected = randomization.integer("expected_enrolment", 1, _MAX_ENROLMENT)
    signers = randomization.integer("bulk_export_signers", 1, 2, default=1)
    factors = _coded_items(root, "factors", texts(_factor))
    sites = _coded_items(root, "sites", texts(lambda t: _site(t, block_sizes)), minimum=1)
    minimizing = minimization.parse_minimization(
        randomization, method=method, arms=[(a.code, a.ratio) for a in arms],
        factors=[(f.code, f.levels) for f in factors], sites=tuple(s.code for s in sites),
        stratify_by_site=stratify_by_site,
    )  # fmt: skip
    visits = _coded_items(root, "visits", texts(_visit), minimum=1)
    if not any(visit.dispense for visit in visits):
        raise root.error("visits", "at least one visit must have dispense = true")
    definition = StudyDefinition(
        code=code,
        title=title,
        registry_id=registry_id,
        arms=arms,
        block_sizes=block_sizes,
        per_stratum=per_stratum,
        stratify_by_site=stratify_by_site,
        factors=factors,
        sites=sites,
        visits=visits,
        eligibility=_coded_items(root, "eligibility", texts(_criterion)),
        sponsor_contacts=contacts,
        unblinding_reasons=reasons,
        assessors_see_unblinding=assessors_see_unblinding,
        expected_enrolment=expected,
        bulk_export_signers=signers,
        method=method,
        minimization=minimizing,
        languages=languages,
        translations=studytext.read_translations(study, "[study]", languages),
    )
    _check_strata(root, definition)
    return definition


def _check_strata(root: _Table, definition: StudyDefinition) -> None:
    """Refuse a stratification that the list and the database could not hold."""
    count = math.prod(len(f.levels) for f in definition.factors)
    count *= len(definition.sites) if definition.stratify_by_site else 1
    if count > MAX_STRATA:
        raise root.error("factors", f"must give at most {MAX_STRATA} strata (got {count})")
    longest = max(definition.strata(), key=len)
    if len(longest) > MAX_STRATUM_KEY:
        reason = f"stratum keys must be at most {MAX_STRATUM_KEY} characters (got {longest!r})"
        raise root.error("factors", reason)


class _Table:
    """One TOML table being read: typed getters that name the file and field on error."""

    def __init__(self, filename: str, path: str, data: dict[str, Any], kind: str) -> None:
        self.filename, self.path, self.data, self.kind = filename, path, data, kind
        allowed = _TABLE_KEYS[kind]
        for key in data:
            if key not in allowed and not studytext.is_translation_key(key, kind):
                raise self.error(key, _unknown_key(key, kind, allowed))

    def field(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def error(self, key: str, reason: str) -> StudyDefinitionError:
        return StudyDefinitionError(self.filename, self.field(key), reason)

    def value(self, key: str) -> object:
        if key not in self.data:
            raise self.error(key, "is required")
        return self.data[key]

    def table(self, key: str, kind: str) -> _Table:
        if key not in self.data:
            raise self.error(key, f"is required (add a {kind} table)")
        if not isinstance(self.data[key], dict):
            raise self.error(key, f"must be a table ({kind})")
        return _Table(self.filename, self.field(key), self.data[key], kind)

    def tables(self, key: str, minimum: int = 0) -> list[_Table]:
        kind = f"[[{self.field(key)}]]"
        if key not in self.data and minimum:
            raise self.error(key, f"is required (add {kind} tables)")
        raw = self.data.get(key, [])
        if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
            raise self.error(key, f"must be an array of tables ({kind})")
        if len(raw) < minimum:
            reason = f"needs at least {minimum} {kind} table{'s' * (minimum > 1)}"
            raise self.error(key, f"{reason} (got {len(raw)})")
        path = self.field(key)
        return [_Table(self.filename, f"{path}[{i}]", t, kind) for i, t in enumerate(raw)]

    def text(self, key: str, *, limit: int = 200) -> str:
        return self.check_text(key, self.value(key), limit)

    def check_text(self, key: str, value: object, limit: int) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.error(key, f"must be a non-empty string (got {_show(value)})")
        if len(value) > limit:
            raise self.error(key, f"must be at most {limit} characters (got {len(value)})")
        return value

    def code(self, key: str) -> str:
        return self.check_code(key, self.value(key))

    def check_code(self, key: str, value: object) -> str:
        if not isinstance(value, str) or not CODE_PATTERN.fullmatch(value):
            reason = 'must be 1 to 32 letters, digits, "_", "." or "-", starting with a letter'
            raise self.error(key, f"{reason} or digit (got {_show(value)})")
        return value

    def integer(self, key: str, low: int, high: int, default: int | None = None) -> int:
        value = self.data.get(key, default) if default is not None else self.value(key)
        return self.check_int(key, value, low, high)

    def check_int(self, key: str, value: object, low: int, high: int) -> int:
        what = {0: "a non-negative integer", 1: "a positive integer"}.get(low, f"≥ {low}")
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise self.error(key, f"must be {what} (got {_show(value)})")
        if value > high:
            raise self.error(key, f"must be at most {high} (got {value})")
        return value

    def flag(self, key: str, default: bool | None = None) -> bool:
        value = self.data.get(key, default) if default is not None else self.value(key)
        if not isinstance(value, bool):
            raise self.error(key, f"must be true or false (got {_show(value)})")
        return value

    def number(self, key: str) -> float | None:
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(key, f"must be a number (got {_show(value)})")
        if not math.isfinite(value):
            raise self.error(key, f"must be a finite number (got {_show(value)})")
        return value

    def choice(self, key: str, options: Mapping[str, _T]) -> _T:
        value = self.value(key)
        if not isinstance(value, str) or value not in options:
            allowed = " or ".join(json.dumps(option) for option in options)
            raise self.error(key, f"must be {allowed} (got {_show(value)})")
        return options[value]

    def strings(self, key: str) -> list[str]:
        value = self.value(key)
        if not isinstance(value, list) or not value:
            raise self.error(key, f"must be a non-empty array of strings (got {_show(value)})")
        return [self.check_text(f"{key}[{i}]", item, 200) for i, item in enumerate(value)]


def _coded_items(
    root: _Table, key: str, build: Callable[[_Table], _C], minimum: int = 0
) -> tuple[_C, ...]:
    """Build each ``[[key]]`` table, refusing a code used twice (ignoring case)."""
    items: list[_C] = []
    seen: dict[str, str] = {}
    for table in root.tables(key, minimum):
        item = build(table)
        first = seen.setdefault(item.code.casefold(), table.field("code"))
        if first != table.field("code"):
            raise table.error("code", f"duplicate code {_show(item.code)} (already at {first})")
        items.append(item)
    return tuple(items)


class _TextReader:
    """Wraps an item builder so the item also gets its table's ``FIELD_LANG`` texts."""

    def __init__(self, languages: tuple[str, ...]) -> None:
        self.languages = languages

    def __call__(self, build: Callable[[_Table], _D]) -> Callable[[_Table], _D]:
        def built(t: _Table) -> _D:
            item = build(t)
            found = studytext.read_translations(t, t.kind, self.languages)
            return dataclasses.replace(item, translations=found)

        return built


def _arm(t: _Table) -> ArmDef:
    return ArmDef(t.code("code"), t.text("name"), t.integer("ratio", 1, _MAX_RATIO))


def _block_sizes(t: _Table, ratio_sum: int, method: Method) -> tuple[int, ...]:
    if method == "minimization" and "block_sizes" not in t.data:
        # Under minimization block sizes only describe the permuted-block design that
        # `list simulate` compares against (and the default supply levels).
        return (ratio_sum, 2 * ratio_sum)
    raw = t.value("block_sizes")
    if not isinstance(raw, list) or not raw:
        reason = f"must be a non-empty array of integers (got {_show(raw)})"
        raise t.error("block_sizes", reason)
    sizes: list[int] = []
    for i, value in enumerate(raw):
        key = f"block_sizes[{i}]"
        size = t.check_int(key, value, 1, _MAX_BLOCK)
        if size % ratio_sum:
            raise t.error(key, f"must be a multiple of the ratio sum {ratio_sum} (got {size})")
        if size in sizes:
            raise t.error(key, f"duplicate block size {size}")
        sizes.append(size)
    return tuple(sizes)


def _factor(t: _Table) -> FactorDef:
    code, name, levels = t.code("code"), t.text("name"), t.strings("levels")
    for i, level in enumerate(levels):
        key = f"levels[{i}]"
        if level != level.strip() or any(c in level for c in "|=") or not level.isprintable():
            reason = 'must not contain "|", "=", control characters or outer spaces'
            raise t.error(key, f"{reason} (got {_show(level)})")
        if level in levels[:i]:
            raise t.error(key, f"duplicate level {_show(level)}")
    return FactorDef(code, name, tuple(levels))


def default_levels(block_sizes: tuple[int, ...]) -> tuple[int, int]:
    """(trigger, resupply) when a site gives none: ship while two kits of every ratio part
    are still guaranteed, and bring each arm a whole largest block above that."""
    return 2, 2 + max(block_sizes)


def _site(t: _Table, block_sizes: tuple[int, ...]) -> SiteDef:
    code, name = t.code("code"), t.text("name")
    trigger_default, resupply_default = default_levels(block_sizes)
    trigger = t.integer("trigger_level", 0, _MAX_STOCK, default=trigger_default)
    resupply = t.integer("resupply_level", 1, _MAX_STOCK, default=resupply_default)
    if trigger < 1:
        reason = (
            "must be at least 1: the levels count kits guaranteed whatever the participants' "
            "arms, and at 0 a site would stop allocating before any shipment is proposed "
            "(no safety margin)"
        )
        raise t.error("trigger_level", reason)
    if trigger >= resupply:
        reason = f"must be lower than resupply_level {resupply} (got {trigger})"
        raise t.error("trigger_level", reason)
    return SiteDef(code, name, trigger, resupply, studytext.read_timezone(t))


def _visit(t: _Table) -> VisitDef:
    code = t.code("code")
    return VisitDef(
        code,
        t.integer("day", 0, _MAX_DAY),
        t.integer("window_days", 0, _MAX_DAY, default=0),
        t.flag("dispense", default=False),
        t.text("name") if "name" in t.data else code,
    )


def _criterion(t: _Table) -> CriterionDef:
    code, text = t.code("code"), t.text("text", limit=1000)
    kind, answer_type = t.choice("kind", _KINDS), t.choice("type", _TYPES)
    low, high = t.number("min"), t.number("max")
    unit = t.text("unit", limit=32) if "unit" in t.data else None
    if answer_type == "boolean":
        for key in ("min", "max", "unit"):
            if key in t.data:
                raise t.error(key, 'only criteria of type "number" take min, max and unit')
    elif low is None and high is None:
        raise t.error("min", 'a "number" criterion needs min, max or both (one left out is open)')
    elif low is not None and high is not None and low > high:
        raise t.error("min", f"must not exceed max {_show(high)} (got {_show(low)})")
    return CriterionDef(code, text, kind, answer_type, low, high, unit)


def _contact(t: _Table) -> ContactDef:
    name, email = t.text("name"), t.text("email", limit=254)
    if not _EMAIL.fullmatch(email):
        raise t.error("email", f"must be an e-mail address (got {_show(email)})")
    return ContactDef(name, email)


def _unblinding_reasons(t: _Table) -> tuple[str, ...]:
    if "unblinding_reasons" not in t.data:
        return DEFAULT_UNBLINDING_REASONS
    reasons = t.strings("unblinding_reasons")
    for i, reason in enumerate(reasons):
        key = f"unblinding_reasons[{i}]"
        t.check_code(key, reason)
        if reason in reasons[:i]:
            raise t.error(key, f"duplicate reason {_show(reason)}")
    return tuple(reasons)


def _unknown_key(key: str, kind: str, allowed: Sequence[str]) -> str:
    home = _KEY_HOMES.get(key)
    if home:
        after = "; keys after a table header go into that table" if kind else ""
        return f"unknown key here (it belongs in {home}{after})"
    close = difflib.get_close_matches(key, allowed, n=1)
    if close:
        return f"unknown key (did you mean {json.dumps(close[0])}?)"
    return f"unknown key (expected one of: {', '.join(allowed)})"


def _show(value: object) -> str:
    """A short TOML-like rendering of a value for error messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and value.bit_length() > 64:
        return "a very large integer"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        shown = json.dumps(value, ensure_ascii=False)
        return shown if len(shown) <= 60 else shown[:56] + '..."'
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array" if value else "an empty array"
    return "null" if value is None else f"a {type(value).__name__}"
