"""Typed ORM classes. Models hold data only: no commits, no crypto, no cross-entity queries."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Enum,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from randomizer.db import Base, code, created, intpk, name


def _enum(cls: type[enum.Enum], constraint: str) -> Enum:
    return Enum(
        cls,
        name=constraint,
        native_enum=False,
        create_constraint=True,
        length=32,
        values_callable=lambda e: [m.value for m in e],
        validate_strings=True,
    )


class Role(enum.StrEnum):
    ADMIN = "admin"
    STATISTICIAN = "statistician"
    PHARMACIST = "pharmacist"
    INVESTIGATOR = "investigator"
    ASSESSOR = "assessor"

    @property
    def unblinded(self) -> bool:
        return self in (Role.STATISTICIAN, Role.PHARMACIST)


class StudyMode(enum.StrEnum):
    TESTING = "testing"
    LIVE = "live"


class ListKind(enum.StrEnum):
    DUMMY = "dummy"
    LIVE = "live"


class SlotStatus(enum.StrEnum):
    AVAILABLE = "available"
    USED = "used"


class KitStatus(enum.StrEnum):
    AT_DEPOT = "at_depot"
    IN_TRANSIT = "in_transit"
    AVAILABLE = "available"
    ALLOCATED = "allocated"
    DISPENSED = "dispensed"
    DAMAGED = "damaged"
    LOST = "lost"
    EXPIRED = "expired"
    QUARANTINED = "quarantined"
    RETURNED = "returned"
    DESTROYED = "destroyed"


class ShipmentStatus(enum.StrEnum):
    PROPOSED = "proposed"
    IN_TRANSIT = "in_transit"
    RECEIVED = "received"
    CANCELLED = "cancelled"


class ParticipantStatus(enum.StrEnum):
    ELIGIBLE = "eligible"
    SCREEN_FAILED = "screen_failed"
    RANDOMIZED = "randomized"
    WITHDRAWN = "withdrawn"
    RANDOMIZED_IN_ERROR = "randomized_in_error"


class User(Base):
    __tablename__ = "user_account"

    id: Mapped[intpk]
    username: Mapped[str] = mapped_column(String(64), unique=True)
    full_name: Mapped[name]
    email: Mapped[str | None] = mapped_column(String(254))
    role: Mapped[Role] = mapped_column(_enum(Role, "role"))
    password_hash: Mapped[str] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[dt.datetime | None]
    #: Base32 TOTP secret sealed under the master key; NULL while not enrolled.
    totp_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    #: Set by a password reset (or a web-created account): a new password first.
    password_change_required: Mapped[bool] = mapped_column(Boolean, default=False)
    #: SHA-256 digests of the unused single-use recovery codes of the second factor.
    recovery_codes: Mapped[list[str] | None] = mapped_column(JSON)
    #: Bumped on every change of role, site, status or password: sessions carrying an
    #: older value are refused on their very next request (server-side revocation).
    session_version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[created]

    sites: Mapped[list[UserSite]] = relationship(
        back_populates="user", cascade="all, delete-orphan", lazy="selectin"
    )

    @property
    def site_codes(self) -> frozenset[str]:
        return frozenset(s.site_code for s in self.sites)


class UserSite(Base):
    """A site a user works at; site scope is by site code, shared across studies."""

    __tablename__ = "user_site"

    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id"), primary_key=True)
    site_code: Mapped[str] = mapped_column(String(64), primary_key=True)

    user: Mapped[User] = relationship(back_populates="sites")


class ApiToken(Base):
    __tablename__ = "api_token"

    id: Mapped[intpk]
    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id"), index=True)
    #: SHA-256 of the token; the token itself is shown once and never stored.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[created]
    revoked_at: Mapped[dt.datetime | None]
    last_used_at: Mapped[dt.datetime | None]

    user: Mapped[User] = relationship()


class Study(Base):
    __tablename__ = "study"

    id: Mapped[intpk]
    code: Mapped[str] = mapped_column(String(32), unique=True)
    title: Mapped[str] = mapped_column(String(500))
    registry_id: Mapped[str] = mapped_column(String(64))
    #: The study definition file as loaded (TOML text); parsed again on use.
    definition_toml: Mapped[str] = mapped_column(Text)
    mode: Mapped[StudyMode] = mapped_column(_enum(StudyMode, "study_mode"))
    went_live_at: Mapped[dt.datetime | None]
    #: Database lock (one-way): when, and the signing statistician and admin.
    locked_at: Mapped[dt.datetime | None]
    locked_by: Mapped[str | None] = mapped_column(String(64))
    lock_cosigned_by: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[created]

    sites: Mapped[list[Site]] = relationship(
        back_populates="study", order_by="Site.position", lazy="selectin"
    )


class Site(Base):
    __tablename__ = "site"
    __table_args__ = (UniqueConstraint("study_id", "code"),)

    id: Mapped[intpk]
    study_id: Mapped[int] = mapped_column(ForeignKey("study.id"))
    code: Mapped[code]
    name: Mapped[name]
    position: Mapped[int] = mapped_column(Integer)
    trigger_level: Mapped[int] = mapped_column(Integer)
    resupply_level: Mapped[int] = mapped_column(Integer)

    study: Mapped[Study] = relationship(back_populates="sites")


class DataKey(Base):
    """A per-study data key, stored only wrapped by the master key."""

    __tablename__ = "data_key"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("study.id"), index=True)
    purpose: Mapped[str] = mapped_column(String(16))
    wrapped: Mapped[bytes] = mapped_column(LargeBinary)
    master_key_id: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[created]


class AllocationList(Base):
    __tablename__ = "allocation_list"
    __table_args__ = (UniqueConstraint("study_id", "kind"),)

    id: Mapped[intpk]
    study_id: Mapped[int] = mapped_column(ForeignKey("study.id"))
    kind: Mapped[ListKind] = mapped_column(_enum(ListKind, "list_kind"))
    data_key_id: Mapped[str] = mapped_column(ForeignKey("data_key.id"))
    source: Mapped[str] = mapped_column(String(16))  # generated | imported
    #: The 256-bit seed, sealed; NULL for an imported list.
    seed_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    #: Short public reference to the seed (never the seed): first bytes of its SHA-256.
    seed_ref: Mapped[str | None] = mapped_column(String(16))
    algorithm_version: Mapped[str] = mapped_column(String(32))
    #: Generation parameters: arms and ratios, block sizes, strata, slots per stratum.
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    fingerprint: Mapped[str] = mapped_column(String(64))
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[created]


class AllocationSlot(Base):
    __tablename__ = "allocation_slot"
    __table_args__ = (
        UniqueConstraint("list_id", "stratum", "sequence"),
        UniqueConstraint("study_id", "randomization_number"),
        Index("ix_allocation_slot_next", "list_id", "stratum", "status", "sequence"),
    )

    id: Mapped[intpk]
    list_id: Mapped[int] = mapped_column(ForeignKey("allocation_list.id"))
    study_id: Mapped[int] = mapped_column(ForeignKey("study.id"))
    stratum: Mapped[str] = mapped_column(String(200))
    sequence: Mapped[int] = mapped_column(Integer)
    randomization_number: Mapped[str] = mapped_column(String(32))
    #: AES-256-GCM sealed arm code, block number and block size (``lists.SlotContent``);
    #: associated data binds it to this row.
    arm_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    status: Mapped[SlotStatus] = mapped_column(_enum(SlotStatus, "slot_status"))
    participant_id: Mapped[int | None] = mapped_column(ForeignKey("participant.id"), unique=True)
    used_at: Mapped[dt.datetime | None]


class AllocationStratum(Base):
    """One stratum of a list: the row an allocation in that stratum locks (``FOR UPDATE``),
    so strata and sites do not wait on each other."""

    __tablename__ = "allocation_stratum"
    __table_args__ = (UniqueConstraint("list_id", "stratum"),)

    id: Mapped[intpk]
    list_id: Mapped[int] = mapped_column(ForeignKey("allocation_list.id"))
    stratum: Mapped[str] = mapped_column(String(200))


class SiteStock(Base):
    """A site's kit stock as the supply policy sees it; locked by every kit move at the site.

    The figures in plain columns are what masked roles can know anyway (kits sent to the
    site, kits allocated there, how many kits each participant received). What depends on
    arms — the available kits of each arm with their expiry, and the kits of each arm ever
    sent — is one sealed index, so drawing a kit opens one value, not every kit.
    """

    __tablename__ = "site_stock"
    __table_args__ = (UniqueConstraint("study_id", "site_code", "is_test"),)

    id: Mapped[intpk]
    study_id: Mapped[int] = mapped_column(ForeignKey("study.id"))
    #: A site code, or ``DEPOT`` for the central depot (its row serialises depot picks).
    site_code: Mapped[str] = mapped_column(String(64))
    is_test: Mapped[bool] = mapped_column(Boolean)
    data_key_id: Mapped[str | None] = mapped_column(ForeignKey("data_key.id"))
    #: AES-256-GCM sealed ``supply.stock.StockIndex``; its length depends on the total only.
    index_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    #: Kits ever sent to the site (dispatched to it or made there).
    credited: Mapped[int] = mapped_column(Integer, default=0)
    #: Kits allocated at the site (every allocation, replacements included).
    consumed: Mapped[int] = mapped_column(Integer, default=0)
    #: Per stratum, how many participants hold how many kits: {stratum: {kits: count}}.
    holdings: Mapped[dict[str, dict[str, int]]] = mapped_column(JSON, default=dict)
    #: The site cannot allocate (guaranteed stock of some arm below one); alerted once.
    closed: Mapped[bool] = mapped_column(Boolean, default=False)
    #: The depot could not fill the last shipment the rule asked for; alerted once.
    depot_short: Mapped[bool] = mapped_column(Boolean, default=False)


class ListCommitment(Base):
    """A published commitment to live slots: at go-live (the whole list), then one per
    extension (the added slots). The salt stays sealed until the release (SPEC §4.1)."""

    __tablename__ = "list_commitment"
    __table_args__ = (UniqueConstraint("list_id", "ordinal"),)

    id: Mapped[intpk]
    list_id: Mapped[int] = mapped_column(ForeignKey("allocation_list.id"))
    study_id: Mapped[int] = mapped_column(ForeignKey("study.id"), index=True)
    #: 1 for the go-live commitment, then 2, 3, … for extensions.
    ordinal: Mapped[int] = mapped_column(Integer)
    occasion: Mapped[str] = mapped_column(String(16))  # go-live | extension
    #: The slots covered: {stratum: [after_sequence, last_sequence]}.
    ranges: Mapped[dict[str, list[int]]] = mapped_column(JSON)
    slots: Mapped[int] = mapped_column(Integer)
    algorithm: Mapped[str] = mapped_column(String(32))
    #: SHA-256(salt || canonical list bytes), hex.
    commitment: Mapped[str] = mapped_column(String(64))
    #: The 32-byte salt, sealed under the live list's data key (hex inside).
    salt_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    made_by: Mapped[str] = mapped_column(String(64))
    made_at: Mapped[created]
    released_at: Mapped[dt.datetime | None]


class Shipment(Base):
    __tablename__ = "shipment"

    id: Mapped[intpk]
    study_id: Mapped[int] = mapped_column(ForeignKey("study.id"))
    site_code: Mapped[code]
    status: Mapped[ShipmentStatus] = mapped_column(_enum(ShipmentStatus, "shipment_status"))
    #: manual, or resupply when proposed by the blinded resupply rule.
    origin: Mapped[str] = mapped_column(String(16))
    is_test: Mapped[bool] = mapped_column(Boolean)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[created]
    dispatched_by: Mapped[str | None] = mapped_column(String(64))
    dispatched_at: Mapped[dt.datetime | None]
    received_by: Mapped[str | None] = mapped_column(String(64))
    received_at: Mapped[dt.datetime | None]
    #: The depot could not supply every kit the resupply rule asked for.
    depot_short: Mapped[bool] = mapped_column(Boolean, default=False)


class ShipmentLine(Base):
    """One kit of a shipment and what the site reported for it on receipt."""

    __tablename__ = "shipment_line"
    __table_args__ = (
        UniqueConstraint("shipment_id", "kit_id"),
        CheckConstraint(
            "outcome IN ('pending', 'received', 'damaged', 'missing', 'cancelled')",
            name="outcome",
        ),
    )

    id: Mapped[intpk]
    shipment_id: Mapped[int] = mapped_column(ForeignKey("shipment.id"), index=True)
    kit_id: Mapped[int] = mapped_column(ForeignKey("kit.id"), index=True)
    outcome: Mapped[str] = mapped_column(String(16), default="pending")
    checked_by: Mapped[str | None] = mapped_column(String(64))
    checked_at: Mapped[dt.datetime | None]
    #: What the pharmacist noted for a damaged or missing kit.
    remark: Mapped[str | None] = mapped_column(Text)


class Kit(Base):
    __tablename__ = "kit"

    id: Mapped[intpk]
    study_id: Mapped[int] = mapped_column(ForeignKey("study.id"), index=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    data_key_id: Mapped[str] = mapped_column(ForeignKey("data_key.id"))
    arm_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    status: Mapped[KitStatus] = mapped_column(_enum(KitStatus, "kit_status"))
    #: NULL while at the central depot.
    site_code: Mapped[str | None] = mapped_column(String(64))
    shipment_id: Mapped[int | None] = mapped_column(ForeignKey("shipment.id"))
    lot: Mapped[str | None] = mapped_column(String(64))
    expiry: Mapped[dt.date | None]
    is_test: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[created]

    __table_args__ = (Index("ix_kit_site_status", "study_id", "site_code", "status"),)


class RandomizationPause(Base):
    """A pause of randomization for a whole study (``site_code`` NULL) or one site."""

    __tablename__ = "randomization_pause"
    __table_args__ = (Index("ix_randomization_pause_open", "study_id", "resumed_at"),)

    id: Mapped[intpk]
    study_id: Mapped[int] = mapped_column(ForeignKey("study.id"))
    site_code: Mapped[str | None] = mapped_column(String(64))
    #: Shown to every user of the study, masked staff included.
    reason: Mapped[str] = mapped_column(Text)
    paused_by: Mapped[str] = mapped_column(String(64))
    paused_at: Mapped[created]
    resumed_by: Mapped[str | None] = mapped_column(String(64))
    resumed_at: Mapped[dt.datetime | None]


class Participant(Base):
    __tablename__ = "participant"
    __table_args__ = (UniqueConstraint("study_id", "screening_number", "is_test", "archived"),)

    id: Mapped[intpk]
    study_id: Mapped[int] = mapped_column(ForeignKey("study.id"))
    site_code: Mapped[code]
    screening_number: Mapped[str] = mapped_column(String(64))
    factors: Mapped[dict[str, str]] = mapped_column(JSON)
    eligibility: Mapped[dict[str, Any]] = mapped_column(JSON)
    failed_criteria: Mapped[list[str]] = mapped_column(JSON)
    stratum: Mapped[str] = mapped_column(String(200))
    status: Mapped[ParticipantStatus] = mapped_column(
        _enum(ParticipantStatus, "participant_status")
    )
    randomization_number: Mapped[str | None] = mapped_column(String(32))
    randomized_at: Mapped[dt.datetime | None]
    randomized_by: Mapped[str | None] = mapped_column(String(64))
    unblinded_at: Mapped[dt.datetime | None]
    unblinded_by: Mapped[str | None] = mapped_column(String(64))
    is_test: Mapped[bool] = mapped_column(Boolean)
    #: Test data is archived (kept, never mixed with live data) when the study goes live.
    archived: Mapped[bool] = mapped_column(Boolean, default=False)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[created]


class Dispensation(Base):
    __tablename__ = "dispensation"
    __table_args__ = (
        CheckConstraint(
            "status IN ('allocated', 'dispensed', 'replaced', 'set_aside')", name="status"
        ),
    )

    id: Mapped[intpk]
    participant_id: Mapped[int] = mapped_column(ForeignKey("participant.id"), index=True)
    visit: Mapped[code]
    kit_id: Mapped[int] = mapped_column(ForeignKey("kit.id"), unique=True)
    #: allocated, dispensed, replaced (damaged or lost), or set_aside (never handed out:
    #: the participant was withdrawn or randomized in error; the kit is quarantined).
    status: Mapped[str] = mapped_column(String(16))
    allocated_at: Mapped[created]
    allocated_by: Mapped[str] = mapped_column(String(64))
    dispensed_at: Mapped[dt.datetime | None]
    dispensed_by: Mapped[str | None] = mapped_column(String(64))
    replaces_id: Mapped[int | None] = mapped_column(ForeignKey("dispensation.id"))
    override_reason: Mapped[str | None] = mapped_column(Text)


class Unblinding(Base):
    __tablename__ = "unblinding"

    id: Mapped[intpk]
    participant_id: Mapped[int] = mapped_column(ForeignKey("participant.id"), index=True)
    actor: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(32))
    reason_category: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    at: Mapped[created]


class Notification(Base):
    """Outbox: every notification is kept here, whether or not mail delivery succeeds."""

    __tablename__ = "notification"

    id: Mapped[intpk]
    study_id: Mapped[int | None] = mapped_column(ForeignKey("study.id"))
    recipients: Mapped[list[str]] = mapped_column(JSON)
    subject: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[created]
    sent_at: Mapped[dt.datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    #: After a failed attempt, when the outbox worker tries again (backing off).
    next_attempt_at: Mapped[dt.datetime | None]


class IdempotencyRecord(Base):
    """A stored API answer, keyed by (user, Idempotency-Key), for safe retries."""

    __tablename__ = "idempotency_record"
    __table_args__ = (UniqueConstraint("user_id", "key"),)

    id: Mapped[intpk]
    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id"))
    key: Mapped[str] = mapped_column(String(255))
    endpoint: Mapped[str] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64))
    #: NULL while the first request is still running.
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_body: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[created]


class SignatureFailure(Base):
    """A wrong electronic signature, for the throttle shared by every worker and server."""

    __tablename__ = "signature_failure"
    __table_args__ = (Index("ix_signature_failure_key_failed_at", "key", "failed_at"),)

    id: Mapped[intpk]
    #: SHA-256 of the signer and their current password hash (a new password starts afresh).
    key: Mapped[str] = mapped_column(String(64))
    failed_at: Mapped[dt.datetime]


class AuditHead(Base):
    """Single row holding the chain head; locked to append events one at a time."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    digest: Mapped[str] = mapped_column(String(64))


class AuditEvent(Base):
    """One link of the tamper-evident chain. Rows are only ever inserted."""

    __tablename__ = "audit_event"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    #: Server UTC time as fixed-width ISO-8601 text ("2026-01-31T23:59:59.123456Z"), so the
    #: chain's canonical form is the stored bytes on every backend (and still sorts).
    occurred_at: Mapped[str] = mapped_column(String(27), index=True)
    actor: Mapped[str] = mapped_column(String(64), index=True)
    role: Mapped[str] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(64), index=True)
    object_type: Mapped[str | None] = mapped_column(String(32))
    object_id: Mapped[str | None] = mapped_column(String(64))
    study_code: Mapped[str | None] = mapped_column(String(32))
    participant_id: Mapped[int | None] = mapped_column(Integer, index=True)
    #: Canonical JSON text (sorted keys); never a plaintext arm.
    old_values: Mapped[str | None] = mapped_column(Text)
    new_values: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    prev_digest: Mapped[str] = mapped_column(String(64))
    #: HMAC-SHA256(audit key, prev_digest || canonical content), hex.
    digest: Mapped[str] = mapped_column(String(64))
