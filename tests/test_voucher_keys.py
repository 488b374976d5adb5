"""Voucher keys: signatures are checked before any row is locked, keys per user are capped,
and a revoked key verifies no new voucher."""

from __future__ import annotations

import base64
import threading

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.db import connection, connections, transaction
from django.test.utils import CaptureQueriesContext

from escrow import errors
from escrow.channels import channel_open, voucher_message, voucher_sign_custodial
from escrow.keys import custodial_key, key_register
from escrow.models import PaymentChannel, RequesterKey, Voucher
from escrow.services import deposit_create
from marketplace.models import Task
from marketplace.services import task_submit
from tests.api.conftest import client_for, error
from tests.factories import UserFactory, make_agent

KEYS = "/api/v1/keys/"


def public(key: Ed25519PrivateKey) -> str:
    return base64.b64encode(key.public_key().public_bytes_raw()).decode()


def voucher(channel, nonce: int, amount: int, key: Ed25519PrivateKey) -> dict:
    signature = key.sign(voucher_message(channel.pk, nonce, amount))
    return {
        "nonce": nonce,
        "cumulative_amount": amount,
        "signature": base64.b64encode(signature).decode(),
    }


def submit(user, agent, channel, signed: dict) -> Task:
    return task_submit(
        requester=user,
        agent=agent,
        input="hi",
        budget=10_000,
        payment="channel",
        channel=str(channel.pk),
        voucher=signed,
    )


def open_channel(user, owner):
    agent = make_agent(owner)
    deposit_create(user_id=user.pk, amount=1_000_000)
    channel = channel_open(
        requester_user_id=user.pk, agent_id=agent.pk, payee_user_id=owner.pk, deposit=100_000
    )
    return agent, channel


# --- checked before any lock -------------------------------------------------------------


@pytest.mark.django_db
def test_a_forged_voucher_is_refused_before_anything_is_written_or_locked(alice, bob):
    agent, channel = open_channel(alice, bob)
    key_register(user_id=alice.pk, public_key=public(Ed25519PrivateKey.generate()))
    forged = voucher(channel, 1, 10_000, Ed25519PrivateKey.generate())

    with CaptureQueriesContext(connection) as queries, pytest.raises(errors.VoucherBadSignature):
        submit(alice, agent, channel, forged)

    statements = [q["sql"].upper() for q in queries.captured_queries]
    assert not [sql for sql in statements if "FOR UPDATE" in sql or "FOR NO KEY UPDATE" in sql]
    assert not [sql for sql in statements if sql.startswith(("INSERT", "UPDATE", "DELETE"))]
    assert Task.objects.count() == 0 and Voucher.objects.count() == 0


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_forged_vouchers_are_refused_while_the_channel_is_locked():
    """A channel held by a slow transaction does not slow the refusal of forgeries, and
    forgeries never queue for the lock the genuine submissions need."""
    alice, bob = UserFactory.create(username="alice"), UserFactory.create(username="bob")
    agent, channel = open_channel(alice, bob)
    genuine = Ed25519PrivateKey.generate()
    key_register(user_id=alice.pk, public_key=public(genuine))
    locked, release = threading.Event(), threading.Event()

    def hold_the_channel() -> None:
        try:
            with transaction.atomic():
                PaymentChannel.objects.select_for_update(no_key=True).get(pk=channel.pk)
                locked.set()
                release.wait(timeout=30)
        finally:
            connections["default"].close()

    holder = threading.Thread(target=hold_the_channel)
    holder.start()
    assert locked.wait(timeout=10)
    refused: list[str] = []

    def forge() -> None:
        try:
            with connection.cursor() as cursor:
                # Had the forgery queued for the lock, it would fail with lock_timeout instead.
                cursor.execute("SET lock_timeout = '3s'")
            for nonce in range(1, 21):
                try:
                    submit(
                        alice,
                        agent,
                        channel,
                        voucher(channel, nonce, 10_000, Ed25519PrivateKey.generate()),
                    )
                except errors.DomainError as exc:
                    refused.append(exc.code)
        finally:
            connections["default"].close()

    forger = threading.Thread(target=forge)
    forger.start()
    forger.join(timeout=20)
    release.set()
    holder.join(timeout=10)

    assert not forger.is_alive()
    assert refused == ["voucher_bad_signature"] * 20
    assert submit(alice, agent, channel, voucher(channel, 1, 10_000, genuine)).status == "queued"


