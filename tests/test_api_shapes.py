"""The API's models are strict, bounded by the columns, and their refusals name the field."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from randomizer.errors import InvalidInput, MalformedInput
from randomizer.inputs import MAX_INT
from randomizer.views.api_schema import refusal
from randomizer.views.api_shapes import (
    AuditQuery,
    DispenseRequest,
    RandomizeRequest,
    Registration,
    UnblindRequest,
)

SIGNED = {"signature": {"password": "pw"}}
REGISTRATION = {
    "site": "S1",
    "screening_number": "SCR-1",
    "factors": {"grade": "low"},
    "eligibility": {"consent": True, "age": 40},
}
UNBLIND = {"reason_category": "medical_emergency", "reason": "Why.", **SIGNED}


def _refused(model: type[BaseModel], data: Any, root: str = "body") -> Any:
    with pytest.raises(ValidationError) as err:
        model.model_validate(data)
    return refusal(err.value, data, root=root)


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"eligibility": {"consent": True, "age": "40"}}, "eligibility.age"),
        ({"eligibility": {"consent": "true", "age": 40}}, "eligibility.consent"),
        ({"eligibility": {"consent": True, "age": float("nan")}}, "eligibility.age"),
        ({"eligibility": {"consent": True, "age": float("inf")}}, "eligibility.age"),
        ({"factors": {"grade": 1}}, "factors.grade"),
        ({"site": 1}, "site"),
        ({"screening_number": "x" * 65}, "screening_number"),
        ({"screening_number": ""}, "screening_number"),
        ({"screening_number": "\ud800"}, "screening_number"),  # a lone surrogate (JSON "\ud800")
    ],
)
def test_registration_values_of_the_wrong_type_or_size_are_refused_by_name(over, field):
    refused = _refused(Registration, {**REGISTRATION, **over})
    assert isinstance(refused, InvalidInput)
    assert refused.field == field and refused.message.startswith(f"{field}: ")


def test_a_number_stays_the_number_sent():
    answers = Registration.model_validate(REGISTRATION).eligibility
    assert answers == {"consent": True, "age": 40} and type(answers["age"]) is int


@pytest.mark.parametrize(
    ("model", "data", "field"),
    [
        (Registration, {**REGISTRATION, "screening_number": "SCR\x00"}, "screening_number"),
        (Registration, {**REGISTRATION, "factors": {"g\x00": "low"}}, "'factors.g\\x00'"),
        (DispenseRequest, {"visit": "month_6\r\n", **SIGNED}, "visit"),
        (
            DispenseRequest,
            {"visit": "v", "override_reason": "a\x1b[31m", **SIGNED},
            "override_reason",
        ),
        (RandomizeRequest, {"signature": {"password": "p\x00w"}}, "signature.password"),
    ],
)
def test_control_characters_are_malformed_and_named(model, data, field):
    refused = _refused(model, data)
    assert isinstance(refused, MalformedInput)
    assert refused.field == field


def test_a_typed_reason_keeps_its_line_breaks_and_tabs():
    body = DispenseRequest.model_validate(
        {"visit": "month_6", "override_reason": "first line\r\n\tsecond", **SIGNED}
    )
    assert body.override_reason == "first line\r\n\tsecond"


@pytest.mark.parametrize(
    ("participant_id", "message"),
    [(True, "must be a whole number, not a boolean."), ("7", "must be a whole number, not a "
     "string."), (MAX_INT + 1, f"must be at most {MAX_INT}."), (0, "must be at least 1.")],
)  # fmt: skip
def test_ids_in_bodies_are_json_integers_within_the_column(participant_id, message):
    refused = _refused(UnblindRequest, {**UNBLIND, "participant_id": participant_id})
    assert refused.message == f"participant_id: {message}"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({**UNBLIND, "participant_ids": [1, 2]}, "participant_ids"),
        ({**UNBLIND, "signature": {"password": "pw", "pin": "1"}}, "signature.pin"),
    ],
)
def test_unblinding_refuses_fields_it_does_not_know(data, field):
    refused = _refused(UnblindRequest, data)
    assert refused.message == f"{field}: unknown field."


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "signature: this field is required."),
        ({"signature": None}, "signature: must be an object, not null."),
        ({"signature": {}}, "signature.password: this field is required."),
        ({"signature": {"password": None}}, "signature.password: this field is required."),
        ({"signature": {"password": ""}}, "signature.password: must not be empty."),
    ],
)
def test_a_missing_signature_is_named_precisely(data, message):
    assert _refused(RandomizeRequest, data).message == message


def test_a_body_that_is_not_an_object_is_named_as_the_body():
    refused = _refused(RandomizeRequest, [])
    assert (refused.field, refused.message) == (
        "body",
        "The request body must be an object, not an array.",
    )


@pytest.mark.parametrize(("raw", "value"), [("12", 12), (" 7 ", 7), ("0", 0)])
def test_query_numbers_in_ascii_digits_are_read(raw, value):
    assert AuditQuery.model_validate({"after": raw}).after == value


@pytest.mark.parametrize("raw", ["²", "١٢", "1.0", "-1", "1e3", str(MAX_INT + 1)])
def test_other_query_numbers_are_refused_by_name(raw):
    refused = _refused(AuditQuery, {"after": raw}, root="query")
    assert isinstance(refused, InvalidInput) and refused.field == "after"


def test_a_feed_page_is_bounded():
    assert _refused(AuditQuery, {"limit": "1001"}, root="query").message == (
        "limit: must be at most 1000."
    )
