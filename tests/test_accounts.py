"""Passwords after NIST SP 800-63B, own password change, resets with a forced change, user
administration pages, second-factor enrolment with a QR code and recovery codes."""

from __future__ import annotations

import base64
import re
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives.hashes import SHA1
from cryptography.hazmat.primitives.twofactor.totp import TOTP
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from randomizer.crypto import verify_password
from randomizer.errors import InvalidInput
from randomizer.models import Role, User
from randomizer.services.passwords import check_password_policy
from tests import test_auth
from tests.conftest import PASSWORD, login, make_user
from tests.enrollment_support import actions

#: No app context stays pushed, so every request sees the account as it is now.
session = test_auth.session

NEW_PASSWORD = "violeta parra gracias a la vida"


def _actors(session: Session, action: str) -> list[str]:
    """Who did ``action``, read in a transaction that is closed again (SQLite locks)."""
    found = [e.actor for e in actions(session, action)]
    session.rollback()
    return found


@pytest.mark.parametrize(
    "password",
    ["short-pass1", "qwerty123456", "PasswordPassword", "aaaabbbbaaaabbbb", "randomizer2026!",
     "alice12345678"],
)  # fmt: skip
def test_short_common_repetitive_or_contextual_passwords_are_refused(password: str) -> None:
    with pytest.raises(InvalidInput):
        check_password_policy(password, username="alice")


@pytest.mark.parametrize("password", ["ñandú en la cordillera", "x" * 3 + "yz1" * 20, "12 Ab" * 13])
def test_long_passwords_of_any_composition_are_accepted(password: str) -> None:
    check_password_policy(password, username="alice")


def test_a_long_password_is_never_truncated(session: Session, study: Any) -> None:
    long = "una frase de paso bastante larga " * 6
    user = make_user(session, "long1", Role.ASSESSOR, password=long)
    session.rollback()
    assert len(long) > 128 and verify_password(user.password_hash, long)
    assert not verify_password(user.password_hash, long[:-1] + "!")


# --- own password change ---------------------------------------------------------------


def _change(client: FlaskClient, old: str = PASSWORD, new: str = NEW_PASSWORD) -> Any:
    return client.post(
        "/account/password", data={"old_password": old, "new_password": new, "confirm": new}
    )


def test_changing_the_own_password_needs_the_old_one_and_ends_other_sessions(
    app: Any, client: FlaskClient, session: Session, users: dict[str, User]
) -> None:
    other = app.test_client()
    login(client, "inv1")
    login(other, "inv1")
    assert _change(client, old="not-the-password").status_code == 401
    assert _actors(session, "user.password_change") == []
    assert _change(client).status_code == 302
    assert client.get("/").status_code == 200  # this session goes on
    assert other.get("/").status_code == 302  # the other one has ended
    assert login(other, "inv1", NEW_PASSWORD).status_code == 302
    assert _actors(session, "user.password_change") == ["inv1"]


def test_a_common_new_password_is_refused_next_to_the_field(
    client: FlaskClient, session: Session, users: dict[str, User]
) -> None:
    client.get("/lang/en")
    login(client, "inv1")
    response = _change(client, new="qwerty123456")
    assert response.status_code == 422
    assert 'id="new_password-error"' in response.text and "too common" in response.text


# --- administration ----------------------------------------------------------------------


@pytest.fixture
def admin(client: FlaskClient, users: dict[str, User]) -> FlaskClient:
    client.get("/lang/en")
    login(client, "admin1")
    return client


def _temporary(html: str) -> str:
    found = re.search(r'id="temporary-password">([^<]+)<', html)
    assert found, "no temporary password shown"
    return found.group(1)


def test_an_admin_creates_a_user_who_must_change_the_password_first(
    admin: FlaskClient, app: Any, session: Session
) -> None:
    created = admin.post("/users/new", data={
        "username": "nueva", "full_name": "Ñuñoa Pérez", "role": "investigator", "sites": ["S1"],
    })  # fmt: skip
    assert created.status_code == 200
    user = app.test_client()
    login(user, "nueva", _temporary(created.text))
    assert user.get("/").location.endswith("/account/password")
    assert user.get("/studies/TST/participants").location.endswith("/account/password")
    assert _change(user, old=_temporary(created.text)).status_code == 302
    assert user.get("/").status_code == 200
    (event,) = actions(session, "user.create")[-1:]
    assert event.actor == "admin1" and "Ñuñoa Pérez" in (event.new_values or "")
    session.rollback()


def test_a_bad_new_user_is_refused_and_nothing_is_created(
    admin: FlaskClient, session: Session
) -> None:
    response = admin.post("/users/new", data={"username": "x y", "role": "investigator"})
    assert response.status_code == 422
    assert session.query(User).filter_by(username="x y").first() is None
    session.rollback()


