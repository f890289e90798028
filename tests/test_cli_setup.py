"""`randomizer init`, `demo`, `user add`, `token create`: the set-up commands."""

from __future__ import annotations

import re
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from randomizer import create_app, migrate
from randomizer.crypto import token_digest, verify_password
from randomizer.errors import ConfigurationError
from randomizer.instance import (
    ANCHOR_KEY_FILE,
    AUDIT_KEY_FILE,
    MASTER_KEY_FILE,
    SECRET_KEY_FILE,
    ensure_instance_files,
)
from randomizer.models import ApiToken, AuditEvent, Role, User
from randomizer.services.demo import DEMO_USERS
from tests.conftest import PASSWORD, Runner, login, make_user
from tests.engines import dispose_engines  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("dispose_engines")

KEY_FILES = (MASTER_KEY_FILE, AUDIT_KEY_FILE, SECRET_KEY_FILE, ANCHOR_KEY_FILE)
RANDOMIZER = Path(sys.executable).with_name("randomizer")
DEMO_LOGIN = re.compile(r"^\s+(\w+)\s+(\S+)\s+(\S+)\s+\((.*)\)$")


def _counts(session: Session) -> tuple[int, int]:
    session.rollback()  # see what the command committed
    users = session.scalar(sa.select(sa.func.count()).select_from(User)) or 0
    events = session.scalar(sa.select(sa.func.count()).select_from(AuditEvent)) or 0
    # End the read: on SQLite every transaction holds the write lock the CLI needs.
    session.rollback()
    return users, events


def _snapshot(instance: Path, url: str) -> dict[str, Any]:
    engine = sa.create_engine(url)
    try:
        schema = {
            table: sorted(c["name"] for c in sa.inspect(engine).get_columns(table))
            for table in sa.inspect(engine).get_table_names()
        }
        revision = migrate.current_revision(engine)
    finally:
        engine.dispose()
    return {
        "keys": {name: (instance / name).read_bytes() for name in KEY_FILES},
        "revision": revision,
        "schema": schema,
    }


@pytest.fixture
def fresh_instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, app: Flask) -> Path:
    """An empty instance folder (no keys yet) on the test database."""
    path = tmp_path / "fresh"
    monkeypatch.setenv("RANDOMIZER_INSTANCE_PATH", str(path))
    return path


def _no_traceback(result: Any) -> None:
    assert "Traceback" not in result.output


# --- init ------------------------------------------------------------------------------


def test_init_creates_every_key_file_with_mode_0600(runner: Runner, fresh_instance: Path):
    result = runner.invoke("init")
    assert result.exit_code == 0, result.output
    for name in KEY_FILES:
        mode = stat.S_IMODE((fresh_instance / name).stat().st_mode)
        assert mode == 0o600, f"{name} has mode {mode:o}"
        assert f"created {fresh_instance / name}" in result.stdout


@pytest.mark.parametrize("backend", ["sqlite"])
def test_init_makes_the_sqlite_file_private(runner: Runner, database_url: str):
    database = Path(database_url.removeprefix("sqlite:///"))
    database.chmod(0o644)
    assert runner.invoke("init").exit_code == 0
    assert stat.S_IMODE(database.stat().st_mode) == 0o600


def test_init_twice_changes_nothing_the_second_time(
    runner: Runner, fresh_instance: Path, database_url: str
):
    assert runner.invoke("init").exit_code == 0
    before = _snapshot(fresh_instance, database_url)
    again = runner.invoke("init")
    assert again.exit_code == 0, again.output
    assert _snapshot(fresh_instance, database_url) == before
    assert "created" not in again.stdout
    assert f"up to date (revision {before['revision']})" in again.stdout


