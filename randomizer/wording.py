"""Wordings shown to people, kept as an English msgid and its values until they are shown.

No Flask here: services, the study-definition reader and the CLI build ``Text`` values;
pages translate them (``randomizer.errors.shown_message``), the CLI and logs print English.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass


def N_(msgid: str) -> str:
    """Mark a wording for extraction; it is translated where it is shown, not here."""
    return msgid


@dataclass(frozen=True)
class Text:
    """A wording with parameters, kept apart until it is shown.

    Services do not import Flask-Babel: they hand over the English msgid (marked with
    ``N_``) and its values; a page translates it in the reader's language, the CLI and the
    logs print the English. A value may itself be a ``Text`` (translated in turn) or a
    status enum (shown as its translated word); never an English sentence fragment.
    """

    msgid: str
    params: Mapping[str, object] = dataclasses.field(default_factory=dict)

    def __str__(self) -> str:
        return self.render(lambda words: words)

    def render(self, translate: Callable[[str], str]) -> str:
        """The wording through ``translate`` (a gettext), with its values filled in."""
        text = translate(self.msgid)
        if not self.params:
            return text
        values = {name: _value(value, translate) for name, value in self.params.items()}
        return text % values


def _value(value: object, translate: Callable[[str], str]) -> object:
    if isinstance(value, Text):
        return value.render(translate)
    quoted = getattr(value, "text", None)  # a refusal quoted inside another
    if isinstance(value, Exception) and isinstance(quoted, Text):
        return quoted.render(translate)
    if isinstance(value, list | tuple):
        return " / ".join(str(_value(v, translate)) for v in value)
    if isinstance(value, enum.Enum):
        return translate(str(value.value).replace("_", " "))
    return value
