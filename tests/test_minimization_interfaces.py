"""A minimization study end to end: API and pages randomize, the CLI shows, verifies, simulates."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from randomizer.models import AllocationSlot, ListKind, Participant
from randomizer.services import lists
from tests.conftest import PASSWORD, login
from tests.enrollment_support import ELIGIBLE, call, register, token_for
from tests.minimization_support import make_minimization_study, prepare_minimization

ARMS = ("ACTIVEX", "PLACEBOX")


@pytest.fixture
def study(session):
    return make_minimization_study(session)


@pytest.fixture
def trial(session, study, users):
    prepare_minimization(session, study)
    return study


def _api_randomize(client, token, number, site="S1", grade="low"):
    body = {"site": site, "screening_number": number, "factors": {"grade": grade},
            "eligibility": dict(ELIGIBLE)}  # fmt: skip
    made = call(client, "POST", "/api/v1/studies/TST/participants", token, body, key=None)
    assert made.status_code == 201, made.json
    pid = made.json["participant_id"]
    body = {"signature": {"password": PASSWORD}}
    return call(client, "POST", f"/api/v1/participants/{pid}/randomize", token, body)


def test_api_randomizes_a_minimization_study_without_showing_an_arm(client, session, trial, users):
    token = token_for(session, users["investigator"])
    answers = [_api_randomize(client, token, f"A{i}", grade=g) for i, g in
               enumerate(["low", "high", "low", "low"])]  # fmt: skip
    assert [a.status_code for a in answers] == [201] * 4
    for a in answers:
        assert set(a.json) == {"participant_id", "randomization_number", "kit_code",
                               "randomized_at"}  # fmt: skip
        assert not any(arm in a.get_data(as_text=True) for arm in ARMS)
    assert answers[0].json["randomization_number"] == "T01-0001"
    assert answers[2].json["randomization_number"] == "T01-0002"
    shown = call(client, "GET", f"/api/v1/participants/{answers[0].json['participant_id']}",
                 token)  # fmt: skip
    assert shown.status_code == 200 and not any(arm in shown.get_data(as_text=True) for arm in ARMS)
    from randomizer.services.list_verify import verify_list
    from tests.test_minimization_service import STAT

    assert verify_list(session, trial, kind=ListKind.DUMMY, actor=STAT).ok


def test_page_randomizes_a_minimization_study_to_a_blinded_confirmation(
    client, session, trial, users
):
    client.get("/lang/en")
    assert login(client, "inv1").status_code == 302
    p = register(session, trial, users["investigator"], "P1")
    page = client.get(f"/participants/{p.id}/randomize").get_data(as_text=True)
    token = re.search(r'name="submission" type="hidden" value="([0-9a-f]+)"', page)
    assert token
    response = client.post(f"/participants/{p.id}/randomize",
                           data={"password": PASSWORD, "submission": token.group(1)})  # fmt: skip
    assert response.status_code == 302
    html = client.get(response.location).get_data(as_text=True)
    slot = session.scalars(
        select(AllocationSlot).where(AllocationSlot.participant_id == p.id)
    ).one()
    assert slot.randomization_number in html
    assert not any(arm in html for arm in ARMS)
    assert lists.participant_arm(session, trial, p.id) in ARMS


def test_statistician_page_describes_the_allocations_so_far(client, session, trial, users):
    register(session, trial, users["investigator"], "P1")
    client.get("/lang/en")
    assert login(client, "stat1").status_code == 302
    html = client.get("/lists/TST/dummy").get_data(as_text=True)
    assert "minimization" in html and "Allocations so far" in html
    assert "list simulate TST" in html
    assert "Extend a stratum" not in html
    verified = client.post("/lists/TST/dummy/verify").get_data(as_text=True)
    assert "every assignment was replayed from the sealed seed" in verified
    assert "The stored list is exactly what was recorded" in verified


def test_cli_generate_show_verify_and_export_describe_the_record(runner, session, study, tmp_path):
    made = runner.invoke("list", "generate", "TST", "--dummy")
    assert made.exit_code == 0, made.output
    assert "minimization record" in made.output
    refused = runner.invoke("list", "generate", "TST", "--per-stratum", "4")
    assert refused.exit_code != 0 and "no slots made in advance" in refused.output
    shown = runner.invoke("list", "show", "TST", "--dummy")
    assert shown.exit_code == 0, shown.output
    assert "allocations made so far: 0" in shown.output
    assert "factors: site (weight 1), grade (weight 2); measure: range; p_best: 4/5" in shown.output
    verified = runner.invoke("list", "verify", "TST", "--dummy")
    assert verified.exit_code == 0 and "minimization record, 0 assignments" in verified.output
    out = tmp_path / "list.csv"
    exported = runner.invoke("list", "export", "TST", "--dummy", "--out", str(out))
    assert exported.exit_code == 0
    assert out.read_text().splitlines() == [
        "stratum,block,block_size,sequence,randomization_number,status"
    ]
    extended = runner.invoke("list", "extend", "TST", "--dummy", "--stratum", "S1|grade=low",
                             "--slots", "4")  # fmt: skip
    assert extended.exit_code != 0 and "minimization" in extended.output


def test_cli_verify_exits_1_when_a_recorded_factor_was_altered(runner, session, trial, users):
    p = register(session, trial, users["investigator"], "P1")
    from randomizer.services import enrollment

    enrollment.randomize(session, p, signer=users["investigator"], password=PASSWORD)
    session.commit()
    assert runner.invoke("list", "verify", "TST", "--dummy").exit_code == 0
    session.execute(
        Participant.__table__.update().where(Participant.id == p.id).values(site_code="S2")
    )
    session.commit()
    failed = runner.invoke("list", "verify", "TST", "--dummy")
    assert failed.exit_code == 1
    assert "factors differ" in failed.output


def test_cli_simulate_prints_both_methods_for_the_same_factors(runner, study):
    result = runner.invoke("list", "simulate", "TST", "--participants", "20", "--runs", "20",
                           "--seed", "00" * 32)  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "balancing factors site × grade" in lines[0]
    assert lines[3].startswith("minimization (p_best 0.8, range)\t")
    assert [line.split("\t")[0] for line in lines[4:7]] == [
        "permuted blocks of 2", "permuted blocks of 4", "permuted blocks of 2 and 4"
    ]  # fmt: skip
    again = runner.invoke("list", "simulate", "TST", "--participants", "20", "--runs", "20",
                          "--seed", "00" * 32)  # fmt: skip
    assert again.stdout == result.stdout


@pytest.mark.parametrize(
    ("option", "value"), [("--p-best", "1.5"), ("--blocks", "3"), ("--seed", "zz")]
)
def test_cli_simulate_refuses_bad_options_by_name(runner, study, option, value):
    result = runner.invoke("list", "simulate", "TST", "--participants", "5", option, value)
    assert result.exit_code == 2
    assert option in result.output


def test_statistician_makes_the_record_from_the_page_and_slots_are_refused_by_field(
    client, session, study, users
):
    client.get("/lang/en")
    assert login(client, "stat1").status_code == 302
    page = client.get("/lists/").get_data(as_text=True)
    assert "There are no slots made in advance" in page
    assert 'name="per_stratum"' not in page and "Import a list made elsewhere" not in page
    refused = client.post("/lists/TST/generate", data={"kind": "live", "per_stratum": "8"})
    assert refused.status_code == 422
    assert "no slots made in advance" in refused.get_data(as_text=True)
    assert lists.find_list(session, study, ListKind.LIVE) is None
    made = client.post("/lists/TST/generate", data={"kind": "live"})
    assert made.status_code == 302
    shown = client.get(made.location).get_data(as_text=True)
    assert "minimization record was made" in shown and "0 slots" not in shown
    row = lists.get_list(session, study, ListKind.LIVE)
    assert row.source == "minimization" and row.created_by == "stat1"
