"""The one input layer of the web app: path converters, and a check of every query and form
value before any view runs (SPEC §4.2: a malformed value gets a 4xx, never a 500).

``int`` path arguments are ASCII digits within the column range (else the route does not
match: 404); every other path argument refuses control characters; query values and form
field names refuse control characters, and form values all but tab and line breaks.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, request
from werkzeug.routing import BaseConverter, IntegerConverter, Map

from randomizer.errors import N_, MalformedInput
from randomizer.inputs import MAX_INT, has_control_character, whole_number

#: Query arguments the views fall back from when they are malformed (a bad ``next=`` after
#: sign-in leads to the start page rather than refusing the sign-in).
IGNORED_WHEN_MALFORMED = frozenset({"next"})


class WholeNumberConverter(IntegerConverter):
    """``<int:…>``: ASCII digits only (``\\d`` would take any script's), within the range of
    an Integer column; a larger number does not match the route (404)."""

    regex = r"[0-9]{1,10}"

    def __init__(self, map: Map, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max", MAX_INT)
        super().__init__(map, *args, **kwargs)


class TextConverter(BaseConverter):
    """``<name>``: one path segment without control characters, at most 255 characters."""

    regex = r"[^/\x00-\x1f\x7f]{1,255}"


def install(app: Flask) -> None:
    """Replace the default converters (before any route is added) and check every request."""
    app.url_map.converters.update(
        int=WholeNumberConverter, default=TextConverter, string=TextConverter
    )
    app.before_request(refuse_control_characters)


def refuse_control_characters() -> None:
    """Refuse a query or form value holding NUL or another control character (400)."""
    for name, value in request.args.items(multi=True):
        if name in IGNORED_WHEN_MALFORMED:
            continue
        if has_control_character(name) or has_control_character(value):
            raise _malformed(name)
    if request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        for name, value in request.form.items(multi=True):
            if has_control_character(name) or has_control_character(value, multiline=True):
                raise _malformed(name)


def refuse_control_characters_in(value: object, field: str = "body") -> None:
    """Refuse a JSON document with NUL or another control character in a name or a string
    (tab and line breaks are allowed in strings); the error names the field's path."""
    if isinstance(value, str) and has_control_character(value, multiline=True):
        raise _malformed(field)
    if isinstance(value, dict):
        for name, item in value.items():
            path = name if field == "body" else f"{field}.{name}"
            if has_control_character(name):
                raise _malformed(field)
            refuse_control_characters_in(item, path)
    if isinstance(value, list):
        for index, item in enumerate(value):
            refuse_control_characters_in(item, f"{field}[{index}]")


def query_number(name: str, default: int, *, maximum: int = MAX_INT) -> int:
    """A whole-number query argument (ASCII digits, in range), or ``default`` when absent."""
    raw = request.args.get(name)
    if raw is None or raw.strip() == "":
        return default
    return whole_number(raw, field=name, maximum=maximum)


def _malformed(name: str) -> MalformedInput:
    shown = name if not has_control_character(name) else repr(name)
    return MalformedInput(
        N_("%(name)s: contains a control character (such as NUL); remove it and send again."),
        field=shown,
        name=shown,
    )
