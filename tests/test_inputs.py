"""The pure checks of the input layer: whole numbers and control characters."""

from __future__ import annotations

import pytest

from randomizer.errors import InvalidInput
from randomizer.inputs import MAX_INT, has_control_character, whole_number


@pytest.mark.parametrize(("raw", "value"), [("0", 0), (" 42 ", 42), (str(MAX_INT), MAX_INT)])
def test_whole_numbers_accepted(raw, value):
    assert whole_number(raw, field="n") == value


@pytest.mark.parametrize(
    "raw", ["", "-1", "1.5", "1e3", "²", "١٢", "１", str(MAX_INT + 1), "9" * 30, "\x00"]
)
def test_whole_numbers_refused_name_the_field(raw):
    with pytest.raises(InvalidInput) as err:
        whole_number(raw, field="after")
    assert err.value.field == "after"


@pytest.mark.parametrize("text", ["\x00", "a\x00b", "\x1b[31m", "\x7f", "a\r\nb"])
def test_control_characters_are_found(text):
    assert has_control_character(text)


def test_line_breaks_and_tabs_are_allowed_in_multiline_text():
    assert not has_control_character("first line\r\nsecond\tline", multiline=True)
    assert has_control_character("first\x00line", multiline=True)
