"""Payment channels and voucher keys through the API, as a program that knows SPEC §10 would."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from escrow.models import PaymentChannel, Voucher
from execution.services import Execution, task_claim, task_settle

from .conftest import balance, error

KEY = Ed25519PrivateKey.generate()
PUBLIC = base64.b64encode(KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def voucher(channel_id: str, nonce: int, amount: int, key: Ed25519PrivateKey = KEY) -> dict:
    message = f"agent-exchange/voucher/v1\n{channel_id}\n{nonce}\n{amount}".encode()
    return {
        "nonce": nonce,
        "cumulative_amount": amount,
        "signature": base64.b64encode(key.sign(message)).decode(),
    }


@pytest.fixture
def opened(as_alice, funded_alice, echo) -> dict:
    assert as_alice.post("/api/v1/keys/", {"public_key": PUBLIC}, format="json").status_code == 201
    response = as_alice.post(
        "/api/v1/channels/",
        {"agent": "echo", "deposit": 500_000},
        format="json",
        HTTP_IDEMPOTENCY_KEY="open-1",
    )
    assert response.status_code == 201, response.content
    return response.json()


def submit(client, channel_id: str, signed: dict, budget: int = 100_000):
    body = {
        "agent": "echo",
        "input": "hi",
        "budget": budget,
        "payment": "channel",
        "channel": channel_id,
        "voucher": signed,
    }
    return client.post("/api/v1/tasks/", body, format="json")


def test_opening_a_channel_moves_the_deposit_and_shows_in_the_wallet(as_alice, opened, alice):
    assert {k: opened[k] for k in ("agent", "deposit", "redeemed", "nonce", "status")} == {
        "agent": "echo",
        "deposit": 500_000,
        "redeemed": 0,
        "nonce": 0,
        "status": "open",
    }
    assert set(opened) >= {"id", "closes_at", "expires_at", "reserved", "in_flight"}
    wallet = as_alice.get("/api/v1/wallet/").json()
    assert (wallet["in_channels"], wallet["balance"]) == (500_000, balance(alice))
    again = as_alice.post(
        "/api/v1/channels/",
        {"agent": "echo", "deposit": 500_000},
        format="json",
        HTTP_IDEMPOTENCY_KEY="open-1",
    )
    assert (again.status_code, again.json()["id"]) == (201, opened["id"])
    assert PaymentChannel.objects.count() == 1


def test_opening_refuses_bad_requests(as_alice, funded_alice, echo):
    assert error(
        as_alice.post("/api/v1/channels/", {"agent": "echo", "deposit": 10**13}, format="json")
    ) == (402, "insufficient_funds")
    assert error(
        as_alice.post("/api/v1/channels/", {"agent": "nope", "deposit": 1}, format="json")
    ) == (400, "validation_error")
    assert error(
        as_alice.post("/api/v1/channels/", {"agent": "echo", "deposit": 0}, format="json")
    ) == (400, "validation_error")
    assert error(
        as_alice.post("/api/v1/channels/", {"agent": "echo", "deposit": "5"}, format="json")
    ) == (400, "validation_error")
    assert PaymentChannel.objects.count() == 0


def test_a_task_paid_by_voucher_redeems_its_cost(as_alice, opened):
    response = submit(as_alice, opened["id"], voucher(opened["id"], 1, 100_000))
    assert response.status_code == 201, response.content
    task_id = response.json()["id"]
    channel = as_alice.get(f"/api/v1/channels/{opened['id']}/").json()
    assert (channel["nonce"], channel["reserved"], channel["in_flight"]) == (1, 100_000, 1)
    claim = task_claim(task_id=task_id)
    assert claim is not None
    run = Execution(exit_code=0, stdout=b"hi", fuel_used=0, fuel_limit=10, elapsed_ms=1)
    task_settle(task_id=task_id, attempt=claim[1], execution=run)
    task = as_alice.get(f"/api/v1/tasks/{task_id}/").json()
    assert (task["status"], task["escrow"]["status"]) == ("succeeded", "completed")
    channel = as_alice.get(f"/api/v1/channels/{opened['id']}/").json()
    assert (channel["redeemed"], channel["reserved"], channel["in_flight"]) == (task["cost"], 0, 0)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (
            lambda cid: voucher(cid, 1, 100_000, Ed25519PrivateKey.generate()),
            (403, "voucher_bad_signature"),
        ),
        (lambda cid: voucher(cid, 1, 600_000), (402, "voucher_exceeds_deposit")),
        (lambda cid: voucher(cid, 1, 99_999), (402, "voucher_insufficient")),
        (lambda cid: {"nonce": 1, "cumulative_amount": 100_000}, (400, "validation_error")),
        (
            lambda cid: {"nonce": "1", "cumulative_amount": 1, "signature": "x"},
            (400, "validation_error"),
        ),
    ],
)
def test_bad_vouchers_get_their_own_codes_and_hold_nothing(as_alice, opened, make, expected):
    assert error(submit(as_alice, opened["id"], make(opened["id"]))) == expected
    assert Voucher.objects.count() == 0
    channel = PaymentChannel.objects.get()
    assert (channel.reserved, channel.in_flight) == (0, 0)


def test_replayed_and_stale_vouchers_are_conflicts(as_alice, opened):
    assert submit(as_alice, opened["id"], voucher(opened["id"], 2, 100_000)).status_code == 201
    assert error(submit(as_alice, opened["id"], voucher(opened["id"], 2, 200_000))) == (
        409,
        "voucher_replayed",
    )
    assert error(submit(as_alice, opened["id"], voucher(opened["id"], 1, 200_000))) == (
        409,
        "voucher_nonce_stale",
    )


def test_closing_settles_and_a_second_close_is_a_conflict(as_alice, as_bob, opened, alice):
    before = balance(alice)
    closed = as_bob.post(f"/api/v1/channels/{opened['id']}/close/")  # the agent's owner
    assert (closed.status_code, closed.json()["status"]) == (200, "settled")
    assert balance(alice) == before + 500_000
    assert error(as_alice.post(f"/api/v1/channels/{opened['id']}/close/")) == (
        409,
        "channel_not_open",
    )
    assert error(submit(as_alice, opened["id"], voucher(opened["id"], 1, 100_000))) == (
        409,
        "channel_not_open",
    )


def test_others_cannot_see_use_or_close_a_channel(as_charlie, charlie, opened):
    assert error(as_charlie.get(f"/api/v1/channels/{opened['id']}/")) == (404, "not_found")
    assert error(as_charlie.post(f"/api/v1/channels/{opened['id']}/close/")) == (404, "not_found")
    assert as_charlie.get("/api/v1/channels/").json()["count"] == 0
    from escrow.services import deposit_create

    deposit_create(user_id=charlie.pk, amount=1_000_000)
    as_charlie.post("/api/v1/keys/", {"public_key": PUBLIC}, format="json")
    assert error(submit(as_charlie, opened["id"], voucher(opened["id"], 1, 100_000))) == (
        404,
        "not_found",
    )


def test_registering_keys(as_alice):
    ok = as_alice.post("/api/v1/keys/", {"public_key": PUBLIC}, format="json")
    assert ok.status_code == 201 and ok.json()["public_key"] == PUBLIC
    assert error(as_alice.post("/api/v1/keys/", {"public_key": "bm9wZQ=="}, format="json")) == (
        400,
        "invalid_public_key",
    )
    assert error(as_alice.post("/api/v1/keys/", {}, format="json")) == (400, "validation_error")
