"""Logins and sign-ups can't be brute-forced cheaply (SPEC §23): the login page, the admin's
login page and the API's token endpoint count in the same buckets, 10 attempts a minute per
client address and per username; sign-ups 5 an hour per address. A refused attempt pays for
no password hash and is answered 429 with Retry-After."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.hashers import MD5PasswordHasher
from django.contrib.auth.models import User
from django.test import Client
from rest_framework.test import APIClient

from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

PASSWORD = "a long enough passphrase"
LOGIN = "/accounts/login/"
ADMIN_LOGIN = "/admin/login/"
SIGNUP = "/accounts/signup/"
TOKEN = "/api/v1/auth/token/"
REGISTER = "/api/v1/auth/register/"


@pytest.fixture
def hashes(monkeypatch) -> list[str]:
    """Every password hash computed (the suite hashes with MD5, see tests/conftest.py): a
    wrong password for a known user is hashed to compare it, one for an unknown user is
    hashed anyway so that both take as long."""
    computed: list[str] = []
    encode = MD5PasswordHasher.encode

    def counting(self: Any, password: str, salt: str) -> str:
        computed.append(password)
        return encode(self, password, salt)

    monkeypatch.setattr(MD5PasswordHasher, "encode", counting)
    return computed


@pytest.fixture
def alice_login(db) -> User:
    return UserFactory.create(username="alice", password=PASSWORD)


def from_address(address: str) -> Client:
    return Client(REMOTE_ADDR=address)


WRONG = "guess"


def page_login(client: Client, username: str = "alice", password: str = WRONG, path=LOGIN):
    return client.post(path, {"username": username, "password": password})


def test_the_eleventh_wrong_password_in_a_minute_is_refused_without_a_hash(alice_login, hashes):
    client = Client()
    answers = [page_login(client) for _ in range(10)]
    assert [a.status_code for a in answers] == [200] * 10
    assert all("Please enter a correct username and password" in a.text for a in answers)
    assert len(hashes) == 10

    refused = page_login(client, password=PASSWORD)  # even the right one, now

    assert refused.status_code == 429
    assert 0 < int(refused["Retry-After"]) <= 60
    assert "Too many login attempts from here. Try again in" in refused.text
    assert 'name="username"' in refused.text and 'value="alice"' in refused.text
    assert len(hashes) == 10
    assert "_auth_user_id" not in client.session


def test_one_username_is_guarded_whatever_the_address(alice_login, hashes):
    for n in range(10):
        assert page_login(from_address(f"203.0.113.{n}")).status_code == 200

    assert page_login(from_address("198.51.100.7")).status_code == 429
    assert page_login(from_address("198.51.100.7"), username="ALICE ").status_code == 429
    assert len(hashes) == 10
    # That address has tried nothing else: another username goes on.
    assert page_login(from_address("198.51.100.7"), username="bob").status_code == 200


def test_one_address_is_limited_whatever_the_usernames(hashes):
    client = Client()
    for n in range(10):
        assert page_login(client, username=f"user{n}").status_code == 200

    assert page_login(client, username="someone-else").status_code == 429
    assert len(hashes) == 10
    assert page_login(from_address("198.51.100.7"), username="someone-else").status_code == 200


def test_the_admin_login_counts_in_the_same_buckets(alice_login, hashes):
    User.objects.filter(username="alice").update(is_staff=True, is_superuser=True)
    for _ in range(5):
        assert page_login(Client()).status_code == 200
    for _ in range(5):
        assert page_login(Client(), path=ADMIN_LOGIN).status_code == 200

    refused = page_login(Client(), password=PASSWORD, path=ADMIN_LOGIN)

    assert refused.status_code == 429
    assert int(refused["Retry-After"]) > 0
    assert '<p class="errornote" role="alert">Too many login attempts' in refused.text
    assert 'id="login-form"' in refused.text
    assert len(hashes) == 10
    assert page_login(Client(), password=PASSWORD).status_code == 429


def test_the_api_token_endpoint_counts_in_the_same_buckets(alice_login, hashes):
    api = APIClient()
    for _ in range(6):
        assert page_login(Client()).status_code == 200
    for _ in range(4):
        response = api.post(TOKEN, {"username": "alice", "password": "guess"})
        assert response.status_code == 400

    refused = api.post(TOKEN, {"username": "alice", "password": PASSWORD})

    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "throttled"
    assert int(refused["Retry-After"]) > 0
    assert len(hashes) == 10
    assert page_login(Client(), password=PASSWORD).status_code == 429


def test_the_api_refuses_one_username_from_another_address_too(alice_login, hashes):
    for n in range(10):
        api = APIClient(REMOTE_ADDR=f"203.0.113.{n}")
        assert api.post(TOKEN, {"username": "alice", "password": "guess"}).status_code == 400

    refused = APIClient(REMOTE_ADDR="198.51.100.7").post(
        TOKEN, {"username": "alice", "password": PASSWORD}
    )

    assert refused.status_code == 429
    assert len(hashes) == 10


def test_client_addresses_honour_num_proxies(alice_login, settings):
    """Behind one proxy, its X-Forwarded-For names the client; with none trusted (the
    default), a client can't pick a fresh address per attempt by sending the header."""
    for n in range(10):
        forged = Client(HTTP_X_FORWARDED_FOR=f"203.0.113.{n}")
        assert page_login(forged, username=f"user{n}").status_code == 200
    assert page_login(Client(HTTP_X_FORWARDED_FOR="203.0.113.99"), "x").status_code == 429

    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    behind_proxy = Client(HTTP_X_FORWARDED_FOR="198.51.100.7, 192.0.2.1")
    assert page_login(behind_proxy, username="someone").status_code == 200


