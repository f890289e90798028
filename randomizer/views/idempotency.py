"""``@idempotent``: Idempotency-Key handling for state-changing API endpoints (SPEC §4.2).

Usage (the view returns ``(body, status)`` and does NOT commit: the decorator owns the
transaction, stores the answer in it, commits, and re-runs the view on a deadlock,
serialization failure or busy database)::

    from randomizer.views.api import bp, require
    from randomizer.views.idempotency import idempotent

    def _without_arm(body: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in body.items() if k != "arm"}   # never store the arm

    def _redisclose(stored: dict[str, Any]) -> Response:
        # Runs inside a transaction the decorator commits: audit the re-disclosure here.
        ...
        return jsonify({**stored, "arm": arm}), 200

    @bp.post("/participants/<int:participant_id>/unblind")
    @idempotent(authorize=_may_unblind, sanitize=_without_arm, replay=_redisclose)
    def unblind(participant_id: int) -> tuple[dict[str, Any], int]:
        require(Role.INVESTIGATOR)
        body = read_json_object()               # parse and check shape
        result = unblinding.unblind(db.session(), ...)   # service: flushes, never commits
        return {"participant_id": ..., "arm": {...}, "unblinded_at": ...}, 200

What the client sees: a caller who may not make the request gets the same 403 or 404
whether or not the key was answered before; no key → 400; the same key and body again →
the stored answer (or ``replay(stored)``) with no second effect; the same key with a
different body (or on another endpoint) → 422; the same key while the first request runs
→ 409. A refused or failed request leaves no answer behind, so the key may be retried once
the cause is fixed. The in-flight marker is committed in its own transaction before the
work starts.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

from flask import Response, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from randomizer.auth import current
from randomizer.db import db
from randomizer.services import idempotency
from randomizer.transaction import run_in_transaction

F = TypeVar("F", bound=Callable[..., Any])
Body = dict[str, Any]
HEADER = "Idempotency-Key"


def idempotent(
    *,
    authorize: Callable[..., object],
    sanitize: Callable[[Body], Body] | None = None,
    replay: Callable[[Body], ResponseReturnValue] | None = None,
    attempts: int = 5,
) -> Callable[[F], F]:
    """Make a ``(body, status)``-returning API view idempotent under the Idempotency-Key header.

    ``authorize(*args, **kwargs)`` raises the refusal (403, 404) a first call would get; it
    runs before every call, replays included, so a stored answer reaches only a caller who
    still holds the role and site the first call needed.
    ``sanitize(body)`` is applied before the answer is stored (what must never rest in the
    database, such as an arm, is removed there); ``replay(stored_body)`` answers a retry
    instead of the stored body, inside a transaction the decorator commits.
    """

    def decorator(view: F) -> F:
        @functools.wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> ResponseReturnValue:
            session = db.session()
            authorize(*args, **kwargs)
            held = _claim(session)
            if held.answer is not None:
                status, stored = held.answer
                if replay is not None:
                    return run_in_transaction(session, lambda: replay(stored))
                return _json(stored, status)

            def work() -> tuple[Body, int]:
                body, status = view(*args, **kwargs)
                idempotency.complete(session, held, status, sanitize(body) if sanitize else body)
                return body, status

            try:
                body, status = run_in_transaction(session, work, attempts=attempts)
            except BaseException:
                # Refused or failed: nothing was committed, so free the key for a retry.
                session.rollback()
                idempotency.release(session, held)
                session.commit()
                raise
            return _json(body, status)

        return cast(F, wrapped)

    return decorator


def _claim(session: Any) -> idempotency.Claim:
    key = idempotency.check_key(request.headers.get(HEADER))
    fingerprint = idempotency.request_fingerprint(
        _secret(), request.method, request.path, request.get_data(cache=True)
    )
    held = idempotency.claim(
        session,
        user_id=current().id,
        key=key,
        endpoint=f"{request.method} {request.url_rule}",
        request_hash=fingerprint,
    )
    session.commit()
    return held


def _secret() -> bytes:
    secret = current_app.secret_key
    if isinstance(secret, str):
        return secret.encode("utf-8")
    return bytes(secret or b"")


def _json(body: Body, status: int) -> Response:
    response = jsonify(body)
    response.status_code = status
    return response
