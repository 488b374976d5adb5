"""The wallet page's withdrawals: the form, the history, live status rows, cancel."""

from __future__ import annotations

import pytest
from django.urls import reverse

from escrow.models import Withdrawal
from escrow.services import deposit_create
from marketplace.withdrawals import withdrawal_process
from tests.views.conftest import HTMX, balance

SECTION = reverse("withdrawals")
CR = 1_000_000

pytestmark = pytest.mark.django_db


@pytest.fixture
def rich(alice):
    deposit_create(user_id=alice.pk, amount=10 * CR)
    return alice


def test_the_wallet_page_loads_the_withdrawals_section(as_alice, rich):
    assert f'hx-get="{SECTION}"' in as_alice.get(reverse("wallet")).content.decode()
    body = as_alice.get(SECTION, **HTMX).content.decode()
    assert 'data-testid="withdraw"' in body and "At least 1.000000 CR" in body


def test_withdrawing_in_credits_takes_the_money_and_shows_a_polling_pending_row(as_alice, rich):
    response = as_alice.post(
        SECTION, {"amount": "2.5", "idempotency_key": "form-key-1-0123456789abcdef"}, **HTMX
    )

    withdrawal = Withdrawal.objects.get()
    assert (withdrawal.amount, withdrawal.status) == (2_500_000, "pending")
    assert balance(rich) == 7_500_000
    body = response.content.decode()
    row = reverse("withdrawal-row", args=[withdrawal.pk])
    assert f'hx-get="{row}"' in body and 'data-status="pending"' in body
    assert response["HX-Trigger"] == "wallet-changed"  # the balances reload
    # The same rendered form again is the same withdrawal.
    as_alice.post(
        SECTION, {"amount": "2.5", "idempotency_key": "form-key-1-0123456789abcdef"}, **HTMX
    )
    assert Withdrawal.objects.count() == 1


def test_a_row_polls_until_paid_then_stops(as_alice, rich):
    as_alice.post(
        SECTION, {"amount": "1", "idempotency_key": "form-key-2-0123456789abcdef"}, **HTMX
    )
    withdrawal = Withdrawal.objects.get()
    row = reverse("withdrawal-row", args=[withdrawal.pk])

    assert as_alice.get(row, **HTMX).status_code == 200
    withdrawal_process(withdrawal.pk)
    final = as_alice.get(row, **HTMX)

    assert final.status_code == 286  # htmx: stop polling
    body = final.content.decode()
    assert 'data-status="paid"' in body and "hx-get" not in body


def test_a_withdrawal_beyond_the_balance_is_refused_on_the_form(as_alice, rich):
    response = as_alice.post(
        SECTION, {"amount": "11", "idempotency_key": "form-key-3-0123456789abcdef"}, **HTMX
    )

    assert "balance" in response.content.decode().lower()
    assert Withdrawal.objects.count() == 0 and balance(rich) == 10 * CR


def test_cancel_puts_a_pending_withdrawal_back_and_others_cannot(as_alice, as_bob, rich):
    as_alice.post(
        SECTION, {"amount": "3", "idempotency_key": "form-key-4-0123456789abcdef"}, **HTMX
    )
    withdrawal = Withdrawal.objects.get()
    cancel = reverse("withdrawal-cancel", args=[withdrawal.pk])

    as_bob.post(cancel, **HTMX)
    assert Withdrawal.objects.get().status == "pending"
    as_alice.post(cancel, **HTMX)

    assert Withdrawal.objects.get().status == "cancelled"
    assert balance(rich) == 10 * CR
    assert as_bob.get(reverse("withdrawal-row", args=[withdrawal.pk]), **HTMX).status_code == 404
