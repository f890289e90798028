"""The shapes of /api/v1: every request body, query and answer, as typed pydantic models.

They are the one source of truth: the views validate with them (``api_schema.body_of``,
``query_of``) and build their answers from them, and the OpenAPI document is generated from
them (``openapi.document``), so the document and the checks cannot drift apart.

Requests are strict: a JSON string is never read as a number ("1" is not 1), a boolean is
not a number, numbers are finite, and every text is bounded by its column and refuses NUL
and other control characters (a typed reason keeps tab and line breaks). The services judge
the rest (which sites, levels and visits a study has).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictBool,
    StrictFloat,
    StrictInt,
    StringConstraints,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)

from randomizer.inputs import MAX_INT
from randomizer.models import ParticipantStatus
from randomizer.services.audit_reports import MAX_FEED_PAGE
from randomizer.services.enrollment import MAX_REASON, MAX_SCREENING_NUMBER
from randomizer.services.passwords import MAX_PASSWORD_LENGTH

#: No control character at all (NUL included): codes, numbers, names.
ONE_LINE = r"^[^\x00-\x1f\x7f]*$"
#: Typed text: tab and line breaks allowed, every other control character refused.
MULTILINE = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"
#: The control-character patterns: a value failing one is malformed (400), not invalid.
CONTROL_PATTERNS = frozenset({ONE_LINE, MULTILINE})


Code = Annotated[  # site, study, visit and factor codes and levels (String(64) columns)
    str, StringConstraints(min_length=1, max_length=64, pattern=ONE_LINE)
]
ScreeningNumber = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_SCREENING_NUMBER, pattern=ONE_LINE)
]
Password = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_PASSWORD_LENGTH, pattern=MULTILINE)
]
OneTimeCode = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=ONE_LINE)]
Reason = Annotated[str, StringConstraints(min_length=1, max_length=MAX_REASON, pattern=MULTILINE)]
RecordId = Annotated[StrictInt, Field(ge=1, le=MAX_INT)]
CriterionAnswer = StrictBool | StrictInt | Annotated[StrictFloat, Field(allow_inf_nan=False)]


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


#: A UTC time, answered as ISO 8601 with a Z.
Timestamp = Annotated[
    dt.datetime,
    PlainSerializer(_iso, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


def _keyed_by_code(schema: dict[str, Any]) -> None:
    # pydantic writes a pattern on dict keys as patternProperties, which leaves every key
    # that does not match free; the API refuses those keys, so the document says so.
    for pattern, values in schema.pop("patternProperties", {}).items():
        schema["propertyNames"] = {**schema.get("propertyNames", {}), "pattern": pattern}
        schema["additionalProperties"] = values


class Request(BaseModel):
    """A JSON request body: strict types; fields the API does not know are ignored."""

    model_config = ConfigDict(strict=True, extra="ignore")


class Closed(Request):
    """A body that refuses fields it does not know (``extra_forbidden``)."""

    model_config = ConfigDict(strict=True, extra="forbid")


class Query(BaseModel):
    """Query arguments: text, and whole numbers in ASCII digits; others are ignored."""

    model_config = ConfigDict(strict=True, extra="ignore")

    @field_validator("*", mode="before")
    @classmethod
    def _ascii_digits(cls, value: object, info: ValidationInfo) -> object:
        # Only ASCII digits become a number ("²".isdigit() is true); any other text stays
        # text and fails the strict integer check, naming the argument.
        wanted = cls.model_fields[info.field_name or ""].annotation
        text = value.strip() if isinstance(value, str) else None
        if wanted is int and text is not None and text.isascii() and text.isdigit():
            return int(text)
        return value


class Reply(BaseModel):
    """An answer of the API (built by the views, never from client input)."""

    model_config = ConfigDict(extra="forbid")


# --- requests --------------------------------------------------------------------------


class Signature(Closed):
    """An electronic signature (21 CFR 11.200): the signer's password, and the current
    one-time code when a second factor is enrolled."""

    password: Password = Field(description="The signer's password")
    totp: OneTimeCode | None = Field(
        default=None, description="Current one-time code, when enrolled"
    )


class Registration(Request):
    site: Code
    screening_number: ScreeningNumber
    factors: dict[Code, Code] = Field(
        description="Stratification factor code → level", json_schema_extra=_keyed_by_code
    )
    eligibility: dict[Code, CriterionAnswer] = Field(
        description="Criterion code → answer: true/false, or a number for numeric criteria",
        json_schema_extra=_keyed_by_code,
    )


class RandomizeRequest(Request):
    signature: Signature


class DispenseRequest(Request):
    visit: Code
    override_reason: Reason | None = Field(
        default=None, description="Required when today is outside the visit's window"
    )
    signature: Signature


class UnblindRequest(Closed):
    reason_category: Code
    reason: Reason
    signature: Signature
    participant_id: RecordId | None = Field(
        default=None, description="If given, the URL's participant: one participant per request"
    )


class ParticipantLookup(Query):
    screening_number: ScreeningNumber


class KitQuery(Query):
    site: Code | None = None


class AuditQuery(Query):
    after: Annotated[StrictInt, Field(ge=0, le=MAX_INT)] = 0
    limit: Annotated[StrictInt, Field(ge=1, le=MAX_FEED_PAGE)] = 500


# --- answers ---------------------------------------------------------------------------


class Registered(Reply):
    participant_id: int
    status: ParticipantStatus
    failed_criteria: list[str]


class HeldKit(Reply):
    visit: str
    kit_code: str


class ParticipantView(Reply):
    """A participant as the caller's role may see it (never an arm)."""

    participant_id: int
    study: str
    site: str
    screening_number: str
    status: ParticipantStatus
    randomization_number: str | None
    randomized_at: Timestamp | None
    test: bool
    unblinded: bool | None = Field(default=None, description="Not shown to outcome assessors")
    unblinded_at: Timestamp | None = None
    kits: list[HeldKit] | None = Field(default=None, description="For the roles that see kit codes")


class Randomized(Reply):
    participant_id: int
    randomization_number: str
    kit_code: str
    randomized_at: Timestamp


class KitAllocated(Reply):
    visit: str
    kit_code: str


class Arm(Reply):
    code: str
    name: str


class Unblinded(Reply):
    participant_id: int
    arm: Arm
    unblinded_at: Timestamp | None


class KitEntry(Reply):
    kit_code: str
    status: str
    site: str | None
    lot: str | None
    expiry: dt.date | None
    test: bool
    arm: Arm | None = Field(default=None, description="Pharmacists only")


class KitList(Reply):
    study: str
    site: str | None
    count: int
    kits: list[KitEntry]


class AuditEventView(Reply):
    seq: int
    occurred_at: str
    actor: str
    role: str
    action: str
    object_type: str | None
    object_id: str | None
    study: str | None
    participant_id: int | None
    old: Any
    new: Any
    reason: str | None
    prev_digest: str
    digest: str


class ChainHead(Reply):
    events: int
    digest: str | None


class AuditPage(Reply):
    after: int
    events: list[AuditEventView]
    next_after: int
    more: bool
    head: ChainHead


class ChainVerification(Reply):
    ok: bool
    events: int
    head: str
    first_bad_event: int | None = None
    problem: str | None = None


class Problem(Reply):
    """RFC 9457 problem details; ``field`` names the value refused, when there is one."""

    type: str
    title: str
    status: int
    detail: str
    field: str | None = None