# --- revocation -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_revoked_key_verifies_no_new_voucher(alice, bob):
    agent, channel = open_channel(alice, bob)
    key = Ed25519PrivateKey.generate()
    as_alice = client_for(alice)
    registered = as_alice.post(KEYS, {"public_key": public(key)})
    accepted = submit(alice, agent, channel, voucher(channel, 1, 10_000, key))

    revoked = as_alice.delete(f"{KEYS}{registered.json()['id']}/")

    assert (registered.status_code, revoked.status_code) == (201, 204)
    with pytest.raises(errors.VoucherBadSignature):
        submit(alice, agent, channel, voucher(channel, 2, 20_000, key))
    assert accepted.status == Task.Status.QUEUED  # what it signed before stays accepted
    listed = as_alice.get(KEYS).json()["results"]
    assert [(k["key_id"], k["revoked_at"] is not None) for k in listed] == [
        (registered.json()["key_id"], True)
    ]
    assert as_alice.delete(f"{KEYS}{registered.json()['id']}/").status_code == 204
    assert error(as_alice.post(KEYS, {"public_key": public(key)})) == (409, "key_revoked")


@pytest.mark.django_db
def test_nobody_else_can_revoke_a_key(alice, charlie):
    key = key_register(user_id=alice.pk, public_key=public(Ed25519PrivateKey.generate()))

    assert error(client_for(charlie).delete(f"{KEYS}{key.pk}/")) == (404, "not_found")
    assert error(client_for(charlie).delete(f"{KEYS}999999/")) == (404, "not_found")
    assert RequesterKey.objects.get(pk=key.pk).revoked_at is None
    assert client_for(charlie).get(KEYS).json()["count"] == 0


@pytest.mark.django_db
def test_a_revoked_custodial_key_is_replaced_by_a_new_one(alice, bob):
    agent, channel = open_channel(alice, bob)
    first = custodial_key(user_id=alice.pk)

    client_for(alice).delete(f"{KEYS}{first.pk}/")
    signed = voucher_sign_custodial(user_id=alice.pk, channel_id=channel.pk, budget=10_000)

    assert submit(alice, agent, channel, signed.as_dict()).status == Task.Status.QUEUED
    listed = client_for(alice).get(KEYS).json()["results"]
    assert [(k["custodial"], k["revoked_at"] is None) for k in listed] == [
        (True, True),
        (True, False),
    ]


# --- the cap --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_keys_per_user_are_capped_until_one_is_revoked(settings, alice, bob):
    settings.MAX_REQUESTER_KEYS = 2
    as_alice = client_for(alice)
    first, second = (
        as_alice.post(KEYS, {"public_key": public(Ed25519PrivateKey.generate())}) for _ in range(2)
    )
    custodial_key(user_id=alice.pk)  # the platform's own key is not counted
    third = public(Ed25519PrivateKey.generate())

    refused = as_alice.post(KEYS, {"public_key": third})
    again = as_alice.post(KEYS, {"public_key": second.json()["public_key"]})
    as_alice.delete(f"{KEYS}{first.json()['id']}/")
    accepted = as_alice.post(KEYS, {"public_key": third})

    assert error(refused) == (409, "too_many_keys")
    assert (again.status_code, again.json()["id"]) == (201, second.json()["id"])
    assert accepted.status_code == 201
    assert client_for(bob).post(KEYS, {"public_key": third}).status_code == 201


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_registrations_never_pass_the_cap(settings):
    settings.MAX_REQUESTER_KEYS = 3
    alice = UserFactory.create(username="alice")
    barrier = threading.Barrier(10)
    outcomes: list[str] = []

    def register() -> None:
        try:
            barrier.wait()
            key_register(user_id=alice.pk, public_key=public(Ed25519PrivateKey.generate()))
            outcomes.append("registered")
        except errors.DomainError as exc:
            outcomes.append(exc.code)
        finally:
            connections["default"].close()

    threads = [threading.Thread(target=register) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(outcomes) == ["registered"] * 3 + ["too_many_keys"] * 7
    assert RequesterKey.objects.filter(user=alice).count() == 3
