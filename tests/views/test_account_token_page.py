"""The account token page: whether there is a token and when it expires; rotate (the new
token shown once, never cached) and revoke; a password change here or in the admin revokes
it. charlie's token is nobody else's business."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.urls import reverse
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.factories import UserFactory

from .conftest import client_for

pytestmark = pytest.mark.django_db
PAGE = "/account/token/"
ROTATE = "/account/token/rotate/"
REVOKE = "/account/token/revoke/"
PASSWORD_URL = "/account/password/"
PASSWORD = "a long enough passphrase"
NEW_PASSWORD = "another long passphrase"
SHOWN = re.compile(r'value="([0-9a-f]{40})"')


@pytest.fixture
def alice(db):
    return UserFactory.create(username="alice", password=PASSWORD)


def works(key: str) -> bool:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client.get("/api/v1/wallet/").status_code == 200


def test_the_page_needs_a_login(anon):
    for response in (anon.get(PAGE), anon.post(ROTATE), anon.post(REVOKE)):
        assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_the_navigation_links_to_it(as_alice):
    assert f'href="{PAGE}"' in as_alice.get("/").content.decode()


def test_it_says_when_there_is_no_token(as_alice):
    body = as_alice.get(PAGE).content.decode()

    assert "You have no token" in body and "Create a token" in body


def test_it_shows_when_the_token_expires_but_never_the_token(as_alice, alice, settings):
    settings.TOKEN_TTL_DAYS = 90
    token = Token.objects.create(user=alice)

    response = as_alice.get(PAGE)

    body = response.content.decode()
    expires = (token.created + timedelta(days=90)).strftime("%Y-%m-%d %H:%M")
    assert f"expires {expires} UTC" in body
    assert token.key not in body
    assert "no-store" in response["Cache-Control"]


def test_it_says_when_the_token_has_expired(as_alice, alice):
    Token.objects.create(user=alice)
    Token.objects.filter(user=alice).update(created=timezone.now() - timedelta(days=400))

    assert "expired" in as_alice.get(PAGE).content.decode()


def test_rotating_shows_the_new_token_once_and_refuses_the_old_one(as_alice, alice):
    old = Token.objects.create(user=alice).key

    response = as_alice.post(ROTATE)

    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    shown = SHOWN.findall(response.content.decode())
    assert shown == [Token.objects.get(user=alice).key] and shown[0] != old
    assert works(shown[0]) and not works(old)
    assert shown[0] not in as_alice.get(PAGE).content.decode()


def test_rotating_without_a_token_issues_one(as_alice, alice):
    response = as_alice.post(ROTATE)

    assert works(SHOWN.findall(response.content.decode())[0])


def test_revoking_leaves_no_token(as_alice, alice, charlie):
    old = Token.objects.create(user=alice).key
    theirs = Token.objects.create(user=charlie).key

    response = as_alice.post(REVOKE, follow=True)

    assert response.redirect_chain[-1][0] == PAGE
    assert "Token revoked" in response.content.decode()
    assert not works(old) and works(theirs)


def test_the_page_only_takes_posts_for_changes(as_alice, alice):
    Token.objects.create(user=alice)

    assert as_alice.get(ROTATE).status_code == 405
    assert as_alice.get(REVOKE).status_code == 405
    assert Token.objects.filter(user=alice).exists()


def test_changing_the_password_here_revokes_the_token_and_keeps_the_browser_signed_in(
    as_alice, alice
):
    old = Token.objects.create(user=alice).key
    form = {"old_password": PASSWORD, "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD}

    response = as_alice.post(PASSWORD_URL, form, follow=True)

    assert response.redirect_chain[-1][0] == PAGE
    assert not works(old)
    alice.refresh_from_db()
    assert alice.check_password(NEW_PASSWORD)
    assert as_alice.get(PAGE).status_code == 200


def test_a_wrong_old_password_changes_nothing(as_alice, alice):
    old = Token.objects.create(user=alice).key
    form = {"old_password": "wrong", "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD}

    response = as_alice.post(PASSWORD_URL, form)

    assert response.status_code == 400
    assert works(old)
    alice.refresh_from_db()
    assert alice.check_password(PASSWORD)


def test_a_password_change_in_the_admin_revokes_the_token(alice):
    old = Token.objects.create(user=alice).key
    operator = client_for(User.objects.create_superuser("root", password=PASSWORD))
    url = reverse("admin:auth_user_password_change", args=[alice.pk])
    form = {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD, "usable_password": "true"}

    response = operator.post(url, form)

    assert response.status_code == 302, response.content.decode()[:2000]
    assert not works(old)


def test_operators_cannot_read_or_mint_tokens_in_the_admin(alice):
    Token.objects.create(user=alice)
    operator = client_for(User.objects.create_superuser("root", password=PASSWORD))

    assert operator.get("/admin/authtoken/tokenproxy/").status_code == 404
    assert operator.get("/admin/authtoken/tokenproxy/add/").status_code == 404
