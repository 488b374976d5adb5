"""The custodial-key encryption and the receipt signing keys are key rings of their own:
after a rotation, old custodial keys still decrypt (then move to the new key) and old
receipts still verify."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets

import pytest
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from escrow.channels import channel_open, voucher_sign_custodial
from escrow.keys import custodial_key
from escrow.models import RequesterKey
from escrow.services import deposit_create
from execution.engine.receipts import key_id_for, receipt_sign
from marketplace.models import Task
from marketplace.services import task_submit
from tests.factories import make_agent

FERNET_1, FERNET_2 = Fernet.generate_key().decode(), Fernet.generate_key().decode()
RECEIPT_OLD, RECEIPT_NEW = (base64.b64encode(secrets.token_bytes(32)).decode() for _ in range(2))
DATA = {"task_id": "t-1", "cost": 1_247, "fee": 62, "status": "succeeded"}


def browser_task(user, agent, channel) -> Task:
    """What the task form does for a channel payment: a voucher signed with the custodial key."""
    voucher = voucher_sign_custodial(user_id=user.pk, channel_id=channel.pk, budget=10_000)
    return task_submit(
        requester=user,
        agent=agent,
        input="hi",
        budget=10_000,
        payment="channel",
        channel=str(channel.pk),
        voucher=voucher.as_dict(),
    )


@pytest.fixture
def channel_of(bob):
    agent = make_agent(bob)

    def open_for(user):
        deposit_create(user_id=user.pk, amount=1_000_000)
        return agent, channel_open(
            requester_user_id=user.pk, agent_id=agent.pk, payee_user_id=bob.pk, deposit=100_000
        )

    return open_for


# --- custodial keys -------------------------------------------------------------------------


def test_a_custodial_key_is_encrypted_with_the_first_key_of_the_ring(settings, alice):
    settings.CUSTODIAL_KEY_RING = [FERNET_1, FERNET_2]

    secret = custodial_key(user_id=alice.pk).custodial_secret.encode()

    assert len(Fernet(FERNET_1).decrypt(secret)) == 32
    with pytest.raises(InvalidToken):
        Fernet(FERNET_2).decrypt(secret)


def test_after_a_rotation_the_old_key_leaves_the_ring_and_vouchers_still_sign(
    settings, alice, charlie, channel_of, capsys
):
    settings.CUSTODIAL_KEY_RING = [FERNET_1]
    (agent, alices), (_, charlies) = channel_of(alice), channel_of(charlie)
    browser_task(alice, agent, alices)
    browser_task(charlie, agent, charlies)

    settings.CUSTODIAL_KEY_RING = [FERNET_2, FERNET_1]  # the new key first, the old still there
    browser_task(alice, agent, alices)  # both decrypt meanwhile
    call_command("rotate_custodial_keys")
    settings.CUSTODIAL_KEY_RING = [FERNET_2]  # the old key is gone

    assert "re-encrypted 2 custodial keys" in capsys.readouterr().out
    for user, channel in ((alice, alices), (charlie, charlies)):
        assert browser_task(user, agent, channel).status == Task.Status.QUEUED
    assert RequesterKey.objects.exclude(custodial_secret="").count() == 2
    assert Task.objects.filter(payment="channel").count() == 5


def test_without_the_rotation_dropping_the_old_key_breaks_signing(settings, alice, channel_of):
    settings.CUSTODIAL_KEY_RING = [FERNET_1]
    agent, channel = channel_of(alice)
    browser_task(alice, agent, channel)

    settings.CUSTODIAL_KEY_RING = [FERNET_2]

    with pytest.raises(ImproperlyConfigured, match="missing from CUSTODIAL_KEY_RING"):
        browser_task(alice, agent, channel)


def test_keys_stored_before_the_ring_still_decrypt_then_move_onto_it(
    settings, alice, channel_of, capsys
):
    """Rows written with the key derived from SECRET_KEY (before the ring existed)."""
    settings.CUSTODIAL_KEY_RING = [FERNET_1]
    agent, channel = channel_of(alice)
    private = Ed25519PrivateKey.generate()
    public = private.public_key().public_bytes_raw()
    derived = hashlib.sha256(f"custodial-voucher-keys:{settings.SECRET_KEY}".encode()).digest()
    RequesterKey.objects.create(
        user=alice,
        public_key=base64.b64encode(public).decode(),
        key_id=key_id_for(public),
        custodial_secret=Fernet(base64.urlsafe_b64encode(derived))
        .encrypt(private.private_bytes_raw())
        .decode(),
    )
    browser_task(alice, agent, channel)

    call_command("rotate_custodial_keys")
    settings.SECRET_KEY = "a-new-secret-key-" + secrets.token_urlsafe(40)

    assert "re-encrypted 1 custodial keys" in capsys.readouterr().out
    assert browser_task(alice, agent, channel).status == Task.Status.QUEUED
    assert RequesterKey.objects.get(user=alice).public_key == base64.b64encode(public).decode()


def test_the_rotation_reports_keys_no_member_of_the_ring_can_decrypt(settings, alice, charlie):
    settings.CUSTODIAL_KEY_RING = [FERNET_1]
    custodial_key(user_id=alice.pk)
    settings.CUSTODIAL_KEY_RING = [FERNET_2]
    unreadable = custodial_key(user_id=charlie.pk)
    settings.CUSTODIAL_KEY_RING = [FERNET_1]

    with pytest.raises(CommandError, match=f"1 custodial keys could not.*{unreadable.key_id}"):
        call_command("rotate_custodial_keys")


# --- receipt signing keys -------------------------------------------------------------------


def verify(client: APIClient, receipt: dict) -> bool:
    response = client.post("/api/v1/receipts/verify/", receipt, format="json")
    assert response.status_code == 200, response.content
    return response.json()["valid"]


def test_a_receipt_signed_before_a_rotation_still_verifies(settings, tmp_path, capsys, db):
    client = APIClient()
    settings.RECEIPT_SIGNING_KEYS = [RECEIPT_OLD]
    old = receipt_sign(DATA)
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))

    settings.RECEIPT_SIGNING_KEYS = [RECEIPT_NEW, RECEIPT_OLD]
    new = receipt_sign(DATA)

    assert new["key_id"] != old["key_id"]
    assert verify(client, old) and verify(client, new)
    call_command("verify_receipt", str(path))
    assert f"signature valid (key {old['key_id']})" in capsys.readouterr().out
    keys = client.get("/api/v1/receipts/public-keys/").json()["keys"]
    assert [(k["key_id"], k["current"]) for k in keys] == [
        (new["key_id"], True),
        (old["key_id"], False),
    ]
    assert client.get("/api/v1/receipts/public-key/").json()["key_id"] == new["key_id"]

    # Once its key leaves the ring, nothing here vouches for the old receipt any more.
    settings.RECEIPT_SIGNING_KEYS = [RECEIPT_NEW]
    assert not verify(client, old)
    with pytest.raises(CommandError, match="INVALID"):
        call_command("verify_receipt", str(path))


def test_the_public_keys_verify_receipts_offline(settings, db):
    settings.RECEIPT_SIGNING_KEYS = [RECEIPT_NEW, RECEIPT_OLD]
    receipt = receipt_sign(DATA)

    listed = APIClient().get("/api/v1/receipts/public-keys/").json()["keys"]

    by_id = {key["key_id"]: base64.b64decode(key["public_key"]) for key in listed}
    assert set(by_id) == {key_id_for(public) for public in by_id.values()}
    Ed25519PublicKey.from_public_bytes(by_id[receipt["key_id"]]).verify(
        base64.b64decode(receipt["signature"]), receipt["payload"].encode()
    )


def test_a_ring_naming_one_key_twice_is_refused(settings):
    settings.RECEIPT_SIGNING_KEYS = [RECEIPT_OLD, RECEIPT_OLD]

    with pytest.raises(ImproperlyConfigured, match="twice"):
        receipt_sign(DATA)
