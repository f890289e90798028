"""The commitment to the live list at go-live, and its release after the lock (SPEC §4.1)."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from randomizer import audit
from randomizer.models import AllocationList, AuditEvent, ListCommitment, ListKind, Study, User
from randomizer.services.commitment import extend_list
from tests.conftest import Runner, login
from tests.engines import dispose_engines  # noqa: F401  (fixture)
from tests.live_support import lock, make_live

pytestmark = pytest.mark.usefixtures("dispose_engines")
KEYS = ["study", "algorithm", "commitment", "slots", "made_at"]
HEADER = b"stratum,block,block_size,sequence,randomization_number,arm\n"


@pytest.fixture
def live(session: Session, study: Study, users: dict[str, User]) -> Study:
    return make_live(session, study, per_stratum=6)


@pytest.fixture
def released(runner: Runner, session: Session, live: Study, tmp_path: Path) -> Path:
    """The live study locked and its list released into a folder."""
    lock(session, live)
    folder = tmp_path / "release"
    result = runner.invoke("list", "release", "TST", "--out", str(folder))
    assert result.exit_code == 0, result.output
    return folder


def _published(runner: Runner) -> dict[str, Any]:
    result = runner.invoke("list", "commitment", "TST")
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.output))


def _matches(folder: Path, list_name: str, json_name: str) -> bool:
    """The outsider's check, with hashlib alone on the files written."""
    salt = bytes.fromhex(json.loads((folder / json_name).read_text("utf-8"))["salt"])
    commitment = json.loads((folder / json_name).read_text("utf-8"))["commitment"]
    return hashlib.sha256(salt + (folder / list_name).read_bytes()).hexdigest() == commitment


def _live_slots(session: Session) -> int:
    session.rollback()
    row = session.scalars(sa.select(AllocationList).where(AllocationList.kind == ListKind.LIVE))
    return sum(row.one().params["slots"].values())


def _go_live_event(session: Session) -> dict[str, Any]:
    session.rollback()
    event = session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "study.go_live"))
    return dict(json.loads(event.one().new_values or "{}"))


def test_go_live_records_the_commitment_in_its_audit_event(
    runner: Runner, session: Session, live: Study
) -> None:
    published = _published(runner)
    assert list(published) == KEYS  # no salt before the release
    assert published["algorithm"] == "sha256-salted-v1"
    assert published["slots"] == _live_slots(session)
    event = _go_live_event(session)
    assert event["commitment"] == published["commitment"]
    assert event["committed_slots"] == published["slots"]


def test_list_commitment_writes_the_json_file(runner: Runner, live: Study, tmp_path: Path) -> None:
    out = tmp_path / "commitment.json"
    result = runner.invoke("list", "commitment", "TST", "--out", str(out))
    assert result.exit_code == 0
    assert json.loads(out.read_text("utf-8")) == json.loads(result.output)


def test_there_is_no_commitment_before_go_live(runner: Runner, study: Study) -> None:
    result = runner.invoke("list", "commitment", "TST")
    assert result.exit_code == 1 and "made at go-live" in result.output


def test_the_salt_is_never_stored_in_plaintext(session: Session, released: Path) -> None:
    salt = json.loads((released / "commitment.json").read_text("utf-8"))["salt"]
    session.rollback()
    (row,) = session.scalars(sa.select(ListCommitment))
    assert bytes.fromhex(salt) not in row.salt_sealed and salt.encode() not in row.salt_sealed
    texts = session.scalars(sa.select(AuditEvent.new_values)).all()
    assert not any(salt in (text or "") for text in texts)


def test_release_is_refused_before_the_database_lock_and_writes_nothing(
    runner: Runner, session: Session, live: Study, tmp_path: Path
) -> None:
    folder = tmp_path / "release"
    result = runner.invoke("list", "release", "TST", "--out", str(folder))
    assert result.exit_code == 1 and "only after the database lock" in result.output
    assert not folder.exists()
    session.rollback()
    assert (
        session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "list.release")).all()
        == []
    )


def test_the_released_list_checks_against_the_commitment_with_hashlib_alone(
    runner: Runner, released: Path
) -> None:
    document = json.loads((released / "commitment.json").read_text("utf-8"))
    assert document == {**_published(runner), "salt": document["salt"]}
    assert _matches(released, "list.csv", "commitment.json")


def test_a_list_changed_in_one_row_or_another_salt_fails_the_check(released: Path) -> None:
    original = (released / "list.csv").read_bytes()
    lines = original.split(b"\n")
    swapped = b"ACTIVEX" if lines[1].endswith(b"PLACEBOX") else b"PLACEBOX"
    lines[1] = lines[1].rsplit(b",", 1)[0] + b"," + swapped
    (released / "list.csv").write_bytes(b"\n".join(lines))
    assert not _matches(released, "list.csv", "commitment.json")
    (released / "list.csv").write_bytes(original)
    document = json.loads((released / "commitment.json").read_text("utf-8"))
    document["salt"] = "00" * 32
    (released / "commitment.json").write_text(json.dumps(document), "utf-8")
    assert not _matches(released, "list.csv", "commitment.json")


def test_the_released_list_is_the_canonical_csv(session: Session, released: Path) -> None:
    data = (released / "list.csv").read_bytes()
    assert data.startswith(HEADER) and b"\r" not in data and data.endswith(b"\n")
    rows = list(csv.DictReader(data.decode("utf-8").splitlines()))
    assert len(rows) == _live_slots(session)
    order = [(r["stratum"], int(r["sequence"])) for r in rows]
    assert order == sorted(order)
    assert {r["arm"] for r in rows} == {"ACTIVEX", "PLACEBOX"}


def test_an_extension_after_go_live_gets_its_own_commitment_and_release(
    runner: Runner, session: Session, live: Study, tmp_path: Path
) -> None:
    added = extend_list(session, live, kind=ListKind.LIVE, stratum="S1|grade=low", slots=3,
                        actor=audit.Actor("stat1", "statistician"))  # fmt: skip
    session.commit()
    (extension,) = _published(runner)["extensions"]
    assert extension["slots"] == added and extension["stratum"] == "S1|grade=low"
    lock(session, live)
    runner.invoke("list", "release", "TST", "--out", str(tmp_path))
    assert _matches(tmp_path, "extension-1.csv", "extension-1-commitment.json")
    assert _matches(tmp_path, "list.csv", "commitment.json")
    rows = (tmp_path / "extension-1.csv").read_bytes().count(b"\n") - 1
    assert rows == added


@pytest.mark.parametrize("username", ["stat1", "admin1"])
def test_the_live_list_page_shows_the_commitment_to_paste_into_the_registry(
    client: FlaskClient, session: Session, live: Study, username: str
) -> None:
    (row,) = session.scalars(sa.select(ListCommitment))
    login(client, username)
    page = client.get("/lists/TST/live").get_data(as_text=True)
    assert 'id="commitment"' in page and row.commitment in page and "<blockquote>" in page
