"""``@operation``: what an /api/v1 view takes and answers, declared once, for the checks and
for the OpenAPI document alike.

::

    @bp.post("/participants/<int:participant_id>/randomize")
    @operation("Randomize (signed)", roles=(Role.INVESTIGATOR,), body=RandomizeRequest,
               answer=Randomized, status=201)
    @idempotent(authorize=investigator_of)
    def randomize(participant_id: int) -> tuple[Body, int]:
        body = body_of(RandomizeRequest)        # the declared model, or a problem naming the field
        ...
        return reply(Randomized(...)), 201

The decorator refuses other roles (403) before the view runs; ``body_of`` and ``query_of``
validate with the declared models only (asking for another is a programming error), and a
refusal names the field (``signature.password``, ``eligibility.age``) in problem+json.
``openapi.document`` reads the same declarations from the URL map.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from flask import current_app, request
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import BadRequest

from randomizer.auth import current
from randomizer.errors import N_, InvalidInput, NotPermitted, RandomizerError, Text
from randomizer.models import Role
from randomizer.views.api_shapes import CONTROL_PATTERNS, Query, Reply, Request
from randomizer.views.input_layer import malformed

F = TypeVar("F", bound=Callable[..., Any])
B = TypeVar("B", bound=Request)
Q = TypeVar("Q", bound=Query)
#: The attribute of a view function that holds its Operation.
ATTRIBUTE = "api_operation"
_BODY = "randomizer.api_body"


@dataclass(frozen=True)
class Operation:
    """One documented API operation."""

    summary: str
    roles: tuple[Role, ...]
    answer: type[Reply]
    status: int = 200
    #: The answer is a JSON array of ``answer``.
    many: bool = False
    body: type[Request] | None = None
    query: type[Query] | None = None
    notes: str = ""


class MalformedBody(RandomizerError):
    status, slug, title = 400, "malformed-body", "Malformed request body"


class UnsupportedMediaType(RandomizerError):
    status, slug, title = 415, "unsupported-media-type", "Unsupported media type"


def operation(
    summary: str,
    *,
    roles: Sequence[Role],
    answer: type[Reply],
    status: int = 200,
    many: bool = False,
    body: type[Request] | None = None,
    query: type[Query] | None = None,
    notes: str = "",
) -> Callable[[F], F]:
    """Declare an API view's operation; callers without one of ``roles`` get 403."""
    declared = Operation(summary, tuple(roles), answer, status, many, body, query, notes)

    def decorator(view: F) -> F:
        @functools.wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if current().role not in declared.roles:
                raise NotPermitted(N_("Your role may not use this endpoint."))
            return view(*args, **kwargs)

        setattr(wrapped, ATTRIBUTE, declared)
        return cast(F, wrapped)

    return decorator


def operation_of(view: Callable[..., Any]) -> Operation | None:
    """The operation declared on a view function, if any."""
    found = getattr(view, ATTRIBUTE, None)
    return found if isinstance(found, Operation) else None


def _declared() -> Operation:
    found = operation_of(current_app.view_functions[request.endpoint or ""])
    if found is None:
        raise LookupError(f"{request.endpoint} declares no @operation")
    return found


def body_of(model: type[B]) -> B:
    """The request body validated by the operation's declared model (read once per request)."""
    if _declared().body is not model:
        raise LookupError(f"{request.endpoint} does not declare the body {model.__name__}")
    # Kept in the request's environ: the authorization check and the view both read it, and
    # ``g`` may outlive the request (an app context pushed around several requests).
    if _BODY not in request.environ:
        data = _json_document()
        try:
            request.environ[_BODY] = model.model_validate(data)
        except ValidationError as err:
            raise refusal(err, data, root="body") from None
    return cast(B, request.environ[_BODY])


def query_of(model: type[Q]) -> Q:
    """The query arguments validated by the operation's declared model (empty values absent)."""
    if _declared().query is not model:
        raise LookupError(f"{request.endpoint} does not declare the query {model.__name__}")
    data = {
        name: value
        for name, value in request.args.items()
        if name in model.model_fields and value.strip()
    }
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise refusal(err, data, root="query") from None


def reply(answer: BaseModel | list[Any]) -> Any:
    """An answer model (or a list of them) as JSON values; unset optional fields left out."""
    if isinstance(answer, list):
        return [reply(item) for item in answer]
    return answer.model_dump(mode="json", exclude_unset=True)