@pytest.mark.parametrize("missing", [MASTER_KEY_FILE, AUDIT_KEY_FILE, SECRET_KEY_FILE])
def test_app_refuses_to_start_naming_the_missing_key_file(
    missing: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    instance = tmp_path / "instance"
    ensure_instance_files(instance)
    (instance / missing).unlink()
    monkeypatch.setenv("RANDOMIZER_INSTANCE_PATH", str(instance))
    for var in ("RANDOMIZER_DATABASE_URL", "RANDOMIZER_MASTER_KEY", "RANDOMIZER_AUDIT_KEY"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ConfigurationError) as refused:
        create_app()
    assert str(instance / missing) in refused.value.message
    assert "missing" in refused.value.message


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    "command",
    [["run", "--port", "0"], ["audit", "verify"], ["user", "add", "x", "--role", "admin"]],
    ids=["run", "audit-verify", "user-add"],
)
def test_commands_exit_with_a_message_when_the_master_key_is_missing(
    command: list[str], tmp_path: Path
):
    instance = tmp_path / "instance"
    ensure_instance_files(instance)
    (instance / MASTER_KEY_FILE).unlink()
    if command[0] == "run":
        command = ["run", "--port", str(_free_port())]
    env = {"RANDOMIZER_INSTANCE_PATH": str(instance), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [str(RANDOMIZER), *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode != 0
    assert str(instance / MASTER_KEY_FILE) in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


@pytest.mark.parametrize("missing", [MASTER_KEY_FILE, AUDIT_KEY_FILE])
def test_init_refuses_a_new_key_over_a_database_with_audit_events(
    missing: str, runner: Runner, session: Session, instance_path: Path
):
    make_user(session, "alice", Role.ADMIN)
    (instance_path / missing).unlink()
    result = runner.invoke("init")
    assert result.exit_code != 0
    assert str(instance_path / missing) in result.stderr
    assert "Restore the file from your key backup" in result.stderr
    assert not (instance_path / missing).exists(), "a new key was created over the data"
    _no_traceback(result)


def test_init_recreates_a_missing_key_while_the_database_holds_nothing(
    runner: Runner, instance_path: Path
):
    (instance_path / MASTER_KEY_FILE).unlink()
    result = runner.invoke("init")
    assert result.exit_code == 0, result.output
    assert (instance_path / MASTER_KEY_FILE).exists()


# --- user add --------------------------------------------------------------------------


def test_user_add_reads_the_password_from_stdin(runner: Runner, session: Session, study: Any):
    result = runner.invoke(
        "user", "add", "Maria", "--role", "investigator", "--site", "S1", "--site", "S2",
        "--email", "maria@example.org", "--password-stdin",
        input="a-long-enough-secret\n",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "created user maria (investigator; S1, S2)" in result.stdout
    session.rollback()
    user = session.scalar(sa.select(User).where(User.username == "maria"))
    assert user is not None and user.role is Role.INVESTIGATOR
    assert user.site_codes == {"S1", "S2"}
    assert verify_password(user.password_hash, "a-long-enough-secret")
    assert "a-long-enough-secret" not in user.password_hash
    event = session.scalars(sa.select(AuditEvent).order_by(AuditEvent.seq.desc())).first()
    assert event is not None and (event.action, event.object_id) == ("user.create", "maria")


USER_ADD_REFUSALS = {
    "unknown-role": (["--role", "wizard"], "x-long-password\n", "Invalid value for '--role'"),
    "unknown-site": (
        ["--role", "investigator", "--site", "NOPE"],
        "x-long-password\n",
        "Unknown site 'NOPE'",
    ),
    "no-site": (["--role", "pharmacist"], "x-long-password\n", "needs at least one site"),
    "short-password": (["--role", "admin"], "short\n", "at least 12 characters"),
    "simple-password": (["--role", "admin"], "aaaaaaaaaaaaaaaa\n", "too simple"),
    "no-password": (["--role", "admin"], "", "expected 1 line(s) on standard input"),
    "bad-email": (
        ["--role", "admin", "--email", "not-an-address"],
        "x-long-password\n",
        "is not an e-mail address",
    ),
}


@pytest.mark.parametrize(
    ("options", "stdin", "message"), USER_ADD_REFUSALS.values(), ids=USER_ADD_REFUSALS.keys()
)
def test_user_add_refuses_bad_input_and_creates_nothing(
    options: list[str], stdin: str, message: str, runner: Runner, session: Session, study: Any
):
    before = _counts(session)
    result = runner.invoke("user", "add", "newbie", *options, "--password-stdin", input=stdin)
    assert result.exit_code != 0
    assert message in result.stderr
    _no_traceback(result)
    assert _counts(session) == before


@pytest.mark.parametrize("name", ["alice", "ALICE", "bad name!", "x"])
def test_user_add_refuses_a_taken_or_malformed_username(
    name: str, runner: Runner, session: Session
):
    make_user(session, "alice", Role.ADMIN)
    before = _counts(session)
    result = runner.invoke("user", "add", name, "--role", "admin", "--password-stdin",
                           input="x-long-password\n")  # fmt: skip
    assert result.exit_code == 1
    assert "Error: username:" in result.stderr
    assert _counts(session) == before


# --- tokens ----------------------------------------------------------------------------


def test_token_create_prints_the_token_alone_on_the_last_line_and_stores_only_its_hash(
    runner: Runner, session: Session
):
    make_user(session, "alice", Role.ADMIN)
    result = runner.invoke("token", "create", "alice")
    assert result.exit_code == 0, result.output
    token = result.stdout.splitlines()[-1]
    assert re.fullmatch(r"rnd_[A-Za-z0-9_-]{43}", token)
    session.rollback()
    row = session.scalars(sa.select(ApiToken)).one()
    assert row.token_hash == token_digest(token)
    stored = [row.token_hash, row.prefix]
    stored += [
        f"{e.old_values}{e.new_values}{e.reason}" for e in session.scalars(sa.select(AuditEvent))
    ]
    assert not any(token in value for value in stored)


def test_a_revoked_token_is_refused_by_the_api(
    runner: Runner, session: Session, client: FlaskClient
):
    make_user(session, "alice", Role.ADMIN)
    token = runner.invoke("token", "create", "alice").stdout.splitlines()[-1]
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/audit/verify", headers=headers).status_code == 200
    token_id = session.scalars(sa.select(ApiToken.id)).one()
    session.rollback()
    revoked = runner.invoke("token", "revoke", str(token_id))
    assert revoked.exit_code == 0, revoked.output
    refused = client.get("/api/v1/audit/verify", headers=headers)
    assert refused.status_code == 401
    assert refused.mimetype == "application/problem+json"
    assert refused.get_json()["detail"] == "The API token is unknown or revoked."


def test_token_create_for_an_unknown_user_fails_cleanly(runner: Runner, session: Session):
    result = runner.invoke("token", "create", "nobody")
    assert result.exit_code == 1
    assert "No user named 'nobody'" in result.stderr
    assert session.scalar(sa.select(sa.func.count()).select_from(ApiToken)) == 0


# --- demo ------------------------------------------------------------------------------


def _demo_logins(output: str) -> list[tuple[str, str, str]]:
    found = [DEMO_LOGIN.match(line) for line in output.splitlines()]
    return [(m[1], m[2], m[3]) for m in found if m]


def test_demo_prints_one_working_login_per_role(runner: Runner, app: Flask):
    result = runner.invoke("demo")
    assert result.exit_code == 0, result.output
    logins = _demo_logins(result.stdout)
    assert sorted(role for role, _, _ in logins) == sorted(r.value for r in Role)
    full_names = {username: full for username, _, _, full, _ in DEMO_USERS}
    for role, username, password in logins:
        client = app.test_client()
        response = login(client, username, password)
        assert response.status_code == 302, f"{username} could not sign in"
        assert response.headers["Location"] == "/"
        home = client.get("/")
        assert home.status_code == 200
        assert f'data-role="{role}"'.encode() in home.data
        assert full_names[username].encode() in home.data


def test_demo_logins_only_prints_the_logins_and_changes_nothing(runner: Runner, session: Session):
    demo = runner.invoke("demo")
    before = _counts(session)
    again = runner.invoke("demo", "--logins-only")
    assert again.exit_code == 0, again.output
    assert _demo_logins(again.stdout) == _demo_logins(demo.stdout)
    assert "database" not in again.stdout and "loaded" not in again.stdout
    assert _counts(session) == before


def test_demo_logins_only_hides_a_demo_password_that_no_longer_works(
    runner: Runner, session: Session
):
    make_user(session, "admin", Role.ADMIN, password=PASSWORD)
    result = runner.invoke("demo", "--logins-only")
    assert result.exit_code == 0
    assert _demo_logins(result.stdout) == []
    assert "no working demo logins" in result.stdout


def test_demo_has_depot_stock_and_a_shipment_in_transit_to_each_site(
    runner: Runner, session: Session
):
    from randomizer.models import Kit, KitStatus, Shipment, ShipmentStatus

    first = runner.invoke("demo")
    assert first.exit_code == 0, first.output
    again = runner.invoke("demo")
    assert again.exit_code == 0, again.output
    session.expire_all()
    listed = session.scalars(sa.select(Shipment).order_by(Shipment.site_code)).all()
    assert [(s.site_code, s.status) for s in listed] == [
        ("CUA", ShipmentStatus.IN_TRANSIT), ("HBLT", ShipmentStatus.IN_TRANSIT)
    ]  # fmt: skip
    in_transit = session.scalars(sa.select(Kit).where(Kit.status == KitStatus.IN_TRANSIT)).all()
    assert len(in_transit) == 8 and {k.shipment_id for k in in_transit} == {s.id for s in listed}
    depot = session.scalars(sa.select(Kit).where(Kit.status == KitStatus.AT_DEPOT)).all()
    assert len(depot) == 32
    assert "kits at the depot: 32" in again.stdout
    assert "to CUA: in_transit" in again.stdout


def test_login_page_names_where_the_demo_logins_are_printed_only_on_a_demo(
    app: Flask, client: FlaskClient
):
    client.get("/lang/en")
    assert "randomizer demo --logins-only" not in client.get("/login").get_data(as_text=True)
    app.config["DEMO"] = True
    html = client.get("/login").get_data(as_text=True)
    assert "Demo instance: the demo logins" in html and "randomizer demo --logins-only" in html
