"""The SDTM DM dataset: refused before the database lock, then exactly SPEC §4.1."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from randomizer.models import Dispensation, Participant, ParticipantStatus, Study, User
from randomizer.services import enrollment
from randomizer.services.kits import confirm_dispensing
from randomizer.services.users import actor_of
from tests.conftest import PASSWORD, Runner, login, make_study
from tests.enrollment_support import ELIGIBLE, actions
from tests.live_support import enrol, lock, make_live

PLACEBO = "Placebo (vehículo de infusión)"
HEADER = [
    "STUDYID", "DOMAIN", "USUBJID", "SUBJID", "SITEID", "ARMCD", "ARM", "ACTARMCD", "ACTARM",
    "RFSTDTC", "RFXSTDTC", "GRADE",
]  # fmt: skip


@pytest.fixture
def study(session: Session) -> Study:
    return make_study(session, **{"Placebo product X": PLACEBO})


@pytest.fixture
def scripted(session: Session, study: Study, users: dict[str, User]) -> dict[str, Participant]:
    """A live study: treated, untreated, withdrawn, never randomized and screen-failed."""
    make_live(session, study)
    inv, inv2 = users["investigator"], users["investigator2"]
    made = {
        "treated": enrol(session, study, inv, "SCR-Ñandú-1", grade="high"),
        "untreated": enrol(session, study, inv, "SCR-2"),
        "withdrawn": enrol(session, study, inv2, "SCR-3", site="S2"),
        "waiting": enrol(session, study, inv, "SCR-4", randomize=False),
        "failed": enrol(session, study, inv2, "SCR-5", site="S2",
                        answers={**ELIGIBLE, "pregnant": True}, randomize=False),
    }  # fmt: skip
    held = session.scalars(
        select(Dispensation).where(Dispensation.participant_id == made["treated"].id)
    ).one()
    confirm_dispensing(session, study, dispensation=held, actor=actor_of(users["pharmacist"]))
    enrollment.withdraw(session, made["withdrawn"], actor=actor_of(inv2), reason="moved")
    session.commit()
    return made


def _export(runner: Runner, out: Path) -> Any:
    return runner.invoke("export", "sdtm-dm", "TST", "--out", str(out))


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_before_the_lock_the_export_exits_1_and_writes_no_file(
    runner: Runner, session: Session, scripted: dict[str, Participant], tmp_path: Path
) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    result = _export(runner, folder / "dm.csv")
    assert result.exit_code == 1
    assert "is not locked" in result.output
    assert list(folder.iterdir()) == []
    assert actions(session, "export.sdtm_dm") == []


@pytest.fixture
def dataset(
    runner: Runner, session: Session, study: Study, scripted: dict[str, Participant], tmp_path: Path
) -> dict[str, dict[str, str]]:
    lock(session, study)
    out = tmp_path / "dm.csv"
    result = _export(runner, out)
    assert result.exit_code == 0, result.output
    assert out.read_text(encoding="utf-8").splitlines()[0] == ",".join(HEADER)
    return {row["SUBJID"]: row for row in _read(out)}


def _subject(p: Participant) -> str:
    return p.randomization_number or p.screening_number


def test_one_row_per_registered_live_participant_with_spec_identifiers(
    dataset: dict[str, dict[str, str]], scripted: dict[str, Participant]
) -> None:
    assert sorted(dataset) == sorted(_subject(p) for p in scripted.values())
    failed = dataset["SCR-5"]
    assert (failed["STUDYID"], failed["DOMAIN"], failed["USUBJID"], failed["SITEID"]) == (
        "TST", "DM", "TST-S2-SCR-5", "S2",
    )  # fmt: skip
    treated = dataset[_subject(scripted["treated"])]
    assert treated["USUBJID"] == f"TST-S1-{scripted['treated'].randomization_number}"
    assert treated["GRADE"] == "high"


def test_codes_for_participants_never_assigned_or_treated(
    dataset: dict[str, dict[str, str]], scripted: dict[str, Participant]
) -> None:
    def codes(name: str) -> tuple[str, ...]:
        row = dataset[_subject(scripted[name])]
        return row["ARMCD"], row["ARM"], row["ACTARMCD"], row["ACTARM"], row["RFSTDTC"]

    assert codes("failed") == ("SCRNFAIL", "Screen Failure", "NOTTRT", "Not Treated", "")
    assert codes("waiting") == ("NOTASSGN", "Not Assigned", "NOTTRT", "Not Treated", "")
    assert codes("untreated")[2:4] == ("NOTTRT", "Not Treated")
    assert codes("untreated")[0] in ("ACTIVEX", "PLACEBOX")


def test_armcd_agrees_with_the_unblinded_list_and_actarm_with_the_dispensed_kit(
    runner: Runner,
    session: Session,
    dataset: dict[str, dict[str, str]],
    scripted: dict[str, Participant],
    tmp_path: Path,
) -> None:
    listed = tmp_path / "list.csv"
    assert (
        runner.invoke("list", "export", "TST", "--out", str(listed), "--unblinded").exit_code == 0
    )
    arms = {r["randomization_number"]: r["arm"] for r in _read(listed)}
    randomized = [p for p in scripted.values() if p.randomization_number]
    assert len(randomized) == 3
    for p in randomized:
        assert dataset[_subject(p)]["ARMCD"] == arms[_subject(p)]
    names = {"ACTIVEX": "Active product X", "PLACEBOX": PLACEBO}
    treated = dataset[_subject(scripted["treated"])]
    assert (treated["ACTARMCD"], treated["ACTARM"]) == (treated["ARMCD"], names[treated["ARMCD"]])
    assert treated["ARM"] == names[treated["ARMCD"]]


def test_reference_times_are_iso_8601_utc(
    session: Session, dataset: dict[str, dict[str, str]], scripted: dict[str, Participant]
) -> None:
    p = session.get_one(Participant, scripted["treated"].id)
    held = session.scalars(select(Dispensation).where(Dispensation.participant_id == p.id)).one()
    row = dataset[_subject(p)]
    assert p.randomized_at is not None and held.dispensed_at is not None
    assert row["RFSTDTC"] == p.randomized_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert row["RFXSTDTC"] == held.dispensed_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert dataset[_subject(scripted["untreated"])]["RFXSTDTC"] == ""


def test_a_withdrawn_participant_keeps_the_arm_and_the_export_is_audited(
    session: Session, dataset: dict[str, dict[str, str]], scripted: dict[str, Participant]
) -> None:
    assert scripted["withdrawn"].status is ParticipantStatus.WITHDRAWN
    assert dataset[_subject(scripted["withdrawn"])]["ARMCD"] in ("ACTIVEX", "PLACEBOX")
    (event,) = actions(session, "export.sdtm_dm")
    assert json.loads(event.new_values or "{}")["rows"] == 5
    assert "ACTIVEX" not in (event.new_values or "") and "PLACEBOX" not in (event.new_values or "")


def test_archived_test_participants_are_not_in_the_dataset(
    runner: Runner, session: Session, study: Study, scripted: dict[str, Participant], tmp_path: Path
) -> None:
    session.add(Participant(
        study_id=study.id, site_code="S1", screening_number="OLD-TEST", factors={"grade": "low"},
        eligibility={}, failed_criteria=[], stratum="S1|grade=low",
        status=ParticipantStatus.ELIGIBLE, is_test=True, archived=True, created_by="inv1",
    ))  # fmt: skip
    session.commit()
    lock(session, study)
    out = tmp_path / "dm.csv"
    assert _export(runner, out).exit_code == 0
    assert "OLD-TEST" not in out.read_text(encoding="utf-8")


# --- the page --------------------------------------------------------------------------


def test_the_statistician_downloads_the_dataset_after_signing(
    client: FlaskClient, session: Session, study: Study, scripted: dict[str, Participant]
) -> None:
    lock(session, study)
    login(client, "stat1")
    refused = client.post("/studies/TST/sdtm-dm", data={"password": "not-my-password"})
    assert refused.status_code == 401 and actions(session, "export.sdtm_dm") == []
    response = client.post("/studies/TST/sdtm-dm", data={"password": PASSWORD})
    assert response.status_code == 200 and response.mimetype == "text/csv"
    lines = response.get_data(as_text=True).splitlines()
    response.close()  # what the WSGI server does: closes the spooled file
    assert lines[0] == ",".join(HEADER) and len(lines) == 6
    assert [e.actor for e in actions(session, "export.sdtm_dm")] == ["stat1"]


def test_the_page_refuses_before_the_lock(
    client: FlaskClient, session: Session, scripted: dict[str, Participant]
) -> None:
    client.get("/lang/en")
    login(client, "stat1")
    response = client.post("/studies/TST/sdtm-dm", data={"password": PASSWORD})
    assert response.status_code == 409
    assert "The dataset exists only after the database lock." in response.text
    assert actions(session, "export.sdtm_dm") == []


@pytest.mark.parametrize("username", ["admin1", "inv1", "pharm1", "assess1"])
def test_only_the_statistician_may_download_the_dataset(
    client: FlaskClient, session: Session, study: Study, scripted: dict[str, Participant],
    username: str,
) -> None:  # fmt: skip
    lock(session, study)
    login(client, username)
    assert client.post("/studies/TST/sdtm-dm", data={"password": PASSWORD}).status_code == 403
    assert actions(session, "export.sdtm_dm") == []
