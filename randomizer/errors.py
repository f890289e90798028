"""One domain error hierarchy, and the handlers that turn it into HTML or problem+json."""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, jsonify, render_template, request
from flask_babel import gettext as _
from flask_wtf.csrf import CSRFError
from markupsafe import escape
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException

from randomizer.db import db

# Re-exported: services mark (N_) and carry (Text) their wordings through this module.
from randomizer.wording import N_ as N_
from randomizer.wording import Text as Text

#: Seconds a client should wait before retrying when the database is unavailable.
RETRY_AFTER_SECONDS = 5


class RandomizerError(Exception):
    """A refusal the user can act on. ``message`` (English) is safe to show to the caller.

    ``message`` is an ``N_``-marked msgid with ``%(name)s`` placeholders filled from
    ``params`` (or a ``Text`` taken over from another refusal): pages show it translated.
    """

    status = 400
    slug = "bad-request"
    title = "Request refused"

    def __init__(self, message: str | Text, *, field: str | None = None, **params: object) -> None:
        self.text = message if isinstance(message, Text) else Text(message, params)
        self.message = str(self.text)
        super().__init__(self.message)
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


def unreadable(err: Exception) -> Conflict:
    """The refusal for stored data that failed its integrity check (``err`` says which)."""
    return Conflict(
        N_("Stored data failed its integrity check; nothing was changed or shown: %(problem)s"),
        problem=str(err),
    )


def shown_message(err: RandomizerError | Text) -> str:
    """The refusal as a page shows it: in the page's language, with its values."""
    text = err.text if isinstance(err, RandomizerError) else err
    return text.render(_)


def api_detail(err: RandomizerError) -> str:
    """The API's ``detail``: in the language the client asked for, else in English."""
    from randomizer.settings import LANGUAGES  # settings imports this module

    if request.accept_languages.best_match(LANGUAGES):
        return shown_message(err)
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
            return problem(err.status, err.title, api_detail(err), err.slug, **extra)
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
