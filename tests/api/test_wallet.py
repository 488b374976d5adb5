"""Wallet summary, deposits and the ledger lines of one user."""

from __future__ import annotations

import pytest

from escrow.models import Account, Transfer
from escrow.services import deposit_create
from marketplace.models import IdempotencyRecord
from marketplace.services import task_cancel, task_submit

from .conftest import balance, error

WALLET = "/api/v1/wallet/"
DEPOSITS = "/api/v1/wallet/deposits/"
TRANSFERS = "/api/v1/wallet/transfers/"

pytestmark = pytest.mark.django_db


def test_a_new_wallet_is_empty(as_alice):
    response = as_alice.get(WALLET)

    assert response.status_code == 200
    assert response.json() == {
        "balance": 0,
        "held_in_escrow": 0,
        "in_channels": 0,
        "pending_earnings": 0,
        "next_release_at": None,
    }


def test_the_wallet_shows_what_escrow_holds_for_tasks_in_flight(as_alice, funded_alice, echo):
    task_submit(requester=funded_alice, agent=echo, input="a", budget=300_000)
    cancelled = task_submit(requester=funded_alice, agent=echo, input="b", budget=200_000)
    task_cancel(task=cancelled)

    response = as_alice.get(WALLET)

    assert response.json() == {
        "balance": 10_000_000 - 300_000,
        "held_in_escrow": 300_000,
        "in_channels": 0,
        "pending_earnings": 0,
        "next_release_at": None,
    }


def test_the_wallet_belongs_to_whoever_asks(as_bob, funded_alice):
    assert as_bob.get(WALLET).json()["balance"] == 0


def test_a_deposit_credits_the_wallet_from_outside(as_alice, alice):
    response = as_alice.post(DEPOSITS, {"amount": 2_500_000})

    assert response.status_code == 201
    transfer = Transfer.objects.get()
    assert response.json() == {
        "transfer_id": transfer.pk,
        "amount": 2_500_000,
        "balance": 2_500_000,
    }
    assert (transfer.kind, transfer.amount) == ("deposit", 2_500_000)
    assert Account.objects.get(pk=transfer.debit_account_id).kind == Account.Kind.EXTERNAL
    assert balance(alice) == 2_500_000


@pytest.mark.parametrize(
    "amount", [0, -1, 1.5, 100.0, "100", True, None, [], 10**12 + 1, 2**64, "1e3"]
)
def test_a_deposit_amount_is_a_positive_json_integer_within_the_limit(as_alice, alice, amount):
    response = as_alice.post(DEPOSITS, {"amount": amount})

    assert error(response) == (400, "validation_error")
    assert list(response.json()["error"]["fields"]) == ["amount"]
    assert Transfer.objects.count() == 0
    assert balance(alice) == 0


def test_deposits_need_an_enabled_funding_provider(as_alice, alice, settings):
    settings.DEV_FUNDING_ENABLED = False

    response = as_alice.post(DEPOSITS, {"amount": 1_000}, HTTP_IDEMPOTENCY_KEY="k1")

    assert error(response) == (403, "funding_unavailable")
    assert (Transfer.objects.count(), IdempotencyRecord.objects.count()) == (0, 0)
    assert balance(alice) == 0


def test_a_repeated_deposit_with_its_key_is_answered_from_the_first(as_alice, alice):
    first = as_alice.post(DEPOSITS, {"amount": 7_000}, HTTP_IDEMPOTENCY_KEY="pay-1")
    deposit_create(user_id=alice.pk, amount=1)  # the balance moves on in between
    again = as_alice.post(DEPOSITS, {"amount": 7_000}, HTTP_IDEMPOTENCY_KEY="pay-1")

    assert first.status_code == again.status_code == 201
    assert (
        again.json()
        == first.json()
        == {
            "transfer_id": first.json()["transfer_id"],
            "amount": 7_000,
            "balance": 7_000,
        }
    )
    assert "Idempotent-Replayed" not in first.headers
    assert again.headers["Idempotent-Replayed"] == "true"
    assert Transfer.objects.filter(kind="deposit", amount=7_000).count() == 1
    assert balance(alice) == 7_001


def test_the_same_key_with_another_amount_is_a_conflict(as_alice, alice):
    as_alice.post(DEPOSITS, {"amount": 7_000}, HTTP_IDEMPOTENCY_KEY="pay-1")

    response = as_alice.post(DEPOSITS, {"amount": 8_000}, HTTP_IDEMPOTENCY_KEY="pay-1")

    assert error(response) == (409, "idempotency_conflict")
    assert balance(alice) == 7_000


@pytest.mark.parametrize("key", ["", " ", "has space", "é", "x" * 101])
def test_an_unusable_idempotency_key_is_refused(as_alice, alice, key):
    response = as_alice.post(DEPOSITS, {"amount": 1}, HTTP_IDEMPOTENCY_KEY=key)

    assert error(response) == (400, "invalid_idempotency_key")
    assert Transfer.objects.count() == 0


def test_transfers_list_the_users_own_ledger_lines_with_signed_amounts(
    as_alice, funded_alice, bob, echo
):
    deposit_create(user_id=bob.pk, amount=555)  # bob's: not in alice's list
    task = task_submit(requester=funded_alice, agent=echo, input="a", budget=300_000)
    task_cancel(task=task)

    response = as_alice.get(TRANSFERS)

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 3
    lines = [(t["kind"], t["direction"], t["amount"], t["task"]) for t in body["results"]]
    assert lines == [
        ("escrow_refund", "in", 300_000, str(task.pk)),
        ("escrow_hold", "out", -300_000, str(task.pk)),
        ("deposit", "in", 10_000_000, None),
    ]
    assert sum(t["amount"] for t in body["results"]) == balance(funded_alice)


def test_transfers_filter_by_kind_and_paginate(as_alice, alice):
    for amount in range(1, 6):
        deposit_create(user_id=alice.pk, amount=amount)

    page = as_alice.get(TRANSFERS, {"kind": "deposit", "page_size": 2, "page": 2}).json()

    assert page["count"] == 5
    assert [t["amount"] for t in page["results"]] == [3, 2]
    assert (
        page["next"] == "http://testserver/api/v1/wallet/transfers/?kind=deposit&page=3&page_size=2"
    )
    assert page["previous"] == "http://testserver/api/v1/wallet/transfers/?kind=deposit&page_size=2"
    assert as_alice.get(TRANSFERS, {"kind": "escrow_hold"}).json()["count"] == 0


@pytest.mark.parametrize(
    "query", [{"kind": "nope"}, {"page": "0"}, {"page": "x"}, {"page_size": "1000"}]
)
def test_transfer_queries_are_validated(as_alice, query):
    assert error(as_alice.get(TRANSFERS, query)) == (400, "validation_error")


def test_a_page_past_the_end_is_404(as_alice):
    assert error(as_alice.get(TRANSFERS, {"page": "2"})) == (404, "not_found")
