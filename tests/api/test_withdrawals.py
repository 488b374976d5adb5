"""POST/GET /api/v1/wallet/withdrawals/ and cancel: the contract of SPEC §14."""

from __future__ import annotations

import pytest

from escrow.models import Withdrawal
from escrow.services import deposit_create
from marketplace.withdrawals import withdrawal_process

from .conftest import balance, error

WITHDRAWALS = "/api/v1/wallet/withdrawals/"
CR = 1_000_000

pytestmark = pytest.mark.django_db


@pytest.fixture
def rich(alice):
    deposit_create(user_id=alice.pk, amount=10 * CR)
    return alice


def test_a_withdrawal_is_pending_and_has_left_the_wallet(as_alice, rich):
    response = as_alice.post(WITHDRAWALS, {"amount": 3 * CR}, HTTP_IDEMPOTENCY_KEY="w1")

    assert response.status_code == 201
    withdrawal = Withdrawal.objects.get()
    body = response.json()
    assert body == {
        "id": withdrawal.pk,
        "amount": 3 * CR,
        "status": "pending",
        "created_at": body["created_at"],
        "paid_at": None,
        "failure": None,
    }
    assert balance(rich) == 7 * CR


def test_a_replay_returns_the_same_withdrawal_and_another_body_conflicts(as_alice, rich):
    first = as_alice.post(WITHDRAWALS, {"amount": 2 * CR}, HTTP_IDEMPOTENCY_KEY="same")
    again = as_alice.post(WITHDRAWALS, {"amount": 2 * CR}, HTTP_IDEMPOTENCY_KEY="same")
    other = as_alice.post(WITHDRAWALS, {"amount": 5 * CR}, HTTP_IDEMPOTENCY_KEY="same")

    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert error(other) == (409, "idempotency_conflict")
    assert Withdrawal.objects.count() == 1
    assert balance(rich) == 8 * CR


def test_a_withdrawal_beyond_the_balance_is_402_and_below_the_minimum_400(as_alice, rich):
    assert error(as_alice.post(WITHDRAWALS, {"amount": 10 * CR + 1})) == (
        402,
        "insufficient_funds",
    )
    assert error(as_alice.post(WITHDRAWALS, {"amount": CR - 1})) == (400, "withdrawal_too_small")
    assert error(as_alice.post(WITHDRAWALS, {"amount": "5"})) == (400, "validation_error")
    assert Withdrawal.objects.count() == 0
    assert balance(rich) == 10 * CR


def test_withdrawals_are_listed_and_read_by_their_owner_only(as_alice, as_bob, rich):
    made = [as_alice.post(WITHDRAWALS, {"amount": CR}).json()["id"] for _ in range(3)]

    listing = as_alice.get(WITHDRAWALS).json()
    assert listing["count"] == 3
    assert [w["id"] for w in listing["results"]] == made[::-1]
    assert as_alice.get(f"{WITHDRAWALS}{made[0]}/").json()["status"] == "pending"
    assert error(as_bob.get(f"{WITHDRAWALS}{made[0]}/")) == (404, "not_found")
    assert error(as_bob.post(f"{WITHDRAWALS}{made[0]}/cancel/")) == (404, "not_found")
    assert as_bob.get(WITHDRAWALS).json()["count"] == 0


def test_a_paid_withdrawal_shows_when_it_was_paid_and_cannot_be_cancelled(as_alice, rich):
    created = as_alice.post(WITHDRAWALS, {"amount": 4 * CR}).json()
    withdrawal_process(created["id"])

    body = as_alice.get(f"{WITHDRAWALS}{created['id']}/").json()
    assert body["status"] == "paid" and body["paid_at"] is not None
    assert error(as_alice.post(f"{WITHDRAWALS}{created['id']}/cancel/")) == (
        409,
        "withdrawal_state_conflict",
    )
    assert balance(rich) == 6 * CR


def test_cancelling_a_pending_withdrawal_puts_the_money_back(as_alice, rich):
    created = as_alice.post(WITHDRAWALS, {"amount": 4 * CR}).json()

    response = as_alice.post(f"{WITHDRAWALS}{created['id']}/cancel/")

    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert balance(rich) == 10 * CR
