"""Registration, token login, token and session authentication, throttling."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from escrow.models import Account
from tests.factories import UserFactory

from .conftest import error

REGISTER = "/api/v1/auth/register/"
TOKEN = "/api/v1/auth/token/"
PASSWORD = "a long enough passphrase"

pytestmark = pytest.mark.django_db


def test_registration_returns_a_working_token_and_opens_a_wallet(anon):
    response = anon.post(REGISTER, {"username": "dora", "password": PASSWORD})

    assert response.status_code == 201
    body = response.json()
    user = User.objects.get(username="dora")
    assert body == {"id": user.pk, "username": "dora", "token": Token.objects.get(user=user).key}
    assert user.check_password(PASSWORD)
    assert Account.objects.get(user=user).balance == 0
    anon.credentials(HTTP_AUTHORIZATION=f"Token {body['token']}")
    assert anon.get("/api/v1/wallet/").status_code == 200


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"username": "alice", "password": PASSWORD}, "username"),
        ({"username": "ALICE", "password": PASSWORD}, "username"),
        ({"username": "has space", "password": PASSWORD}, "username"),
        ({"username": "x" * 151, "password": PASSWORD}, "username"),
        ({"username": "dora", "password": "short"}, "password"),
        ({"username": "dora", "password": "password"}, "password"),
        ({"username": "dora"}, "password"),
        ({"password": PASSWORD}, "username"),
    ],
)
def test_registration_refuses_taken_names_and_weak_passwords(anon, alice, payload, field):
    response = anon.post(REGISTER, payload)

    assert error(response) == (400, "validation_error")
    assert field in response.json()["error"]["fields"]
    assert User.objects.count() == 1


def test_registration_takes_json_only(anon):
    response = anon.post(REGISTER, {"username": "dora", "password": PASSWORD}, format="multipart")

    assert error(response) == (415, "unsupported_media_type")
    assert not User.objects.filter(username="dora").exists()


def test_login_returns_the_users_token(anon):
    alice = UserFactory.create(username="alice", password=PASSWORD)

    first = anon.post(TOKEN, {"username": "alice", "password": PASSWORD})
    again = anon.post(TOKEN, {"username": "alice", "password": PASSWORD})

    assert first.status_code == again.status_code == 200
    assert first.json() == again.json() == {"token": Token.objects.get(user=alice).key}


@pytest.mark.parametrize(
    "payload",
    [
        {"username": "alice", "password": "wrong"},
        {"username": "nobody", "password": PASSWORD},
    ],
)
def test_login_refuses_wrong_credentials_without_saying_which_part(anon, payload):
    UserFactory.create(username="alice", password=PASSWORD)

    response = anon.post(TOKEN, payload)

    assert error(response) == (400, "invalid_credentials")
    assert Token.objects.count() == 0


def test_login_refuses_an_inactive_user(anon):
    alice = UserFactory.create(username="alice", password=PASSWORD)
    User.objects.filter(pk=alice.pk).update(is_active=False)

    assert error(anon.post(TOKEN, {"username": "alice", "password": PASSWORD})) == (
        400,
        "invalid_credentials",
    )


def test_login_validates_its_input(anon):
    response = anon.post(TOKEN, {"username": "alice"})

    assert error(response) == (400, "validation_error")
    assert response.json()["error"]["fields"] == {"password": ["This field is required."]}


def test_auth_endpoints_are_throttled_per_client(anon, settings):
    """Logins in the login pages' buckets (LOGIN_THROTTLE_RATE, tests/test_login_throttle.py);
    sign-ups in their own (SIGNUP_THROTTLE_RATE)."""
    UserFactory.create(username="alice", password=PASSWORD)
    for _ in range(10):
        assert anon.post(TOKEN, {"username": "alice", "password": "guess"}).status_code == 400

    response = anon.post(TOKEN, {"username": "alice", "password": PASSWORD})

    assert error(response) == (429, "throttled")
    assert int(response.headers["Retry-After"]) > 0
    assert anon.post(REGISTER, {"username": "dora", "password": PASSWORD}).status_code == 201
    settings.SIGNUP_THROTTLE_RATE = "1/hour"
    assert error(anon.post(REGISTER, {"username": "erin", "password": PASSWORD})) == (
        429,
        "throttled",
    )
    assert not User.objects.filter(username="erin").exists()


def test_anonymous_requests_get_401_with_the_token_challenge(anon):
    response = anon.get("/api/v1/wallet/")

    assert error(response) == (401, "not_authenticated")
    assert response.headers["WWW-Authenticate"] == "Token"


def test_a_wrong_token_is_refused(anon):
    anon.credentials(HTTP_AUTHORIZATION="Token " + "0" * 40)

    assert error(anon.get("/api/v1/wallet/")) == (401, "authentication_failed")


def test_a_browser_session_works_and_its_writes_need_the_csrf_token(alice):
    browser = APIClient(enforce_csrf_checks=True)
    browser.force_login(alice)

    assert browser.get("/api/v1/wallet/").status_code == 200
    response = browser.post("/api/v1/wallet/deposits/", {"amount": 5})

    assert error(response) == (403, "permission_denied")
    assert "CSRF" in response.json()["error"]["message"]
    assert Account.objects.get(user=alice).balance == 0
