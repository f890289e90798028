"""One domain error hierarchy, and the handlers that turn it into HTML or problem+json."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, jsonify, render_template, request
from flask_babel import gettext as _
from flask_wtf.csrf import CSRFError
from markupsafe import escape
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException

from randomizer.db import db

#: Seconds a client should wait before retrying when the database is unavailable.
RETRY_AFTER_SECONDS = 5


class RandomizerError(Exception):
    """A refusal the user can act on. ``message`` is safe to show to the caller."""

    status = 400
    slug = "bad-request"
    title = "Request refused"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidInput(RandomizerError):
    status, slug, title = 422, "invalid-input", "Invalid input"


class MalformedInput(RandomizerError):
    status, slug, title = 400, "malformed-input", "Malformed input"


class NotFound(RandomizerError):
    status, slug, title = 404, "not-found", "Not found"


class NotPermitted(RandomizerError):
    status, slug, title = 403, "not-permitted", "Not permitted"


class AuthenticationFailed(RandomizerError):
    status, slug, title = 401, "authentication-failed", "Authentication failed"


class SignatureInvalid(RandomizerError):
    status, slug, title = 401, "signature-invalid", "Electronic signature refused"


class Conflict(RandomizerError):
    status, slug, title = 409, "conflict", "Conflict with the current state"


class AlreadyRandomized(Conflict):
    slug, title = "already-randomized", "Participant already randomized"


class NotEligible(RandomizerError):
    status, slug, title = 422, "not-eligible", "Participant not eligible"


class SupplyUnavailable(Conflict):
    slug, title = "supply-unavailable", "No kit available"


class StratumExhausted(Conflict):
    slug, title = "list-exhausted", "Allocation list exhausted"


class StudyLocked(Conflict):
    slug, title = "study-locked", "Study database locked"


class RandomizationPaused(Conflict):
    slug, title = "randomization-paused", "Randomization paused"


class IdempotencyError(RandomizerError):
    slug, title = "idempotency", "Idempotency-Key problem"


class ConfigurationError(RandomizerError):
    status, slug, title = 500, "configuration", "Service not configured"


# Services word refusals in English (they do not import Flask). The pages show the ones a
# site user meets at the bedside in the user's language; the API keeps the service's words.
_SHOWN: list[tuple[re.Pattern[str], Callable[[dict[str, str]], str]]] = [
    (re.compile(pattern), show)
    for pattern, show in [
        (r"Re-enter your password to sign\.", lambda m: _("Re-enter your password to sign.")),
        (
            r"The password does not match: nothing was signed or changed\.",
            lambda m: _("The password does not match: nothing was signed or changed."),
        ),
        (
            r"Too many wrong passwords: .*",
            lambda m: _(
                "Too many wrong passwords: signing is paused for this account. Wait a few "
                "minutes or ask an administrator; nothing was signed or changed."
            ),
        ),
        (
            r"The one-time code is not valid: .*",
            lambda m: _(
                "The one-time code is not valid: nothing was disclosed. Enter the current "
                "code from your authenticator app."
            ),
        ),
        (r"Choose a reason category: .*", lambda m: _("Choose a reason category.")),
        (
            r"State the reason for unblinding in your own words\.",
            lambda m: _("State the reason for unblinding in your own words."),
        ),
        (
            r"The randomization number you typed is not this participant's: .*",
            lambda m: _(
                "The randomization number you typed is not this participant's: check the "
                "participant and type the number again."
            ),
        ),
        (r"Type the randomization number\.", lambda m: _("Type the randomization number.")),
        (
            r"Today \((?P<today>[\d-]+)\) is outside the window of visit (?P<visit>\S+) "
            r"\((?P<opens>[\d-]+) to (?P<closes>[\d-]+), due (?P<due>[\d-]+)\)\. .*",
            lambda m: _(
                "Today (%(today)s) is outside the window of visit %(visit)s (%(opens)s to "
                "%(closes)s, due %(due)s). Give a reason to allocate the kit anyway.",
                **m,
            ),
        ),
        (
            r"No kit can be allocated at this site right now\. .*",
            lambda m: _(
                "No kit can be allocated at this site right now. Nothing was changed; ask "
                "the study pharmacist or the depot about this site's supply."
            ),
        ),
        (
            r"Randomization is not open yet: .*",
            lambda m: _(
                "Randomization is not open yet: the study has no allocation list. Nothing "
                "was changed; ask the study statistician."
            ),
        ),
        (
            r"The database of study (?P<study>\S+) is locked: .*",
            lambda m: _(
                "The database of study %(study)s is locked: participants and allocations can "
                "no longer be changed. Nothing was changed.",
                **m,
            ),
        ),
        (
            r"The password must have at least (?P<n>\d+) characters\.",
            lambda m: _("The password must have at least %(n)s characters.", **m),
        ),
        (
            r"This password is too common or too easy to guess: .*",
            lambda m: _(
                "This password is too common or too easy to guess: choose another one (a few "
                "unrelated words make a good password)."
            ),
        ),
        (
            r"Randomization is paused for study (?P<study>\S+): (?P<reason>.*) Nothing was "
            r"changed\.",
            lambda m: _(
                "Randomization is paused for study %(study)s: %(reason)s Nothing was changed.", **m
            ),
        ),
        (
            r"Randomization is paused at site (?P<site>\S+) of study (?P<study>\S+): "
            r"(?P<reason>.*) Nothing was changed\.",
            lambda m: _(
                "Randomization is paused at site %(site)s of study %(study)s: "
                "%(reason)s Nothing was changed.",
                **m,
            ),
        ),
        (
            r"Do not dispense kit (?P<code>\S+): the participant is withdrawn\. .*",
            lambda m: _(
                "Do not dispense kit %(code)s: the participant was withdrawn. Set the kit "
                "aside (quarantine) instead.",
                **m,
            ),
        ),
        (
            r"Do not dispense kit (?P<code>\S+): the participant is randomized in error\. .*",
            lambda m: _(
                "Do not dispense kit %(code)s: the participant was randomized in error. Set "
                "the kit aside (quarantine) instead.",
                **m,
            ),
        ),
        (
            r"Kit (?P<code>\S+) is for a participant who may receive it; .*",
            lambda m: _(
                "Kit %(code)s is for a participant who may receive it: dispense it instead.",
                **m,
            ),
        ),
        (
            r"Kit (?P<code>\S+) was allocated to a participant once; .*",
            lambda m: _(
                "Kit %(code)s was allocated to a participant once; it cannot become "
                "available again.",
                **m,
            ),
        ),
        (
            r"The allocation list has no free place left .*",
            lambda m: _(
                "The allocation list has no free place left for this participant's stratum. "
                "Nothing was changed; ask the study statistician to extend the list."
            ),
        ),
    ]
]


def _titles_for_extraction() -> tuple[str, ...]:
    """Never called: lists the error classes' titles so that extraction finds them."""
    return (
        _("Request refused"), _("Invalid input"), _("Not found"), _("Not permitted"),
        _("Authentication failed"), _("Electronic signature refused"),
        _("Conflict with the current state"), _("Participant already randomized"),
        _("Participant not eligible"), _("No kit available"), _("Allocation list exhausted"),
        _("Idempotency-Key problem"), _("Service not configured"), _("Malformed input"),
        _("Study database locked"), _("Randomization paused"),
    )  # fmt: skip


