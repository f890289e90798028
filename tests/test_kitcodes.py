"""Kit codes: format, alphabet, and detection of every single-character and transposition typo.

The typo tests are exhaustive over what decides detection: for every position, every
original character and every replacement (or every ordered pair of differing neighbours),
a valid code carrying them is built and the typo must be refused.
"""

from __future__ import annotations

import itertools
import re

import pytest

from randomizer import kitcodes
from randomizer.kitcodes import ALPHABET, BODY_LENGTH

RAW_LENGTH = BODY_LENGTH + 1


def _raw(code: str) -> str:
    return kitcodes.normalise(code)


def _format(raw: str) -> str:
    return f"{raw[:4]}-{raw[4:]}"


def _with(position_chars: dict[int, str]) -> str:
    """A valid raw code with the given characters at the given positions.

    Body positions are set directly; a wanted check character is reached by varying a
    body position that is not fixed (the check character is a bijection of each one).
    """
    body = ["2"] * BODY_LENGTH
    for position, char in position_chars.items():
        if position < BODY_LENGTH:
            body[position] = char
    wanted_check = position_chars.get(BODY_LENGTH)
    if wanted_check is None:
        return "".join(body) + kitcodes._check_char("".join(body))
    free = next(p for p in range(BODY_LENGTH) if p not in position_chars)
    for char in ALPHABET:
        body[free] = char
        if kitcodes._check_char("".join(body)) == wanted_check:
            return "".join(body) + wanted_check
    raise AssertionError("no body reaches that check character")


def test_new_codes_are_well_formed_and_valid() -> None:
    for _ in range(2000):
        code = kitcodes.new_code()
        assert re.fullmatch(rf"[{ALPHABET}]{{4}}-[{ALPHABET}]{{4}}", code)
        assert kitcodes.is_valid(code)


def test_alphabet_has_no_look_alikes_and_a_prime_size() -> None:
    assert len(ALPHABET) == len(set(ALPHABET)) == 29
    assert not set("01OILSU") & set(ALPHABET)


@pytest.mark.parametrize("typed", ["abcd-efgh", " 2345 6789 ", "2345\t6789"])
def test_typed_codes_are_normalised(typed: str) -> None:
    assert kitcodes.normalise(typed) == typed.upper().replace(" ", "").replace("-", "").replace(
        "\t", ""
    )


@pytest.mark.parametrize(
    "typed", ["", "2345-678", "2345-67892", "2345-678O", "ÄBCD-EFGH", "2345_6789", "----"]
)
def test_malformed_codes_are_invalid(typed: str) -> None:
    assert not kitcodes.is_valid(typed)


def test_every_single_character_substitution_is_detected() -> None:
    checked = 0
    for position in range(RAW_LENGTH):
        for old, new in itertools.permutations(ALPHABET, 2):
            raw = _with({position: old})
            assert kitcodes.is_valid(raw) and raw[position] == old
            typo = raw[:position] + new + raw[position + 1 :]
            assert not kitcodes.is_valid(_format(typo)), (raw, position, new)
            checked += 1
    assert checked == RAW_LENGTH * 29 * 28


def test_every_adjacent_transposition_is_detected() -> None:
    checked = 0
    for position in range(RAW_LENGTH - 1):
        for first, second in itertools.permutations(ALPHABET, 2):
            raw = _with({position: first, position + 1: second})
            assert kitcodes.is_valid(raw) and raw[position : position + 2] == first + second
            typo = raw[:position] + second + first + raw[position + 2 :]
            assert not kitcodes.is_valid(_format(typo)), (raw, position)
            checked += 1
    assert checked == (RAW_LENGTH - 1) * 29 * 28


def test_transposition_across_the_dash_is_detected() -> None:
    raw = _raw(kitcodes.new_code())
    while raw[3] == raw[4]:
        raw = _raw(kitcodes.new_code())
    typo = raw[:3] + raw[4] + raw[3] + raw[5:]
    assert not kitcodes.is_valid(_format(typo))


def test_canonical_form_of_a_scanned_code() -> None:
    code = kitcodes.new_code()
    assert kitcodes.canonical(code.lower().replace("-", " ")) == code
