"""The JSON API under /api/v1: bearer tokens, problem+json errors, OpenAPI document."""

from __future__ import annotations

from flask import Blueprint, g, jsonify, request
from werkzeug.wrappers import Response

from randomizer.auth import current
from randomizer.db import db
from randomizer.errors import N_, AuthenticationFailed, NotPermitted
from randomizer.models import Role
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


def require(*roles: Role) -> None:
    """Refuse the current API user unless they hold one of these roles."""
    if current().role not in roles:
        raise NotPermitted(N_("Your role may not use this endpoint."))


@bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(document())
