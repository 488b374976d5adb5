"""The account token can be rotated and revoked, expires after TOKEN_TTL_DAYS, and dies with
the password it was issued under; logging in with the password returns the live token or
issues a new one; API keys can use none of this.

alice holds the token; charlie is somebody else whose token nothing here may touch.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.forms import SetPasswordForm
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from marketplace.apikey_models import ApiKey
from marketplace.apikeys import api_key_create
from tests.factories import UserFactory

from .conftest import client_for, error

pytestmark = pytest.mark.django_db
TOKEN = "/api/v1/auth/token/"
ROTATE = "/api/v1/auth/token/rotate/"
WALLET = "/api/v1/wallet/"
PASSWORD = "a long enough passphrase"


@pytest.fixture
def alice(db):
    return UserFactory.create(username="alice", password=PASSWORD)


def with_token(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def token_of(user) -> str:
    return Token.objects.get(user=user).key


def age(user, days: int) -> None:
    Token.objects.filter(user=user).update(created=timezone.now() - timedelta(days=days))


def login(password: str = PASSWORD):
    return APIClient().post(TOKEN, {"username": "alice", "password": password}, format="json")


# --- rotate ----------------------------------------------------------------------------------


def test_rotating_answers_a_new_token_and_refuses_the_old_one_at_once(alice):
    old = client_for(alice)
    old_key = token_of(alice)

    response = old.post(ROTATE)

    assert response.status_code == 200, response.content
    new_key = response.json()["token"]
    assert set(response.json()) == {"token"} and new_key != old_key
    assert "no-store" in response.headers["Cache-Control"]
    assert error(old.get(WALLET)) == (401, "authentication_failed")
    assert with_token(new_key).get(WALLET).status_code == 200
    assert token_of(alice) == new_key


def test_rotating_works_with_a_session_and_issues_a_first_token(alice):
    browser = APIClient()
    browser.force_login(alice)
    assert not Token.objects.filter(user=alice).exists()

    response = browser.post(ROTATE)

    assert response.status_code == 200, response.content
    assert with_token(response.json()["token"]).get(WALLET).status_code == 200


def test_rotating_touches_nobody_elses_token(alice, charlie):
    theirs = client_for(charlie)

    assert client_for(alice).post(ROTATE).status_code == 200

    assert theirs.get(WALLET).status_code == 200


def test_rotating_needs_credentials(anon):
    assert error(anon.post(ROTATE)) == (401, "not_authenticated")


# --- revoke ----------------------------------------------------------------------------------


def test_revoking_answers_204_and_the_token_gets_401(alice):
    client = client_for(alice)

    response = client.delete(TOKEN)

    assert response.status_code == 204
    assert not Token.objects.filter(user=alice).exists()
    assert error(client.get(WALLET)) == (401, "authentication_failed")


def test_revoking_works_with_a_session(alice):
    key = login().json()["token"]
    browser = APIClient()
    browser.force_login(alice)

    assert browser.delete(TOKEN).status_code == 204

    assert error(with_token(key).get(WALLET)) == (401, "authentication_failed")


def test_revoking_needs_credentials(anon, alice):
    Token.objects.create(user=alice)

    assert error(anon.delete(TOKEN)) == (401, "not_authenticated")
    assert Token.objects.filter(user=alice).exists()


# --- expiry ----------------------------------------------------------------------------------


def test_a_token_older_than_its_ttl_is_401_token_expired(alice, settings):
    settings.TOKEN_TTL_DAYS = 90
    client = client_for(alice)
    age(alice, 89)
    assert client.get(WALLET).status_code == 200

    age(alice, 90)
    response = client.get(WALLET)

    assert error(response) == (401, "token_expired")
    assert response.headers["WWW-Authenticate"] == "Token"


def test_the_ttl_is_a_setting(alice, settings):
    settings.TOKEN_TTL_DAYS = 7
    client = client_for(alice)
    age(alice, 8)

    assert error(client.get(WALLET)) == (401, "token_expired")


# --- logging in ------------------------------------------------------------------------------


def test_logging_in_returns_the_live_token(alice):
    first = login().json()["token"]

    assert login().json()["token"] == first


def test_logging_in_issues_a_new_token_when_it_has_expired(alice):
    expired = login().json()["token"]
    age(alice, 365)

    response = login()

    assert response.status_code == 200
    fresh = response.json()["token"]
    assert fresh != expired
    assert with_token(fresh).get(WALLET).status_code == 200
    assert error(with_token(expired).get(WALLET)) == (401, "authentication_failed")


def test_logging_in_issues_a_new_token_after_a_revocation(alice):
    revoked = login().json()["token"]
    assert with_token(revoked).delete(TOKEN).status_code == 204

    fresh = login().json()["token"]

    assert fresh != revoked
    assert with_token(fresh).get(WALLET).status_code == 200


def test_logging_in_with_a_stale_token_in_the_header_still_works(alice):
    stale = login().json()["token"]
    age(alice, 365)
    client = with_token(stale)

    response = client.post(TOKEN, {"username": "alice", "password": PASSWORD}, format="json")

    assert response.status_code == 200 and response.json()["token"] != stale


# --- password changes ------------------------------------------------------------------------


def test_set_password_replaces_the_token(alice):
    old = login().json()["token"]

    alice.set_password("another long passphrase")
    alice.save()

    assert error(with_token(old).get(WALLET)) == (401, "authentication_failed")
    assert error(login()) == (400, "invalid_credentials")
    fresh = login("another long passphrase").json()["token"]
    assert fresh != old and with_token(fresh).get(WALLET).status_code == 200


def test_a_password_form_replaces_the_token(alice):
    old = login().json()["token"]
    new = "another long passphrase"
    form = SetPasswordForm(alice, {"new_password1": new, "new_password2": new})
    assert form.is_valid(), form.errors

    form.save()

    assert error(with_token(old).get(WALLET)) == (401, "authentication_failed")


def test_saving_the_user_without_a_new_password_keeps_the_token(alice):
    key = login().json()["token"]

    alice.first_name = "Alice"
    alice.save()
    assert login().json()["token"] == key  # a login is no password change either

    assert with_token(key).get(WALLET).status_code == 200


def test_a_password_change_leaves_other_accounts_alone(alice, charlie):
    theirs = client_for(charlie)

    alice.set_password("another long passphrase")
    alice.save()

    assert theirs.get(WALLET).status_code == 200


# --- never with an API key -------------------------------------------------------------------


@pytest.mark.parametrize(("method", "url"), [("post", ROTATE), ("delete", TOKEN)])
def test_an_api_key_can_neither_rotate_nor_revoke_the_token(alice, method, url):
    key = login().json()["token"]
    _, raw = api_key_create(user=alice, name="robot", scopes=list(ApiKey.Scope.values))
    robot = APIClient()
    robot.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")

    response = getattr(robot, method)(url)

    assert error(response) == (403, "scope_required")
    assert token_of(alice) == key
