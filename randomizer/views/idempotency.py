"""``@idempotent``: Idempotency-Key handling for state-changing API endpoints (SPEC §4.2).

Usage (the view returns ``(body, status)`` and does NOT commit: the decorator owns the
transaction, records the key and the answer in it, commits, and re-runs the whole
transaction on a deadlock, serialization failure or busy database)::

    def _may_unblind(participant_id: int) -> None:   # the 403/404 a first call would get
        unblinding.find_participant(db.session(), participant_id, current())

    def _without_arm(body: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in body.items() if k != "arm"}   # never store the arm

    def _redisclose(stored: dict[str, Any]) -> tuple[dict[str, Any], int]:
        ...  # runs in the transaction the decorator commits: audit the re-disclosure here

    @bp.post("/participants/<int:participant_id>/unblind")
    @operation("Emergency unblinding", roles=(Role.INVESTIGATOR,), body=UnblindRequest,
               answer=Unblinded)                 # what it takes and answers (api_schema)
    @idempotent(authorize=_may_unblind, sanitize=_without_arm, replay=_redisclose)
    def unblind(participant_id: int) -> tuple[dict[str, Any], int]:
        body = body_of(UnblindRequest)                   # validated by the declared model
        result = unblinding.unblind(db.session(), ...)   # service: flushes, never commits
        return reply(Unblinded(...)), 200

What the client sees: a caller who may not make the request gets the same 403 or 404
whether or not the key was answered before; no key → 400 (unless ``required=False``, as
for registration); the same key and body again → the stored answer (or
``replay(stored)``) with no second effect; the same key with a different body (or on
another endpoint) → 422. A duplicate sent while the first request runs waits for it and
then replays its answer. The key is recorded in the work's own transaction, so a refused or
failed request, or one whose worker or database died, leaves nothing behind: its retry is
carried out at once.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

from flask import Response, current_app, jsonify, request

from randomizer.auth import current
from randomizer.db import db
from randomizer.services import idempotency
from randomizer.transaction import run_in_transaction

F = TypeVar("F", bound=Callable[..., Any])
Body = dict[str, Any]
Answer = tuple[Body, int]
HEADER = "Idempotency-Key"
#: The attribute of a view function saying whether the header is "required" or "optional"
#: (the OpenAPI document reads it).
KEY_ATTRIBUTE = "idempotency_key"


def idempotent(
    *,
    authorize: Callable[..., object],
    sanitize: Callable[[Body], Body] | None = None,
    replay: Callable[[Body], Answer] | None = None,
    required: bool = True,
    attempts: int = 5,
) -> Callable[[F], F]:
    """Make a ``(body, status)``-returning API view idempotent under the Idempotency-Key header.

    ``authorize(*args, **kwargs)`` raises the refusal (403, 404) a first call would get; it
    runs before every call, replays included, so a stored answer reaches only a caller who
    still holds the role and site the first call needed. ``sanitize(body)`` is applied
    before the answer is stored (what must never rest in the database, such as an arm, is
    removed there); ``replay(stored_body)`` answers a retry instead of the stored body,
    inside the transaction the decorator commits.
    """

    def decorator(view: F) -> F:
        @functools.wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Response:
            session = db.session()
            key = _key(required)

            def work() -> Answer:
                authorize(*args, **kwargs)
                if key is None:
                    return cast(Answer, view(*args, **kwargs))
                held = idempotency.claim(
                    session, user_id=current().id, key=key, endpoint=_endpoint(),
                    request_hash=_fingerprint(),
                )  # fmt: skip
                if held.answer is not None:
                    status, stored = held.answer
                    return replay(stored) if replay is not None else (stored, status)
                body, status = view(*args, **kwargs)
                idempotency.complete(session, held, status, sanitize(body) if sanitize else body)
                return body, status

            body, status = run_in_transaction(session, work, attempts=attempts)
            response = jsonify(body)
            response.status_code = status
            return response

        setattr(wrapped, KEY_ATTRIBUTE, "required" if required else "optional")
        return cast(F, wrapped)

    return decorator


def _key(required: bool) -> str | None:
    raw = request.headers.get(HEADER)
    if raw is None and not required:
        return None
    return idempotency.check_key(raw)


def _endpoint() -> str:
    return f"{request.method} {request.url_rule}"


def _fingerprint() -> str:
    secret = current_app.secret_key
    key = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret or b"")
    return idempotency.request_fingerprint(
        key, request.method, request.path, request.get_data(cache=True)
    )
