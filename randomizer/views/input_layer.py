"""The one input layer of the web app: path converters, and a check of every query and form
value before any view runs (SPEC §4.2: a malformed value gets a 4xx, never a 500).

``int`` path arguments are ASCII digits within the column range (else the route does not
match: 404); every other path argument refuses control characters; query values and form
field names refuse control characters, and form values all but tab and line breaks. JSON
bodies are checked by the API's models (``api_shapes``), which refuse the same characters.
"""

from __future__ import annotations

from typing import Any, ClassVar

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
    #: How the OpenAPI document describes the argument (ids start at 1).
    openapi_schema: ClassVar[dict[str, Any]] = {"type": "integer", "minimum": 1, "maximum": MAX_INT}

    def __init__(self, map: Map, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max", MAX_INT)
        super().__init__(map, *args, **kwargs)


class TextConverter(BaseConverter):
    """``<name>``: one path segment without control characters, at most 255 characters."""

    regex = r"[^/\x00-\x1f\x7f]{1,255}"
    openapi_schema: ClassVar[dict[str, Any]] = {
        "type": "string", "minLength": 1, "maxLength": 255, "pattern": f"^{regex}$",
    }  # fmt: skip


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
            raise malformed(name)
    if request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        for name, value in request.form.items(multi=True):
            if has_control_character(name) or has_control_character(value, multiline=True):
                raise malformed(name)


def query_number(name: str, default: int, *, maximum: int = MAX_INT) -> int:
    """A whole-number query argument (ASCII digits, in range), or ``default`` when absent."""
    raw = request.args.get(name)
    if raw is None or raw.strip() == "":
        return default
    return whole_number(raw, field=name, maximum=maximum)


def malformed(name: str) -> MalformedInput:
    """The refusal of a value holding a control character, naming the field."""
    shown = name if not has_control_character(name) else repr(name)
    return MalformedInput(
        N_("%(name)s: contains a control character (such as NUL); remove it and send again."),
        field=shown,
        name=shown,
    )
