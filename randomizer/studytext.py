"""Study texts in the user's language and site time zones (SPEC §4.3, second wave).

Pure: no Flask, no database. A study file lists its ``languages`` (the first is the default)
and any text field may carry a translation per language as ``FIELD_LANG``
(``text_es = "..."``). The base field is the text for every listed language that has no
translation of its own; a user whose language the study does not list reads the default
language's translation, else the base field. ``[[sites]] timezone`` names an IANA zone in
which that site's times are shown; storage stays UTC.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import localedata

#: Text fields that take ``FIELD_LANG`` translations, per table kind, with their length limit.
TRANSLATABLE: dict[str, dict[str, int]] = {
    "[study]": {"title": 500},
    "[[arms]]": {"name": 200},
    "[[factors]]": {"name": 200},
    "[[sites]]": {"name": 200},
    "[[visits]]": {"name": 200},
    "[[eligibility]]": {"text": 1000, "unit": 32},
}
#: Array fields whose ``FIELD_LANG`` array labels each entry (a factor's levels stay the
#: codes in stratum keys; ``levels_es = ["Clase III", "Clase IV"]`` only labels them).
TRANSLATABLE_ARRAYS: dict[str, tuple[str, ...]] = {"[[factors]]": ("levels",)}
DEFAULT_TIMEZONE = "UTC"
_LANGUAGE_CODE = re.compile(r"[a-z]{2,3}")
_ZONE_NAME = re.compile(r"[A-Za-z0-9_+\-]+(/[A-Za-z0-9_+\-]+)*")


class _Reader(Protocol):
    """The part of studydef's table reader used here (it names file and field on error)."""

    data: dict[str, object]

    def error(self, key: str, reason: str) -> Exception: ...

    def check_text(self, key: str, value: object, limit: int) -> str: ...


@dataclass(frozen=True, slots=True)
class Translations:
    """The ``FIELD_LANG`` texts of one study item and the languages the study lists."""

    languages: tuple[str, ...] = ()
    #: (field, language, text) triples, in file order.
    texts: tuple[tuple[str, str, str], ...] = ()

    def pick(self, field: str, base: str, language: str) -> str:
        """The text of ``field`` in ``language``: its translation, else the default
        language's when the study does not list ``language``, else ``base``."""
        if self.languages and language not in self.languages:
            language = self.languages[0]
        for name, lang, text in self.texts:
            if name == field and lang == language:
                return text
        return base


NO_TRANSLATIONS = Translations()


class Translatable(Protocol):
    @property
    def translations(self) -> Translations: ...


def is_translation_key(key: str, kind: str) -> bool:
    """Whether ``key`` has the ``FIELD_SUFFIX`` shape of a translation in this table kind
    (the suffix is checked later, once the study's languages are known)."""
    field, _, suffix = key.rpartition("_")
    fields = (*TRANSLATABLE.get(kind, {}), *TRANSLATABLE_ARRAYS.get(kind, ()))
    return bool(suffix) and field in fields


def read_languages(table: _Reader) -> tuple[str, ...]:
    """``[study] languages``: distinct language codes Babel knows; () when absent."""
    if "languages" not in table.data:
        return ()
    raw = table.data["languages"]
    if not isinstance(raw, list) or not raw:
        raise table.error(
            "languages", f"must be a non-empty array of language codes ({_shown(raw)})"
        )
    languages: list[str] = []
    for i, value in enumerate(raw):
        key = f"languages[{i}]"
        if not isinstance(value, str) or not _is_language(value):
            reason = 'must be a lowercase ISO 639 language code such as "es" or "en"'
            raise table.error(key, f"{reason} (got {_shown(value)})")
        if value in languages:
            raise table.error(key, f"duplicate language {_shown(value)}")
        languages.append(value)
    return tuple(languages)


