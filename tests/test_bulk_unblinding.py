"""Two-person bulk unblinding (SPEC §4.4): unblinded exports of live data need two people."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from randomizer import audit
from randomizer.models import AuditEvent, AuditHead, ListKind, Role, Study, User
from randomizer.services import lists
from randomizer.services.golive import go_live
from randomizer.services.kits import generate_kits
from tests.conftest import PASSWORD, Runner, login, make_study, make_user
from tests.engines import dispose_engines  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("dispose_engines")

STAT = audit.Actor("stat1", "statistician")
TWO_SIGNERS = {"stratify_by_site = true": "stratify_by_site = true\nbulk_export_signers = 2"}


@pytest.fixture
def live(session: Session, users: dict[str, User]) -> Study:
    """A live study of two signers, with a dummy and a live list and live kits."""
    study = session.scalar(sa.select(Study).where(Study.code == "TST"))
    assert study is not None
    lists.generate_list(session, study, kind=ListKind.DUMMY, actor=STAT, seed=bytes(32))
    lists.generate_list(session, study, kind=ListKind.LIVE, actor=STAT)
    session.commit()
    go_live(session, study, statistician="stat1", statistician_password=PASSWORD,
            admin="admin1", admin_password=PASSWORD)  # fmt: skip
    generate_kits(session, study, count=4, actor=STAT, site="S1")
    session.commit()
    make_user(session, "stat2", Role.STATISTICIAN)
    return study


@pytest.fixture
def study(session: Session) -> Study:
    return make_study(session, **TWO_SIGNERS)


def _head(session: Session) -> int:
    session.rollback()
    head = session.get(AuditHead, 1)
    return head.seq if head else 0


def _export(runner: Runner, out: Path, *signers: str, passwords: list[str] | None = None,
            what: str = "list") -> object:  # fmt: skip
    names: list[str] = []
    for option, name in zip(("--statistician", "--second"), signers, strict=False):
        names += [option, name]
    stdin = "".join(f"{p}\n" for p in (passwords or [PASSWORD] * len(signers)))
    return runner.invoke(what, "export", "TST", "--unblinded", "--out", str(out), *names,
                         input=stdin)  # fmt: skip


REFUSALS = [
    ("no signer", [], None, "needs 2 unblinded people"),
    ("one signer", ["stat1"], None, "needs 2 unblinded people"),
    ("the same person twice", ["stat1", "stat1"], None, "two different people"),
    ("a masked second signer", ["stat1", "admin1"], None, "statistician or pharmacist"),
    ("a wrong second password", ["stat1", "pharm1"], [PASSWORD, "not-the-password"],
     "does not match"),
    ("a masked first signer", ["inv1", "pharm1"], None, "statistician account"),
]  # fmt: skip


@pytest.mark.parametrize("what", ["list", "kits"])
@pytest.mark.parametrize(("case", "signers", "passwords", "words"), REFUSALS,
                         ids=[r[0] for r in REFUSALS])  # fmt: skip
def test_a_live_unblinded_export_without_two_valid_signers_changes_nothing(
    runner: Runner, session: Session, live: Study, tmp_path: Path,
    what: str, case: str, signers: list[str], passwords: list[str] | None, words: str,
) -> None:  # fmt: skip
    before = _head(session)
    folder = tmp_path / "exports"
    folder.mkdir()
    result = _export(runner, folder / "out.csv", *signers, passwords=passwords, what=what)
    assert result.exit_code == 1, result.output  # type: ignore[attr-defined]
    assert words in result.output  # type: ignore[attr-defined]
    assert list(folder.iterdir()) == []
    assert _head(session) == before


def test_a_locked_second_signer_is_refused(
    runner: Runner, session: Session, live: Study, tmp_path: Path
) -> None:
    pharmacist = session.scalar(sa.select(User).where(User.username == "pharm1"))
    assert pharmacist is not None
    pharmacist.locked_until = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)
    session.commit()
    before = _head(session)
    out = tmp_path / "out.csv"
    result = _export(runner, out, "stat1", "pharm1")
    assert result.exit_code == 1 and "locked" in result.output  # type: ignore[attr-defined]
    assert not out.exists() and not (tmp_path / ".out.csv.partial").exists()
    assert _head(session) == before


def _last(session: Session, action: str) -> dict[str, object]:
    session.rollback()
    event = session.scalars(
        sa.select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.seq.desc())
    ).first()
    assert event is not None and event.new_values is not None
    return dict(json.loads(event.new_values))


@pytest.mark.parametrize(("what", "action"), [("list", "list.export_unblinded"),
                                              ("kits", "kits.export_unblinded")])  # fmt: skip
def test_two_unblinded_signers_export_and_both_signatures_are_audited(
    runner: Runner, session: Session, live: Study, tmp_path: Path, what: str, action: str
) -> None:
    out = tmp_path / "out.csv"
    result = _export(runner, out, "stat1", "pharm1", what=what)
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    with out.open(encoding="utf-8", newline="") as handle:
        assert {row["arm"] for row in csv.DictReader(handle)} <= {"ACTIVEX", "PLACEBOX"}
    signatures = _last(session, action)["signatures"]
    assert [(s["username"], s["role"]) for s in signatures] == [  # type: ignore[attr-defined]
        ("stat1", "statistician"), ("pharm1", "pharmacist")]  # fmt: skip


def test_the_dummy_list_export_stays_single_signer(
    runner: Runner, session: Session, live: Study, tmp_path: Path
) -> None:
    out = tmp_path / "dummy.csv"
    result = runner.invoke("list", "export", "TST", "--dummy", "--unblinded", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert out.exists()


def test_the_export_page_asks_for_a_second_signature_for_the_live_list(
    client: FlaskClient, session: Session, live: Study
) -> None:
    login(client, "stat1")
    page = client.get("/lists/TST/live/export").get_data(as_text=True)
    assert 'name="second"' in page and 'name="second_password"' in page
    before = _head(session)
    alone = client.post("/lists/TST/live/export", data={"password": PASSWORD})
    assert alone.status_code == 200 and alone.mimetype == "text/html"
    masked = client.post("/lists/TST/live/export", data={
        "password": PASSWORD, "second": "inv1", "second_password": PASSWORD})  # fmt: skip
    assert masked.status_code == 403 and b"ACTIVEX" not in masked.data
    assert _head(session) == before


def test_the_export_page_downloads_the_live_list_with_two_signatures(
    client: FlaskClient, session: Session, live: Study
) -> None:
    login(client, "stat1")
    response = client.post("/lists/TST/live/export", data={
        "password": PASSWORD, "second": "stat2", "second_password": PASSWORD})  # fmt: skip
    assert response.status_code == 200 and response.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(response.data.decode("utf-8"))))
    response.close()
    assert rows and "arm" in rows[0]
    signers = [s["username"] for s in _last(session, "list.export_unblinded")["signatures"]]  # type: ignore[attr-defined]
    assert signers == ["stat1", "stat2"]
