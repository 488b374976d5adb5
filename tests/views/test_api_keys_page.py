"""The API keys page, without JavaScript and with htmx: create (the key shown once), the
spend bars, revoke. charlie has no access to alice's keys."""

from __future__ import annotations

import hashlib
import re

from django.contrib.auth.models import User
from django.urls import reverse

from escrow.services import deposit_create
from marketplace.apikey_models import ApiKey
from marketplace.apikeys import api_key_create
from marketplace.services import task_submit

from .conftest import HTMX

URL = "/api-keys/"
KEY_PATTERN = re.compile(r'value="(axk_[a-z0-9]{8}_[A-Za-z0-9_-]{43})"')


def test_the_page_needs_a_login(anon):
    response = anon.get(URL)

    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_creating_a_key_shows_it_once_with_its_limits(as_alice, alice, echo):
    response = as_alice.post(
        URL,
        {
            "name": "nightly",
            "scopes": ["tasks:read", "tasks:write"],
            "per_task": "0.2",
            "daily": "2",
            "monthly": "",
            "total": "50",
            "agents": [str(echo.pk)],
            "expires": "30",
        },
    )

    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    found = KEY_PATTERN.search(response.content.decode())
    assert found is not None
    secret = found.group(1)
    key = ApiKey.objects.get()
    assert key.secret_sha256 == hashlib.sha256(secret.encode()).hexdigest()
    assert (key.name, key.scopes) == ("nightly", ["tasks:read", "tasks:write"])
    assert key.limits() == {
        "per_task": 200_000,
        "daily": 2_000_000,
        "monthly": None,
        "total": 50_000_000,
    }
    assert [agent.slug for agent in key.agents.all()] == ["echo"]
    assert key.expires_at is not None
    # Never again.
    assert secret not in as_alice.get(URL).content.decode()


def test_the_form_is_redrawn_with_its_errors(as_alice):
    response = as_alice.post(URL, {"name": "", "scopes": [], "daily": "-1"})

    page = response.content.decode()
    assert response.status_code == 200
    assert "This field is required." in page and "Enter a positive amount." in page
    assert not ApiKey.objects.exists()


def test_a_refusal_of_the_service_lands_on_the_form(as_alice, alice, settings):
    settings.API_KEYS_MAX_PER_USER = 1
    api_key_create(user=alice, name="first", scopes=["tasks:read"])

    response = as_alice.post(URL, {"name": "second", "scopes": ["tasks:read"]})

    assert "as many active API keys as allowed" in response.content.decode()
    assert ApiKey.objects.count() == 1


def test_htmx_gets_the_panel_with_the_new_key(as_alice):
    response = as_alice.post(URL, {"name": "bot", "scopes": ["wallet:read"]}, **HTMX)

    page = response.content.decode()
    assert page.lstrip().startswith('<div id="api-keys-panel">')
    assert KEY_PATTERN.search(page)
    assert "<html" not in page


def test_spend_bars_show_what_each_limit_has_left(as_alice, alice, echo):
    deposit_create(user_id=alice.pk, amount=5_000_000)
    key, _ = api_key_create(
        user=alice,
        name="bot",
        scopes=["tasks:write"],
        limits={"daily": 1_000_000, "total": 4_000_000},
    )
    task_submit(requester=alice, agent=echo, input="x", budget=250_000, api_key=key)

    page = as_alice.get(URL).content.decode()

    assert 'aria-label="Today (UTC): 0.250000 CR of 1.000000 CR"' in page
    assert 'style="width: 25%"' in page
    assert 'aria-label="In all: 0.250000 CR of 4.000000 CR"' in page
    assert 'style="width: 6%"' in page


def test_revoking_without_javascript_redirects_back(as_alice, alice):
    key, _ = api_key_create(user=alice, name="bot", scopes=["tasks:read"])

    response = as_alice.post(reverse("api-key-revoke", args=[key.pk]), follow=True)

    key.refresh_from_db()
    assert key.revoked_at is not None
    assert response.redirect_chain == [(URL, 302)]
    assert "Revoked “bot”" in response.content.decode()
    assert 'data-testid="revoked"' in response.content.decode()


def test_revoking_with_htmx_swaps_the_panel(as_alice, alice):
    key, _ = api_key_create(user=alice, name="bot", scopes=["tasks:read"])

    response = as_alice.post(reverse("api-key-revoke", args=[key.pk]), **HTMX)

    page = response.content.decode()
    assert page.lstrip().startswith('<div id="api-keys-panel">')
    assert "Revoked “bot”" in page  # the message travels with the fragment
    assert ApiKey.objects.get().revoked_at is not None


def test_charlie_cannot_see_or_revoke_alices_keys(as_charlie, alice):
    key, _ = api_key_create(user=alice, name="alices bot", scopes=["tasks:read"])

    assert "alices bot" not in as_charlie.get(URL).content.decode()
    assert as_charlie.post(reverse("api-key-revoke", args=[key.pk])).status_code == 404
    assert ApiKey.objects.get().revoked_at is None


def test_the_nav_links_to_the_page(as_alice):
    page = as_alice.get(URL).content.decode()

    assert f'<a href="{URL}" aria-current="page">API keys</a>' in page


def test_operators_see_keys_in_the_admin_without_their_secrets_and_can_revoke(alice, client):
    operator = User.objects.create_superuser("operator", password="x")
    client.force_login(operator)
    key, secret = api_key_create(user=alice, name="bot", scopes=["tasks:read"])
    changelist = reverse("admin:marketplace_apikey_changelist")

    page = client.get(changelist).content.decode()
    detail = client.get(reverse("admin:marketplace_apikey_change", args=[key.pk])).content.decode()
    response = client.post(
        changelist, {"action": "revoke", "_selected_action": [str(key.pk)]}, follow=True
    )

    assert key.prefix in page and "bot" in page
    assert secret not in detail and key.secret_sha256 not in detail
    assert "Revoked 1 key(s)." in response.content.decode()
    assert ApiKey.objects.get().revoked_at is not None
    assert client.get(reverse("admin:marketplace_apikeycharge_changelist")).status_code == 200
