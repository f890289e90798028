from tests.conftest import login


def test_login_page_is_served(client):
    response = client.get("/login")
    assert response.status_code == 200
    assert b"csrf_token" in response.data or b"password" in response.data


def test_demo_user_lands_on_home(client, session, users):
    response = login(client, "inv1")
    assert response.status_code == 302
    home = client.get("/")
    assert home.status_code == 200
