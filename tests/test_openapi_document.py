"""The OpenAPI document says what the service answers: refusals, limits, headers; and it is
generated from the very declarations the views check with, so it cannot drift from them."""

from __future__ import annotations

import pytest

from randomizer.views.api_schema import operation_of
from randomizer.views.openapi import document

KEYED = (
    "/participants/{participant_id}/randomize",
    "/participants/{participant_id}/dispense",
    "/participants/{participant_id}/unblind",
)


@pytest.fixture
def doc(app):
    return document(app)


def _operations(doc):
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            yield path, method, operation


def _key_parameter(operation):
    return next(p for p in operation["parameters"] if p["name"] == "Idempotency-Key")


@pytest.mark.parametrize("path", KEYED)
def test_the_idempotency_key_is_required_and_cannot_be_empty(doc, path):
    param = _key_parameter(doc["paths"][path]["post"])
    assert param["in"] == "header" and param["required"] is True
    assert param["schema"]["minLength"] == 1 and param["schema"]["maxLength"] == 255


def test_registration_takes_an_optional_idempotency_key(doc):
    param = _key_parameter(doc["paths"]["/studies/{study_code}/participants"]["post"])
    assert param["required"] is False and param["schema"]["minLength"] == 1


@pytest.mark.parametrize("status", ["405", "413", "414", "503"])
def test_limits_and_outages_are_documented_on_every_operation(doc, status):
    for path, method, operation in _operations(doc):
        assert status in operation["responses"], (method, path)


def test_405_documents_allow_and_503_documents_retry_after(doc):
    responses = doc["components"]["responses"]
    assert responses["MethodNotAllowed"]["headers"]["Allow"]["required"] is True
    assert responses["Unavailable"]["headers"]["Retry-After"]["required"] is True
    for response in responses.values():
        schema = response["content"]["application/problem+json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/Problem"}
    problem = doc["components"]["schemas"]["Problem"]
    assert set(problem["required"]) == {"type", "title", "status", "detail"}
    assert "field" in problem["properties"]


def test_every_api_route_is_documented(app, doc):
    documented = {(path, method.upper()) for path, method, _ in _operations(doc)}
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/") or rule.endpoint == "api.openapi":
            continue
        assert operation_of(app.view_functions[rule.endpoint]) is not None, rule.endpoint
        path = rule.rule.removeprefix("/api/v1").replace("<int:", "<").replace("<", "{")
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert (path.replace(">", "}"), method) in documented


def test_strings_and_integers_of_bodies_carry_their_maxima(doc):
    schemas = doc["components"]["schemas"]
    registration = schemas["Registration"]["properties"]
    assert registration["screening_number"]["maxLength"] == 64
    assert schemas["Signature"]["properties"]["password"]["maxLength"] == 256
    assert schemas["UnblindRequest"]["additionalProperties"] is False
    participant_id = schemas["UnblindRequest"]["properties"]["participant_id"]["anyOf"][0]
    assert participant_id["maximum"] == 2**31 - 1
    audit = doc["paths"]["/audit"]["get"]["parameters"]
    assert {p["name"]: p["schema"]["maximum"] for p in audit} == {"after": 2**31 - 1, "limit": 1000}


def test_path_arguments_are_bounded_like_the_routes(doc):
    [param] = doc["paths"]["/participants/{participant_id}"]["get"]["parameters"]
    assert param["schema"] == {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}


def test_the_served_document_is_the_generated_one(client, app, doc):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    assert response.json == doc


def test_a_wrong_method_on_the_api_answers_405_with_allow(client):
    response = client.delete("/api/v1/openapi.json")
    assert response.status_code == 405
    assert response.mimetype == "application/problem+json"
    assert "GET" in response.headers["Allow"]


def test_a_wrong_method_on_an_api_operation_answers_405_with_allow(client):
    response = client.put("/api/v1/participants/1/randomize")
    assert response.status_code == 405
    assert response.mimetype == "application/problem+json"
    assert "POST" in response.headers["Allow"].split(", ")


def test_a_wrong_method_on_a_page_answers_405_with_allow(client):
    response = client.delete("/login")
    assert response.status_code == 405
    assert "POST" in response.headers["Allow"]
