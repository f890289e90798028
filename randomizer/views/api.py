"""The JSON API under /api/v1: bearer tokens, problem+json errors, OpenAPI document."""

from __future__ import annotations

from flask import Blueprint, current_app, g, jsonify, request
from werkzeug.wrappers import Response

from randomizer.db import db
from randomizer.errors import N_, AuthenticationFailed
from randomizer.services.users import user_for_token
from randomizer.views.openapi import document

bp = Blueprint("api", __name__, url_prefix="/api/v1")

PUBLIC_ENDPOINTS = {"api.openapi"}


@bp.before_request
def _authenticate() -> None:
    if request.endpoint in PUBLIC_ENDPOINTS:
        return
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationFailed(N_("Send 'Authorization: Bearer <token>'."))
    user = user_for_token(db.session(), token.strip())
    if user is None:
        raise AuthenticationFailed(N_("The API token is unknown or revoked."))
    g.api_user = user


@bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(document(current_app))
