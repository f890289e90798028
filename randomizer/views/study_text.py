"""The two Jinja filters through which every page shows study content and times.

``study_text`` shows a study item (title, arm, factor, site, visit, criterion) in the
user's language; ``local_time`` shows a stored UTC time in the zone of the site it belongs
to, named (``services/zones.py`` decides which zone). No template formats either itself.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from babel.dates import format_datetime
from flask import Flask, g
from flask_babel import get_locale
from sqlalchemy import select

from randomizer import studytext
from randomizer.db import db
from randomizer.models import Site, Study
from randomizer.services.studies import definition_of
from randomizer.services.zones import instance_zone, study_zone
from randomizer.studydef import StudyDefinition

#: The field shown when a template names none, in order of preference.
MAIN_FIELDS = ("title", "text", "name")


def language() -> str:
    """The language of the page being rendered."""
    return str(get_locale() or "es")


def study_text(item: Any, field: str | None = None) -> str:
    """A study item's text in the page's language: a definition item, a loaded study
    (its title) or site (its name); a code ``study_item`` did not find is shown as is."""
    if isinstance(item, str):
        return item
    if isinstance(item, Study):
        item = definition_of(item)
    elif isinstance(item, Site):
        item = definition_of(item.study).site(item.code)
    name = field or next(f for f in MAIN_FIELDS if hasattr(item, f))
    return studytext.localized(item, name, language())


#: What ``study_item`` finds, by kind.
ITEM_KINDS = ("arm", "factor", "site", "visit", "criterion")


def study_item(study: Study | StudyDefinition | str | None, kind: str, code: str = "") -> object:
    """The definition item (arm, factor, site, visit, criterion; ``"study"`` for the study
    itself) with this code, for ``study_text``; the code itself when there is none."""
    if isinstance(study, str):
        study = _study_by_code(study)
    if study is None or kind not in (*ITEM_KINDS, "study"):
        return code
    definition = definition_of(study) if isinstance(study, Study) else study
    if kind == "study":
        return definition
    try:
        found: object = getattr(definition, kind)(code)
    except KeyError:
        return code
    return found


def visit_name(study: Study | StudyDefinition, code: str) -> str:
    """A visit's name in the page's language (its code when the study no longer has it)."""
    return study_text(study_item(study, "visit", code))


def zone_name(study: Study | str | None = None, site: str | None = None) -> str:
    """The IANA name of the zone a study's (or site's) times are shown in."""
    if isinstance(study, str):
        study = _study_by_code(study)
    if study is None:
        cache: dict[str, str] = g.setdefault("zones", {})
        if "" not in cache:
            cache[""] = instance_zone(db.session())
        return cache[""]
    return study_zone(study, site)


def local_time(
    value: dt.datetime | str | None,
    study: Study | str | None = None,
    site: str | None = None,
    *,
    seconds: bool = False,
    zone: str | None = None,
) -> str:
    """A stored UTC time (or its ISO text) in the zone of ``site`` of ``study`` (the study's
    zone without a site; the instance's without a study; ``zone`` when given, e.g. UTC for
    the sentence pasted into the trial registry), with the zone named."""
    if value is None or value == "":
        return "—"
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    zone = zone or zone_name(study, site)
    pattern = "yyyy-MM-dd HH:mm:ss" if seconds else "yyyy-MM-dd HH:mm"
    if zone == studytext.DEFAULT_TIMEZONE:
        return format_datetime(value, pattern, tzinfo=dt.UTC, locale=language()) + " UTC"
    tz = studytext.zone(zone)
    return format_datetime(value, f"{pattern} zzzz ('UTC'xxx)", tzinfo=tz, locale=language())


def _study_by_code(code: str) -> Study | None:
    cache: dict[str, Study | None] = g.setdefault("studies_by_code", {})
    if code not in cache:
        cache[code] = db.session.scalar(select(Study).where(Study.code == code))
    return cache[code]


def install(app: Flask) -> None:
    """Register the filters and the helpers templates use."""
    app.add_template_filter(study_text, "study_text")
    app.add_template_filter(local_time, "local_time")
    app.add_template_global(study_item, "study_item")
    app.add_template_global(zone_name, "zone_name")
