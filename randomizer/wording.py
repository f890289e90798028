"""Wordings shown to people, kept as an English msgid and its values until they are shown.

No Flask here: services, the study-definition reader and the CLI build ``Text`` values;
pages translate them (``randomizer.errors.shown_message``), the CLI and logs print English.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from babel import support


def N_(msgid: str) -> str:
    """Mark a wording for extraction; it is translated where it is shown, not here."""
    return msgid


#: A gettext: English msgid in, the reader's wording out.
Translate = Callable[[str], str]


def english(msgid: str) -> str:
    """The identity translation: the English wording (CLI, logs, API without a language)."""
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
        return self.render(english)

    def render(self, translate: Translate) -> str:
        """The wording through ``translate`` (a gettext), with its values filled in."""
        text = translate(self.msgid)
        if not self.params:
            return text
        values = {name: _value(value, translate) for name, value in self.params.items()}
        return text % values


def _value(value: object, translate: Translate) -> object:
    if isinstance(value, Text):
        return value.render(translate)
    quoted = getattr(value, "text", None)  # a refusal quoted inside another
    if isinstance(value, Exception) and isinstance(quoted, Text):
        return quoted.render(translate)
    if isinstance(value, list | tuple):
        return ", ".join(str(_value(v, translate)) for v in value)
    if isinstance(value, enum.Enum):
        return translate(str(value.value).replace("_", " "))
    return value


#: Where the compiled catalogues are (``make translations``); the app sets its own.
translation_directory = Path(__file__).parent / "translations"
#: The languages of a message whose reader's language is not known (e-mails), in order.
MAIL_LANGUAGES = ("es", "en")


@functools.cache
def _catalogue(directory: Path, locale: str) -> support.NullTranslations:
    return support.Translations.load(str(directory), [locale])


def translator(locale: str) -> Translate:
    """The gettext of ``locale`` from the compiled catalogues (English when there are none)."""
    if locale == "en":
        return english
    return _catalogue(translation_directory, locale).gettext


def in_every_language(text: Text) -> list[str]:
    """``text`` in each of MAIL_LANGUAGES, each wording once."""
    shown: list[str] = []
    for locale in MAIL_LANGUAGES:
        words = text.render(translator(locale))
        if words not in shown:
            shown.append(words)
    return shown
