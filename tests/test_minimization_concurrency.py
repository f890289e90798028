"""Simultaneous randomizations in a minimization study: the margins are read under one lock."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from sqlalchemy import select

from randomizer import audit
from randomizer.db import db
from randomizer.instance import secrets_of
from randomizer.models import AllocationSlot, ListKind, Participant, User
from randomizer.services import enrollment
from randomizer.services.list_verify import verify_list
from randomizer.transaction import run_in_transaction
from tests.conftest import PASSWORD
from tests.enrollment_support import register
from tests.minimization_support import make_minimization_study, prepare_minimization
from tests.test_concurrency import in_threads

PER_STRATUM = 4


@pytest.fixture
def app_config():
    return {"SQLALCHEMY_ENGINE_OPTIONS": {"pool_size": 20, "max_overflow": 5}}


@pytest.fixture
def study(session):
    return make_minimization_study(session)


def test_concurrent_randomizations_leave_a_history_that_verify_accepts(app, session, study, users):
    prepare_minimization(session, study, kits=PER_STRATUM * 6)
    plan = []
    for site, user in (("S1", "investigator"), ("S2", "investigator2")):
        for grade in ("low", "high"):
            for n in range(PER_STRATUM):
                p = register(session, study, users[user], f"{site}-{grade}-{n}", site=site,
                             grade=grade)  # fmt: skip
                plan.append((p.id, users[user].id))
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
    slots = session.scalars(select(AllocationSlot)).all()
    assert sorted(s.participant_id for s in slots) == sorted(p for p, _ in plan)
    assert len({r.randomization_number for r in results}) == len(plan)
    report = verify_list(session, study, kind=ListKind.DUMMY, actor=audit.SYSTEM)
    assert report.ok, report.problems
    assert report.slots == len(plan)
    assert audit.verify(session, secrets_of(session).audit_key).ok
