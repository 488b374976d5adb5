"""Sign-up, log-in, log-out, login-required pages and CSRF."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from escrow.models import Account
from tests.views.conftest import HTMX, fragment, page

PRIVATE_PAGES = [
    ("dashboard", {}),
    ("wallet", {}),
    ("wallet-export", {}),
    ("agent-list", {}),
    ("agent-new", {}),
    ("agent-detail", {"slug": "echo"}),
    ("agent-binary-new", {"slug": "echo"}),
    ("task-list", {}),
    ("task-new", {}),
    ("task-detail", {"task_id": "7c1e7a3e-5a0b-4f7c-9d7e-4d3f1b2a9c10"}),
    ("task-receipt", {"task_id": "7c1e7a3e-5a0b-4f7c-9d7e-4d3f1b2a9c10"}),
    ("channel-list", {}),
    ("channel-detail", {"channel_id": "7c1e7a3e-5a0b-4f7c-9d7e-4d3f1b2a9c10"}),
]
PRIVATE_POSTS = [
    ("wallet", {}),
    ("agent-new", {}),
    ("agent-binary-new", {"slug": "echo"}),
    ("task-new", {}),
    ("task-cancel", {"task_id": "7c1e7a3e-5a0b-4f7c-9d7e-4d3f1b2a9c10"}),
    ("task-verify", {"task_id": "7c1e7a3e-5a0b-4f7c-9d7e-4d3f1b2a9c10"}),
    ("channel-list", {}),
    ("channel-close", {"channel_id": "7c1e7a3e-5a0b-4f7c-9d7e-4d3f1b2a9c10"}),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("name", "kwargs"), PRIVATE_PAGES)
def test_anonymous_visitors_are_sent_to_log_in(anon, name, kwargs):
    url = reverse(name, kwargs=kwargs)

    response = anon.get(url)

    assert response.status_code == 302
    assert response["Location"] == f"{reverse('login')}?next={url}"


@pytest.mark.django_db
def test_an_htmx_request_without_a_session_sends_the_page_to_log_in(anon):
    response = anon.get(
        reverse("task-list"), HTTP_HX_REQUEST="true", HTTP_HX_CURRENT_URL="http://testserver/"
    )

    assert response.status_code == 200
    assert response["HX-Redirect"] == f"{reverse('login')}?next=/"


@pytest.mark.django_db
@pytest.mark.parametrize(("name", "kwargs"), PRIVATE_POSTS)
def test_anonymous_posts_change_nothing(anon, name, kwargs):
    response = anon.post(reverse(name, kwargs=kwargs), {"amount": "5"})

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))
    assert not Account.objects.filter(kind="wallet").exists()


@pytest.mark.django_db
def test_the_signup_form_asks_for_a_username_and_a_password(anon):
    body = page(anon.get(reverse("signup")))

    assert '<label for="id_username">Username' in body
    assert '<label for="id_password">Password' in body
    assert 'hx-headers=\'{"X-CSRFToken": "' in body
    assert "django_htmx/htmx-2.min.js" in body  # served locally, no CDN


@pytest.mark.django_db
def test_signing_up_opens_a_wallet_and_logs_in(anon):
    response = anon.post(
        reverse("signup"), {"username": "dora", "password": "a long enough passphrase"}
    )

    assert response.status_code == 302
    assert response["Location"] == reverse("wallet")
    dora = User.objects.get(username="dora")
    assert Account.objects.get(user=dora).balance == 0
    welcome = anon.get(response["Location"]).content.decode()
    assert "Welcome, dora!" in welcome


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("username", "password", "field", "message"),
    [
        ("alice", "a long enough passphrase", "username", "This username is taken."),
        ("ALICE", "a long enough passphrase", "username", "This username is taken."),
        ("dora smith", "a long enough passphrase", "username", "Letters, digits"),
        ("dora", "short", "password", "This password is too short"),
        ("dora", "12345678901", "password", "This password is entirely numeric"),
        ("dora", "", "password", "This field is required."),
    ],
)
def test_signup_errors_appear_next_to_their_field(anon, alice, username, password, field, message):
    response = anon.post(reverse("signup"), {"username": username, "password": password})

    assert response.status_code == 200
    body = page(response)
    errors = body.split(f'id="id_{field}_error"')[1].split("</ul>")[0]
    assert message in errors
    assert User.objects.count() == 1


@pytest.mark.django_db
def test_an_htmx_signup_gets_the_form_back_or_a_client_redirect(anon):
    failed = anon.post(reverse("signup"), {"username": "dora", "password": "x"}, **HTMX)
    assert 'id="signup-form"' in fragment(failed)
    assert "This password is too short" in failed.content.decode()

    done = anon.post(
        reverse("signup"), {"username": "dora", "password": "a long enough passphrase"}, **HTMX
    )
    assert done.status_code == 200
    assert done["HX-Redirect"] == reverse("wallet")


@pytest.mark.django_db
def test_signed_in_users_skip_signup_and_login(as_alice):
    assert as_alice.get(reverse("signup"))["Location"] == reverse("dashboard")
    assert as_alice.get(reverse("login"))["Location"] == reverse("dashboard")


@pytest.mark.django_db
def test_logging_in_and_out(anon):
    User.objects.create_user("dora", password="a long enough passphrase")
    body = page(anon.get(reverse("login")))
    assert '<label for="id_username">Username' in body
    assert '<label for="id_password">Password' in body

    wrong = anon.post(reverse("login"), {"username": "dora", "password": "nope"})
    assert "Please enter a correct username and password" in wrong.content.decode()

    response = anon.post(
        reverse("login"), {"username": "dora", "password": "a long enough passphrase"}
    )
    assert response["Location"] == reverse("dashboard")
    assert anon.get(reverse("dashboard")).status_code == 200

    assert anon.get(reverse("logout")).status_code == 405  # logging out is a POST
    assert anon.post(reverse("logout"))["Location"] == reverse("login")
    assert anon.get(reverse("dashboard")).status_code == 302


@pytest.mark.django_db
def test_posts_without_a_csrf_token_are_refused(alice):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)

    refused = client.post(reverse("wallet"), {"amount": "5", "idempotency_key": "k" * 24})
    assert refused.status_code == 403
    assert "This form has expired" in refused.content.decode()
    assert Account.objects.get(user=alice).balance == 0

    # The token the page hands out (in the form and in hx-headers) is accepted.
    client.get(reverse("wallet"))
    token = client.cookies["csrftoken"].value
    accepted = client.post(
        reverse("wallet"),
        {"amount": "5", "idempotency_key": "k" * 24},
        HTTP_X_CSRFTOKEN=token,
        **HTMX,
    )
    assert accepted.status_code == 200
    assert Account.objects.get(user=alice).balance == 5_000_000


@pytest.mark.django_db
def test_logout_needs_a_csrf_token_too(alice):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)

    assert client.post(reverse("logout")).status_code == 403
    assert client.get(reverse("dashboard")).status_code == 200
