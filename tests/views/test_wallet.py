"""The wallet page: deposits in credits, the ledger with running balances, CSV export."""

from __future__ import annotations

import csv
import io
import re

import pytest
from django.urls import reverse

from escrow.models import Transfer
from escrow.services import deposit_create
from tests.views.conftest import (
    HTMX,
    balance,
    cost_of,
    fragment,
    page,
    settle,
    submit,
)

WALLET = reverse("wallet")
KEY = "form-key-0123456789abcdef"

pytestmark = pytest.mark.django_db


def deposit(client, amount: str, key: str = KEY, **extra):
    return client.post(WALLET, {"amount": amount, "idempotency_key": key}, **extra)


def rendered_key(body: str) -> str:
    match = re.search(r'name="idempotency_key" value="([^"]+)"', body)
    assert match, "the form carries an idempotency key"
    return match.group(1)


def test_the_wallet_page_shows_balances_an_empty_ledger_and_a_deposit_form(as_alice, alice):
    body = page(as_alice.get(WALLET))

    assert "0.000000 CR" in body
    assert '<label for="id_amount">Amount' in body
    assert "No movements yet" in body
    assert len(rendered_key(body)) >= 16
    # Every rendering gets its own key.
    assert rendered_key(body) != rendered_key(as_alice.get(WALLET).content.decode())


def test_a_deposit_in_credits_lands_in_micro_credits_then_redirects(as_alice, alice):
    response = deposit(as_alice, "12.5")

    assert response.status_code == 302
    assert response["Location"] == WALLET
    assert balance(alice) == 12_500_000
    body = as_alice.get(WALLET).content.decode()
    assert "Added 12.500000 CR. Your balance is 12.500000 CR." in body
    assert "+12.500000 CR" in body


@pytest.mark.parametrize(
    ("typed", "micro"),
    [
        ("1", 1_000_000),
        ("0.000001", 1),
        (" 7.25 ", 7_250_000),
        ("3.", 3_000_000),
        (".5", 500_000),
        ("2 CR", 2_000_000),
        ("123456.654321", 123_456_654_321),
    ],
)
def test_credit_amounts_are_parsed_exactly(as_alice, alice, typed, micro):
    deposit(as_alice, typed)

    assert balance(alice) == micro


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("", "This field is required."),
        ("abc", "Enter an amount in credits, like 12.5."),
        ("1e3", "Enter an amount in credits, like 12.5."),
        ("1,5", "Enter an amount in credits, like 12.5."),
        ("NaN", "Enter an amount in credits, like 12.5."),
        ("-5", "Enter a positive amount."),
        ("0", "Enter an amount greater than zero."),
        ("1.0000001", "At most 6 decimal places"),
        ("0.0000005", "At most 6 decimal places"),
        ("1000000.000001", "At most 1000000.000000 CR."),
        ("9" * 41, "Enter an amount in credits, like 12.5."),
    ],
)
def test_bad_amounts_are_refused_next_to_the_field(as_alice, alice, typed, message):
    response = deposit(as_alice, typed)

    assert response.status_code == 200
    errors = response.content.decode().split('id="id_amount_error"')[1].split("</ul>")[0]
    assert message in errors
    assert balance(alice) == 0
    assert not Transfer.objects.exists()


def test_the_same_form_submitted_twice_deposits_once(as_alice, alice):
    first = deposit(as_alice, "5")
    again = deposit(as_alice, "5")

    assert (first.status_code, again.status_code) == (302, 302)
    assert balance(alice) == 5_000_000
    assert Transfer.objects.filter(kind="deposit").count() == 1


def test_a_reused_form_with_another_amount_is_refused_with_a_fresh_key(as_alice, alice):
    deposit(as_alice, "5")

    response = deposit(as_alice, "6")

    body = response.content.decode()
    assert "already used for another amount" in body
    assert rendered_key(body) != KEY
    assert balance(alice) == 5_000_000
    # Submitting the corrected form (its new key) works.
    deposit(as_alice, "6", key=rendered_key(body))
    assert balance(alice) == 11_000_000