def test_the_limits_are_settings(alice_login, settings):
    settings.LOGIN_THROTTLE_RATE = "2/minute"
    client = Client()

    assert [page_login(client).status_code for _ in range(3)] == [200, 200, 429]


# --- sign-ups ----------------------------------------------------------------------------


def signup(client: Any, username: str, path: str = SIGNUP, **extra: Any):
    return client.post(path, {"username": username, "password": PASSWORD}, **extra)


def test_the_sixth_account_in_an_hour_from_one_address_is_refused(hashes):
    for n in range(3):
        assert signup(Client(), f"page{n}").status_code == 302
    for n in range(2):
        assert signup(APIClient(), f"api{n}", path=REGISTER).status_code == 201
    assert len(hashes) == 5

    refused = signup(Client(), "sixth")

    assert refused.status_code == 429
    assert 60 < int(refused["Retry-After"]) <= 3600
    assert "Too many new accounts from here. Try again in" in refused.text
    api_refused = signup(APIClient(), "seventh", path=REGISTER)
    assert api_refused.status_code == 429
    assert api_refused.json()["error"]["code"] == "throttled"
    assert not User.objects.filter(username__in=["sixth", "seventh"]).exists()
    assert len(hashes) == 5
    # Another address signs up as before.
    assert signup(from_address("198.51.100.7"), "elsewhere").status_code == 302


def test_a_sign_up_sent_back_uses_nothing_up(alice_login):
    client = Client()
    for _ in range(10):
        response = client.post(SIGNUP, {"username": "alice", "password": PASSWORD})
        assert "This username is taken." in response.text
    for n in range(5):
        assert signup(client, f"new{n}").status_code == 302
        client.logout()

    assert signup(client, "sixth").status_code == 429


def test_an_htmx_sign_up_gets_the_refusal_in_the_form(settings):
    settings.SIGNUP_THROTTLE_RATE = "1/hour"
    assert signup(Client(), "first").status_code == 302

    refused = signup(Client(), "second", HTTP_HX_REQUEST="true")

    assert refused.status_code == 429
    assert refused.text.lstrip().startswith('<form id="signup-form"')
    assert "Too many new accounts from here." in refused.text
    assert 'value="second"' in refused.text