def _json_document() -> object:
    if request.mimetype != "application/json":
        raise UnsupportedMediaType(
            N_("Send the body as JSON with the header 'Content-Type: application/json'."),
            field="Content-Type",
        )
    raw = request.get_data(cache=True)
    try:
        return request.get_json(force=True, silent=False)
    except (BadRequest, RecursionError):  # werkzeug's message says nothing useful
        raise MalformedBody(
            N_("The request body is empty: send a JSON object.")
            if not raw.strip()
            else N_("The request body is not valid JSON (UTF-8): send a JSON object.")
        ) from None


# --- naming the refused field ----------------------------------------------------------

_EXPECTED = {
    "bool_type": N_("true or false"),
    "int_type": N_("a whole number"),
    "float_type": N_("a number"),
    "string_type": N_("a string"),
    "dict_type": N_("an object"),
    "model_type": N_("an object"),
    "model_attributes_type": N_("an object"),
    "list_type": N_("an array"),
}


def refusal(err: ValidationError, data: object, *, root: str) -> RandomizerError:
    """The first problem of a failed validation as a refusal naming its field."""
    problems = err.errors(include_url=False)
    field = _field(problems[0], data) or root
    here = [p for p in problems if (_field(p, data) or root) == field]
    kind, ctx = here[0]["type"], here[0].get("ctx", {})
    if kind == "string_pattern_mismatch" and ctx.get("pattern") in CONTROL_PATTERNS:
        return malformed(field)
    problem = _message(kind, ctx, here, root)
    if field == "body":
        return InvalidInput(N_("The request body %(problem)s"), field=field, problem=problem)
    return InvalidInput(N_("%(name)s: %(problem)s"), field=field, name=field, problem=problem)


def _message(kind: str, ctx: dict[str, Any], here: list[Any], root: str) -> Text:
    value = here[0].get("input")
    expected = [_EXPECTED[p["type"]] for p in here if p["type"] in _EXPECTED]
    if kind == "missing" or (kind == "string_type" and value is None):
        return Text(N_("this field is required."))
    if expected:
        if root == "query":
            return Text(N_("must be a whole number in digits 0-9."))
        wanted = [Text(w) for w in dict.fromkeys(expected)]
        if len(wanted) > 1:
            choices = {"one": wanted[:-1], "other": wanted[-1], "sent": json_type(value)}
            return Text(N_("must be %(one)s or %(other)s, not %(sent)s."), choices)
        return Text(N_("must be %(wanted)s, not %(sent)s."),
                    {"wanted": wanted[0], "sent": json_type(value)})  # fmt: skip
    texts = {
        "string_too_short": Text(N_("must not be empty.")),
        "string_too_long": Text(N_("must be at most %(n)s characters."),
                                {"n": ctx.get("max_length")}),
        "greater_than_equal": Text(N_("must be at least %(n)s."), {"n": ctx.get("ge")}),
        "less_than_equal": Text(N_("must be at most %(n)s."), {"n": ctx.get("le")}),
        "finite_number": Text(N_("must be a finite number.")),
        "extra_forbidden": Text(N_("unknown field.")),
        "string_unicode": Text(N_("must be valid Unicode text.")),
    }  # fmt: skip
    # Any other kind pydantic may add is still refused, with its (English) words.
    return texts.get(kind) or Text(N_("%(detail)s."), {"detail": here[0]["msg"]})


def _field(problem: Any, data: object) -> str:
    """The problem's location as a path through the data actually sent (``a.b[0]``): the
    validator's own steps (a union's member names, ``[key]``) are left out."""
    loc, here, path = problem["loc"], data, ""
    for index, step in enumerate(loc):
        if isinstance(here, dict) and step in here:
            path, here = (f"{path}.{step}" if path else str(step)), here[step]
        elif isinstance(here, list) and isinstance(step, int) and 0 <= step < len(here):
            path, here = f"{path}[{step}]", here[step]
        else:
            if problem["type"] == "missing" and index == len(loc) - 1:
                path = f"{path}.{step}" if path else str(step)
            break
    return path


def json_type(value: object) -> Text:
    """What a JSON value is, in words ("a string", "null")."""
    if value is None:
        return Text(N_("null"))
    if isinstance(value, bool):
        return Text(N_("a boolean"))
    if isinstance(value, int | float):
        return Text(N_("a number"))
    if isinstance(value, str):
        return Text(N_("a string"))
    if isinstance(value, list):
        return Text(N_("an array"))
    return Text(N_("an object"))