def read_translations(table: _Reader, kind: str, languages: tuple[str, ...]) -> Translations:
    """Every ``FIELD_LANG`` key of one table, checked against the study's languages."""
    limits = TRANSLATABLE.get(kind, {})
    texts: list[tuple[str, str, str]] = []
    for key, value in table.data.items():
        if key in limits or key in TRANSLATABLE_ARRAYS.get(kind, ()):
            continue
        if not is_translation_key(key, kind):
            continue
        field, _, language = key.rpartition("_")
        if not _is_language(language):
            reason = f"unknown language suffix {_shown(language)} (write {field}_es, {field}_en, …)"
            raise table.error(key, reason)
        if language not in languages:
            listed = ", ".join(languages) if languages else "none"
            reason = f"language {_shown(language)} is not in [study] languages (listed: {listed})"
            raise table.error(key, reason)
        if field in limits:
            texts.append((field, language, table.check_text(key, value, limits[field])))
        else:
            texts.extend(_entry_labels(table, key, field, language, value))
    return Translations(languages, tuple(texts)) if languages else NO_TRANSLATIONS


def _entry_labels(
    table: _Reader, key: str, field: str, language: str, value: object
) -> list[tuple[str, str, str]]:
    """``levels_es = [...]``: one label per entry of the base array, in its order."""
    base = table.data.get(field)
    if not isinstance(value, list) or not isinstance(base, list) or len(value) != len(base):
        count = len(base) if isinstance(base, list) else 0
        reason = f"must be an array of {count} labels, one per entry of {field} ({_shown(value)})"
        raise table.error(key, reason)
    labels = [table.check_text(f"{key}[{i}]", label, 200) for i, label in enumerate(value)]
    pairs = zip(base, labels, strict=True)
    return [(f"{field}.{entry}", language, label) for entry, label in pairs]


def read_timezone(table: _Reader) -> str:
    """``[[sites]] timezone``: an IANA zone name that zoneinfo knows; UTC when absent."""
    value = table.data.get("timezone", DEFAULT_TIMEZONE)
    if not isinstance(value, str) or not _ZONE_NAME.fullmatch(value):
        reason = 'must be an IANA time zone name such as "America/Santiago"'
        raise table.error("timezone", f"{reason} (got {_shown(value)})")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        reason = f"unknown time zone {_shown(value)} (an IANA name such as America/Santiago)"
        raise table.error("timezone", reason) from None
    return value


def zone(name: str) -> dt.tzinfo:
    """The tzinfo of a zone name already checked by ``read_timezone``."""
    return dt.UTC if name == DEFAULT_TIMEZONE else ZoneInfo(name)


def local_date(moment: dt.datetime, zone_name: str) -> dt.date:
    """The calendar day ``moment`` falls on in the zone (a site's day, not UTC's)."""
    return moment.astimezone(zone(zone_name)).date()


def _is_language(code: str) -> bool:
    return bool(_LANGUAGE_CODE.fullmatch(code)) and localedata.exists(code)


def _shown(value: object) -> str:
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)[:60]
    return "an array" if isinstance(value, list) else f"a {type(value).__name__}"


def localized(item: Translatable, field: str, language: str) -> str:
    """The text of ``item.field`` in ``language`` (see ``Translations.pick``); a field
    ``levels.IV`` is the label of that level."""
    _array, dot, entry = field.partition(".")
    if dot:  # "levels.IV": the label of one entry, the entry itself by default
        return item.translations.pick(field, entry, language)
    base = getattr(item, field)
    if base is None:  # an optional text the file leaves out (a criterion's unit)
        return ""
    if not isinstance(base, str):
        raise TypeError(f"{type(item).__name__}.{field} is not a text field")
    return item.translations.pick(field, base, language)


def site_zone(sites: Sequence[SiteZone], site_code: str | None = None) -> str:
    """The zone a time is shown in: the site's, else (a study-wide time, or a site that is
    no longer defined) the study's first site's."""
    for site in sites:
        if site.code == site_code:
            return site.timezone
    return sites[0].timezone if sites else DEFAULT_TIMEZONE


class SiteZone(Protocol):
    @property
    def code(self) -> str: ...

    @property
    def timezone(self) -> str: ...
