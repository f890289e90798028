"""Checks every outside value passes before it reaches a query (pure; no Flask, no database).

Values come from paths, query strings, headers, forms and JSON bodies. Two kinds of bad
value used to reach the database and fail there: text with control characters (PostgreSQL
refuses NUL in text) and numbers beyond a column's range or written with non-ASCII digits
(``"²".isdigit()`` is true, ``int("²")`` fails).
"""

from __future__ import annotations

import re

from randomizer.errors import N_, InvalidInput

#: The range of an Integer column (32 bits on PostgreSQL): ids, sequence numbers, counts.
MAX_INT = 2**31 - 1
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_BUT_LINES = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def has_control_character(text: str, *, multiline: bool = False) -> bool:
    """True when the text holds NUL or another control character (tab and line breaks are
    allowed in ``multiline`` text, such as a typed reason)."""
    return bool((_CONTROL_BUT_LINES if multiline else _CONTROL).search(text))


def whole_number(raw: str, *, field: str, minimum: int = 0, maximum: int = MAX_INT) -> int:
    """ASCII digits naming a number in [minimum, maximum], else InvalidInput naming the field."""
    text = raw.strip()
    if text.isascii() and text.isdigit() and len(text) <= len(str(maximum)):
        value = int(text)
        if minimum <= value <= maximum:
            return value
    raise InvalidInput(
        N_("%(name)s: must be a whole number from %(minimum)s to %(maximum)s, in digits 0-9."),
        field=field,
        name=field,
        minimum=minimum,
        maximum=maximum,
    )