def test_a_damaged_form_key_is_refused(as_alice, alice):
    body = deposit(as_alice, "5", key="short").content.decode()

    assert "This form is damaged" in body
    assert balance(alice) == 0


def test_deposits_are_refused_when_no_funding_provider_is_enabled(as_alice, alice, settings):
    settings.DEV_FUNDING_ENABLED = False

    assert "Deposits are not enabled" in as_alice.get(WALLET).content.decode()
    response = deposit(as_alice, "5")
    assert response.status_code == 200
    assert "Deposits are not enabled" in response.content.decode()
    assert balance(alice) == 0


def test_an_htmx_deposit_swaps_in_the_new_balance_and_a_fresh_form(as_alice, alice):
    response = deposit(as_alice, "2.5", **HTMX)

    body = fragment(response)
    assert response.status_code == 200
    assert body.lstrip().startswith('<div id="wallet-panel">')
    assert 'data-testid="balance">2.500000 CR<' in body
    assert rendered_key(body) != KEY
    # The flash message travels out of band into the page's message slot.
    assert 'id="messages"' in body and 'hx-swap-oob="true"' in body
    assert "Added 2.500000 CR" in body
    assert response["Vary"] and "HX-Request" in response["Vary"]


def test_an_htmx_deposit_with_an_error_gets_the_panel_with_the_error(as_alice, alice):
    body = fragment(deposit(as_alice, "-1", **HTMX))

    assert "Enter a positive amount." in body
    assert "hx-swap-oob" not in body


def test_the_ledger_shows_each_line_with_the_balance_after_it(as_alice, funded_alice, echo):
    task = settle(submit(funded_alice, echo, budget=250_000))

    body = page(as_alice.get(WALLET))

    # deposit 10 → hold −0.25 → refund +(0.25 − cost)
    assert "Deposit" in body
    assert "Budget held in escrow" in body
    assert "Refund from escrow" in body
    assert "−0.250000 CR" in body
    assert f"{(10_000_000 - cost_of(task)) / 1e6:.6f} CR" in body
    assert "9.750000 CR" in body  # the balance right after the hold
    assert reverse("task-detail", args=[task.pk]) in body


def test_the_ledger_is_paginated_and_keeps_running_balances(as_alice, alice):
    for n in range(25):
        deposit_create(user_id=alice.pk, amount=1_000_000, idempotency_key=f"d{n}")

    first = as_alice.get(WALLET).content.decode()
    second = as_alice.get(WALLET, {"page": 2}).content.decode()

    assert "25.000000 CR" in first and "Page 1 of 2" in first
    assert "5.000000 CR" in second and "1.000000 CR" in second
    htmx_page = fragment(as_alice.get(WALLET, {"page": 2}, **HTMX))
    assert htmx_page.lstrip().startswith('<div id="wallet-panel">')


def test_nobody_sees_anybody_elses_ledger(as_charlie, funded_alice):
    body = as_charlie.get(WALLET).content.decode()

    assert "No movements yet" in body
    assert "10.000000 CR" not in body


def test_the_ledger_exports_as_csv_oldest_first(as_alice, funded_alice, echo, charlie):
    deposit_create(user_id=charlie.pk, amount=3_000_000)
    task = settle(submit(funded_alice, echo, budget=250_000))

    response = as_alice.get(reverse("wallet-export"))

    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert "attachment;" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [(r["kind"], r["direction"], r["amount_ucr"]) for r in rows] == [
        ("deposit", "in", "10000000"),
        ("escrow_hold", "out", "-250000"),
        ("escrow_refund", "in", str(250_000 - cost_of(task))),
    ]
    assert [r["balance_after_ucr"] for r in rows] == [
        "10000000",
        "9750000",
        str(10_000_000 - cost_of(task)),
    ]
    assert rows[0]["amount_cr"] == "10.000000"
    assert rows[1]["amount_cr"] == "-0.250000"
    assert rows[1]["task"] == str(task.pk) and rows[1]["agent"] == "echo"