def test_role_sites_and_status_changes_end_the_users_sessions(
    admin: FlaskClient, app: Any, session: Session, users: dict[str, User]
) -> None:
    inv = app.test_client()
    login(inv, "inv1")
    response = admin.post("/users/inv1", data={"role": "investigator", "sites": ["S1", "S2"],
                                               "active": "y"})  # fmt: skip
    assert response.status_code == 302
    assert inv.get("/").status_code == 302
    session.expire_all()
    assert session.query(User).filter_by(username="inv1").one().site_codes == {"S1", "S2"}
    session.rollback()
    admin.post("/users/inv1", data={"role": "investigator", "sites": ["S1"]})  # unticked: off
    assert login(app.test_client(), "inv1").status_code == 401  # deactivated: refused


def test_a_password_reset_forces_a_new_password_and_is_audited(
    admin: FlaskClient, app: Any, session: Session, users: dict[str, User]
) -> None:
    response = admin.post("/users/inv1/reset-password")
    temporary = _temporary(response.text)
    assert login(app.test_client(), "inv1").status_code == 401  # the old password is gone
    user = app.test_client()
    login(user, "inv1", temporary)
    assert user.get("/").location.endswith("/account/password")
    assert _actors(session, "user.password_reset") == ["admin1"]


@pytest.mark.parametrize("role", ["inv1", "stat1", "pharm1", "assess1"])
def test_only_admins_administer_users(
    client: FlaskClient, users: dict[str, User], role: str
) -> None:
    login(client, role)
    assert client.get("/users/").status_code == 403
    assert client.post("/users/inv1/reset-password").status_code == 403


# --- second factor -------------------------------------------------------------------------


def _totp(secret: str) -> TOTP:
    return TOTP(base64.b32decode(secret), 6, SHA1(), 30, enforce_key_length=False)


def _enrol_self(client: FlaskClient) -> tuple[TOTP, list[str]]:
    page = client.get("/account/totp").text
    assert "<svg" in page  # the QR code is rendered on the server
    secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', page)
    assert secret
    totp = _totp(secret.group(1))
    done = client.post("/account/totp", data={"code": totp.generate(time.time()).decode()})
    assert done.status_code == 200
    return totp, re.findall(r'<code class="code">([0-9a-f-]{14})</code>', done.text)


def test_a_user_enrols_totp_and_signs_in_with_a_code_or_a_recovery_code_once(
    client: FlaskClient, app: Any, session: Session, users: dict[str, User]
) -> None:
    login(client, "inv1")
    _totp_app, codes = _enrol_self(client)
    assert len(codes) == 10
    fresh = app.test_client()
    assert login(fresh, "inv1").location.endswith("/login/totp")
    assert fresh.post("/login/totp", data={"code": codes[0]}).status_code == 302
    again = app.test_client()
    login(again, "inv1")
    assert again.post("/login/totp", data={"code": codes[0]}).status_code == 401
    assert _actors(session, "user.recovery_code_used") == ["inv1"]


def test_a_wrong_code_does_not_enrol(
    client: FlaskClient, session: Session, users: dict[str, User]
) -> None:
    login(client, "inv1")
    client.get("/account/totp")
    assert client.post("/account/totp", data={"code": "000000"}).status_code == 422
    session.expire_all()
    assert session.query(User).filter_by(username="inv1").one().totp_sealed is None
    session.rollback()


def test_an_admin_enrols_a_users_second_factor_with_qr_and_recovery_codes(
    admin: FlaskClient, session: Session, users: dict[str, User]
) -> None:
    response = admin.post("/users/pharm1/totp")
    assert response.status_code == 200 and "<svg" in response.text
    assert len(re.findall(r'<code class="code">[0-9a-f-]{14}</code>', response.text)) == 10
    assert admin.post("/users/pharm1/totp/remove").status_code == 302
    assert _actors(session, "user.totp_remove") == ["admin1"]


def test_making_an_unblinded_user_masked_on_the_page_needs_the_acknowledgement(
    admin: FlaskClient, session: Session, users: dict[str, User]
) -> None:
    refused = admin.post("/users/pharm1", data={"role": "investigator", "sites": ["S1"],
                                                "active": "y"})  # fmt: skip
    assert refused.status_code in (409, 422)
    session.expire_all()
    assert session.query(User).filter_by(username="pharm1").one().role.value == "pharmacist"
    session.rollback()
    data = {"role": "investigator", "sites": ["S1"], "active": "y", "acknowledge_exposure": "y"}
    done = admin.post("/users/pharm1", data=data)
    assert done.status_code == 302
    session.expire_all()
    assert session.query(User).filter_by(username="pharm1").one().role.value == "investigator"
    session.rollback()
