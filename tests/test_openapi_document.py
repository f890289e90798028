"""The OpenAPI document says what the service answers: refusals, limits, headers."""

from __future__ import annotations

import pytest

from randomizer.views.openapi import document

PATHS = (
    "/participants/{id}/randomize",
    "/participants/{id}/dispense",
    "/participants/{id}/unblind",
)


@pytest.mark.parametrize("path", PATHS)
def test_the_idempotency_key_cannot_be_empty(path):
    doc = document()
    param = doc["components"]["parameters"]["IdempotencyKey"]
    assert param["required"] is True
    assert param["schema"]["minLength"] == 1 and param["schema"]["maxLength"] == 255
    assert {"$ref": "#/components/parameters/IdempotencyKey"} in doc["paths"][path]["post"][
        "parameters"
    ]


@pytest.mark.parametrize("status", ["405", "413", "414", "503"])
def test_limits_and_outages_are_documented_on_every_operation(status):
    for path, operations in document()["paths"].items():
        for method, operation in operations.items():
            assert status in operation["responses"], (method, path)


def test_a_wrong_method_on_the_api_answers_405_with_allow(client):
    response = client.delete("/api/v1/openapi.json")
    assert response.status_code == 405
    assert response.mimetype == "application/problem+json"
    assert "GET" in response.headers["Allow"]


def test_a_wrong_method_on_a_page_answers_405_with_allow(client):
    response = client.delete("/login")
    assert response.status_code == 405
    assert "POST" in response.headers["Allow"]