def shown_message(err: RandomizerError) -> str:
    """The refusal as a page shows it: translated when it is a known wording, else as raised."""
    for pattern, show in _SHOWN:
        found = pattern.fullmatch(err.message)
        if found:
            return show(found.groupdict())
    return err.message


def problem(
    status: int, title: str, detail: str, slug: str = "about:blank", **extra: Any
) -> Response:
    """An RFC 9457 problem details response."""
    body = {
        "type": slug if slug == "about:blank" else f"/api/v1/problems/{slug}",
        "title": title,
        "status": status,
        "detail": detail,
        **extra,
    }
    response = jsonify(body)
    response.status_code = status
    response.mimetype = "application/problem+json"
    return response


def _wants_problem() -> bool:
    return request.path.startswith("/api/")


def register_error_handlers(app: Flask) -> None:
    """Render domain and HTTP errors as problem+json under /api and as pages elsewhere."""

    @app.errorhandler(RandomizerError)
    def _domain(err: RandomizerError) -> Response | tuple[str, int]:
        if _wants_problem():
            extra = {"field": err.field} if err.field else {}
            return problem(err.status, err.title, err.message, err.slug, **extra)
        title = _(err.title)  # the class titles are extracted through _TITLES below
        return render_template("error.html", title=title, detail=shown_message(err)), err.status

    @app.errorhandler(CSRFError)
    def _csrf(err: CSRFError) -> Response | tuple[str, int]:
        # Say what to do, not which check failed (missing, expired or foreign token).
        detail = _("The form expired or was not sent from this site; reload and try again.")
        if _wants_problem():
            return problem(400, "Form expired", detail)
        return render_template("error.html", title=_("Form expired"), detail=detail), 400

    @app.errorhandler(OperationalError)
    @app.errorhandler(InterfaceError)
    @app.errorhandler(PoolTimeout)
    def _database_unavailable(err: Exception) -> Response:
        # The database is down, restarting or overloaded: say so, and when to retry. The
        # session's connection is dropped so that the next request starts afresh.
        db.session.remove()
        title = _("Service temporarily unavailable")
        detail = _(
            "The database cannot be reached right now; nothing was changed. Try again in a "
            "few seconds (an API client retries with the same Idempotency-Key)."
        )
        if _wants_problem():
            response = problem(503, title, detail, "database-unavailable")
        else:
            response = Response(_plain_page(title, detail), 503, mimetype="text/html")
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response

    @app.errorhandler(HTTPException)
    def _http(err: HTTPException) -> Response:
        status = err.code or 500
        if _wants_problem():
            response = problem(status, err.name, err.description or err.name)
        else:
            title, detail = _http_page_text(status)
            page = render_template(
                "error.html", title=title or err.name, detail=detail or err.description or ""
            )
            response = Response(page, status, mimetype="text/html")
        # 405 says which methods the resource has (Allow), as HTTP requires.
        for name, value in err.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        return response


def _plain_page(title: str, detail: str) -> str:
    """A page that needs no database (the usual layout reads the signed-in user)."""
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"</head><body><h1>{escape(title)}</h1><p>{escape(detail)}</p></body></html>"
    )


def _http_page_text(status: int) -> tuple[str | None, str | None]:
    """Translated title and advice for the HTTP errors a user can meet on a page."""
    texts = {
        400: (
            _("Request not understood"),
            _("The request could not be understood. Please go back and try again."),
        ),
        401: (_("Sign-in required"), _("Please sign in to continue.")),
        403: (_("Access denied"), _("You do not have access to this page.")),
        404: (
            _("Page not found"),
            _("The page you asked for does not exist or is not available to you."),
        ),
        405: (_("Not available"), _("This action is not available here.")),
        413: (_("Too large"), _("What you sent is larger than this service accepts.")),
        500: (
            _("Something went wrong"),
            _(
                "The service could not complete your request. Try again; if it happens "
                "again, tell your administrator."
            ),
        ),
    }
    return texts.get(status, (None, None))
