"""Simultaneous randomizations from many threads, each with its own app context and session."""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from randomizer import audit
from randomizer.db import db
from randomizer.errors import RandomizerError
from randomizer.instance import secrets_of
from randomizer.models import (
    AllocationList,
    AllocationSlot,
    AuditEvent,
    Dispensation,
    Kit,
    Participant,
    ParticipantStatus,
    SlotStatus,
    User,
)
from randomizer.services import enrollment
from randomizer.services.keyring import sealer_by_key_id
from randomizer.services.kits import kit_arm
from randomizer.services.lists import slot_arm
from randomizer.transaction import is_retryable, run_in_transaction
from tests.conftest import PASSWORD
from tests.enrollment_support import ELIGIBLE, call, prepare_supply, register, token_for

STRATUM = "S1|grade=low"
SUCCESSES = 52
WRONG_PASSWORD = 4
INELIGIBLE = 4


def in_threads(count: int, task: Callable[[int], Any]) -> list[Any]:
    """Run ``task(i)`` in ``count`` threads released together; results (or exceptions) by i."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = task(i)
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    return results


@pytest.fixture
def app_config():
    # Enough connections that every thread holds one while it waits for the lock.
    return {"SQLALCHEMY_ENGINE_OPTIONS": {"pool_size": 70, "max_overflow": 10}}


def test_concurrent_randomizations_use_slots_in_order_and_distinct_kits(app, session, study, users):
    prepare_supply(session, study, per_stratum=SUCCESSES + 4, kits=SUCCESSES * 2, sites=("S1",))
    inv = users["investigator"]
    plan: list[tuple[int, str]] = []
    for n in range(SUCCESSES):
        plan.append((register(session, study, inv, f"OK-{n}").id, PASSWORD))
    for n in range(WRONG_PASSWORD):
        plan.append((register(session, study, inv, f"PW-{n}").id, "a-wrong-password"))
    for n in range(INELIGIBLE):
        answers = {**ELIGIBLE, "age": 12}
        plan.append((register(session, study, inv, f"NE-{n}", answers=answers).id, PASSWORD))
    inv_id = inv.id
    session.rollback()  # end the test's transaction: on SQLite it would hold the write lock

    def task(i: int) -> Any:
        pid, password = plan[i]
        with app.app_context():
            s = db.session()
            try:
                return run_in_transaction(
                    s,
                    lambda: enrollment.randomize(
                        s, s.get_one(Participant, pid), signer=s.get_one(User, inv_id),
                        password=password,
                    ),
                )  # fmt: skip
            finally:
                db.session.remove()

    results = in_threads(len(plan), task)

    outcomes = Counter(type(r).__name__ for r in results)
    assert outcomes == {"Randomization": SUCCESSES, "SignatureInvalid": WRONG_PASSWORD,
                        "NotEligible": INELIGIBLE}, results  # fmt: skip
    session.expire_all()
    used = session.scalars(
        select(AllocationSlot)
        .where(AllocationSlot.stratum == STRATUM, AllocationSlot.status == SlotStatus.USED)
        .order_by(AllocationSlot.sequence)
    ).all()
    assert [s.sequence for s in used] == list(range(1, SUCCESSES + 1))
    # In order: the earlier randomization took the lower slot.
    by_time = sorted(used, key=lambda s: s.used_at)
    assert [s.sequence for s in by_time] == list(range(1, SUCCESSES + 1))
    winners = {r.participant_id: r for r in results if isinstance(r, enrollment.Randomization)}
    assert {s.participant_id for s in used} == set(winners)
    kit_codes = [r.kit_code for r in winners.values()]
    assert len(set(kit_codes)) == SUCCESSES
    dispensations = session.scalars(select(Dispensation)).all()
    assert len(dispensations) == SUCCESSES
    assert {d.participant_id for d in dispensations} == set(winners)
    _assert_kit_arms_match_slot_arms(session, study, used)
    events = session.scalars(
        select(AuditEvent).where(AuditEvent.action == "participant.randomize")
    ).all()
    assert sorted(e.participant_id for e in events) == sorted(winners)
    for pid, password in plan:
        participant = session.get_one(Participant, pid)
        if pid in winners:
            assert participant.randomization_number == winners[pid].randomization_number
            continue
        assert participant.randomization_number is None
        assert participant.status in (ParticipantStatus.ELIGIBLE, ParticipantStatus.SCREEN_FAILED)
        left = session.scalars(select(AuditEvent).where(AuditEvent.participant_id == pid)).all()
        assert [e.action for e in left] == ["participant.register"], password
    assert audit.verify(session, secrets_of(session).audit_key).ok


def _assert_kit_arms_match_slot_arms(session, study, slots) -> None:
    allocation_list = session.get_one(AllocationList, slots[0].list_id)
    sealer = sealer_by_key_id(session, study, allocation_list.data_key_id)
    for slot in slots:
        kit = session.scalars(
            select(Kit)
            .join(Dispensation, Dispensation.kit_id == Kit.id)
            .where(Dispensation.participant_id == slot.participant_id)
        ).one()
        assert kit_arm(session, study, kit) == slot_arm(session, study, slot, sealer)


def _randomize_over_api(app, token: str, pid: int, key: str) -> tuple[int, Any]:
    client = app.test_client()
    body = {"signature": {"password": PASSWORD}}
    response = call(client, "POST", f"/api/v1/participants/{pid}/randomize", token, body, key=key)
    return response.status_code, response.json


def test_parallel_randomize_of_one_participant_allocates_once(app, session, study, users):
    prepare_supply(session, study)
    token = token_for(session, users["investigator"])
    pid = register(session, study, users["investigator"], "ONE").id
    session.rollback()

    results = in_threads(20, lambda i: _randomize_over_api(app, token, pid, str(uuid.uuid4())))

    statuses = Counter(status for status, _ in results)
    assert statuses == {201: 1, 409: 19}, results
    assert all(body["type"].endswith("already-randomized") for s, body in results if s == 409)
    _assert_one_allocation(session, pid)


def test_parallel_retries_with_one_key_give_one_answer(app, session, study, users):
    prepare_supply(session, study)
    token = token_for(session, users["investigator"])
    pid = register(session, study, users["investigator"], "ONE").id
    session.rollback()
    key = str(uuid.uuid4())

    results = in_threads(20, lambda i: _randomize_over_api(app, token, pid, key))

    # Each duplicate waits for the first request's transaction, then replays its answer.
    assert {status for status, _ in results} == {201}, results
    assert all(body == results[0][1] for _, body in results)
    _assert_one_allocation(session, pid)


def _assert_one_allocation(session, pid: int) -> None:
    session.expire_all()
    assert len(session.scalars(select(Dispensation)).all()) == 1
    slots = session.scalars(select(AllocationSlot).where(AllocationSlot.status == SlotStatus.USED))
    assert [s.participant_id for s in slots] == [pid]
    events = session.scalars(
        select(AuditEvent).where(AuditEvent.action == "participant.randomize")
    ).all()
    assert len(events) == 1
    assert "ACTIVEX" not in json.dumps([e.new_values for e in events])


class _Transient(Exception):
    sqlstate = "40P01"  # deadlock detected


def test_transient_conflicts_rerun_the_whole_transaction(session):
    calls: list[int] = []

    def work() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise OperationalError("SELECT 1", {}, _Transient())
        return "done"

    assert run_in_transaction(session, work) == "done"
    assert len(calls) == 3


def test_retries_are_bounded(session):
    calls: list[int] = []

    def work() -> None:
        calls.append(1)
        raise OperationalError("SELECT 1", {}, _Transient())

    with pytest.raises(OperationalError):
        run_in_transaction(session, work, attempts=4)
    assert len(calls) == 4


def test_domain_refusals_are_not_retried(session):
    calls: list[int] = []

    def work() -> None:
        calls.append(1)
        raise RandomizerError("no")

    with pytest.raises(RandomizerError):
        run_in_transaction(session, work)
    assert len(calls) == 1


@pytest.mark.parametrize(
    ("orig", "expected"),
    [
        (_Transient(), True),
        (type("Serialization", (Exception,), {"sqlstate": "40001"})(), True),
        (type("Unique", (Exception,), {"sqlstate": "23505"})(), False),
    ],
)
def test_which_database_errors_are_transient(orig, expected):
    assert is_retryable(OperationalError("x", {}, orig)) is expected


def test_sqlite_busy_is_transient():
    import sqlite3

    assert is_retryable(OperationalError("x", {}, sqlite3.OperationalError("database is locked")))
    assert not is_retryable(OperationalError("x", {}, sqlite3.OperationalError("no such table")))


def test_concurrent_randomizations_across_two_sites_and_two_strata_at_once(
    app, session, study, users
):
    """Sites and strata take their own locks: simultaneous randomizations in all four strata
    of two sites still take each stratum's slots in order, with distinct kits and one
    event each."""
    per = 10
    prepare_supply(session, study, per_stratum=per + 4, kits=per * 6, sites=("S1", "S2"))
    plan = []
    for site, user in (("S1", "investigator"), ("S2", "investigator2")):
        for grade in ("low", "high"):
            for n in range(per):
                number = f"{site}-{grade}-{n}"
                plan.append((register(session, study, users[user], number, site=site,
                                      grade=grade).id, users[user].id))  # fmt: skip
    session.rollback()

    def task(i: int) -> Any:
        pid, user_id = plan[i]
        with app.app_context():
            s = db.session()
            try:
                return run_in_transaction(
                    s,
                    lambda: enrollment.randomize(
                        s, s.get_one(Participant, pid), signer=s.get_one(User, user_id),
                        password=PASSWORD,
                    ),
                )  # fmt: skip
            finally:
                db.session.remove()

    results = in_threads(len(plan), task)
    assert Counter(type(r).__name__ for r in results) == {"Randomization": len(plan)}, results
    session.expire_all()
    for site in ("S1", "S2"):
        for grade in ("low", "high"):
            used = session.scalars(
                select(AllocationSlot).where(
                    AllocationSlot.stratum == f"{site}|grade={grade}",
                    AllocationSlot.status == SlotStatus.USED,
                )
            ).all()
            assert sorted(s.sequence for s in used) == list(range(1, per + 1))
            _assert_kit_arms_match_slot_arms(session, study, used)
    assert len({r.kit_code for r in results}) == len(plan)
    events = session.scalars(
        select(AuditEvent).where(AuditEvent.action == "participant.randomize")
    ).all()
    assert sorted(e.participant_id for e in events) == sorted(p for p, _u in plan)
    assert audit.verify(session, secrets_of(session).audit_key).ok
