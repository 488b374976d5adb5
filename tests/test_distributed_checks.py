"""A host joining a deployment refuses to start when its keys differ from the other hosts'
(marketplace/checks.py): SECRET_KEY, the receipt signing ring, the custodial key ring."""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import sys

import pytest
from django.db import connection

from escrow.keys import custodial_key
from execution.engine.receipts import signing_keys
from execution.models import Receipt
from marketplace.checks import check_shared_configuration
from marketplace.models import SharedSecretCheck
from tests.factories import TaskFactory, UserFactory
from tests.workers import ROOT, database_url

postgres = pytest.mark.postgres


def ids() -> list[str]:
    return [message.id for message in check_shared_configuration() if message.id]


def errors() -> list[str]:
    return [i for i in ids() if ".E" in i]


def fernet_key() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


def signing_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


@pytest.mark.django_db
def test_one_machine_on_sqlite_has_nothing_to_agree_with(settings):
    if connection.vendor != "sqlite":
        pytest.skip("the embedded mode runs on SQLite")
    settings.SECRET_KEY = "anything"
    assert ids() == []
    assert not SharedSecretCheck.objects.exists()


@pytest.mark.django_db
def test_s3_storage_without_django_storages_is_refused(settings, monkeypatch):
    settings.BINARY_STORAGE = "s3"
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    assert "hosts.E004" in ids()


@postgres
@pytest.mark.django_db
def test_the_first_host_records_the_secret_key_and_another_key_is_refused(settings):
    assert errors() == []
    recorded = SharedSecretCheck.objects.get(name="SECRET_KEY").digest
    assert settings.SECRET_KEY not in recorded

    settings.SECRET_KEY = "a-different-secret-key-on-a-second-machine-" + "x" * 20
    [message] = [m for m in check_shared_configuration() if m.id == "hosts.E001"]
    assert "SECRET_KEY differs from the one the other hosts" in message.msg


@postgres
@pytest.mark.django_db
def test_a_rotated_secret_key_passes_with_the_old_one_in_fallbacks(settings):
    old = settings.SECRET_KEY
    assert errors() == []

    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "n" * 60, [old]
    assert errors() == []
    settings.SECRET_KEY_FALLBACKS = []  # the record moved to the new key
    assert errors() == []


@postgres
@pytest.mark.django_db
def test_a_receipt_ring_without_the_key_that_signed_receipts_is_refused(settings):
    current = signing_keys()[0].key_id
    Receipt.objects.create(task=TaskFactory.create(), payload="{}", signature="s", key_id=current)
    assert errors() == []

    settings.RECEIPT_SIGNING_KEYS = [signing_key()]
    [message] = [m for m in check_shared_configuration() if m.id == "hosts.E002"]
    assert f"does not hold key {current}" in message.msg
    settings.RECEIPT_SIGNING_KEYS = [signing_key(), *settings.RECEIPT_SIGNING_KEYS]
    assert "hosts.E002" in errors()


@postgres
@pytest.mark.django_db
def test_a_rotated_receipt_ring_keeping_the_old_key_passes(settings):
    current = signing_keys()[0].key_id
    Receipt.objects.create(task=TaskFactory.create(), payload="{}", signature="s", key_id=current)

    settings.RECEIPT_SIGNING_KEYS = [signing_key(), *settings.RECEIPT_SIGNING_KEYS]
    assert errors() == []


@postgres
@pytest.mark.django_db
def test_a_custodial_ring_that_cannot_decrypt_stored_keys_is_refused(settings):
    stored = custodial_key(user_id=UserFactory.create(username="alice").pk)
    assert errors() == []

    settings.CUSTODIAL_KEY_RING = [fernet_key()]
    [message] = [m for m in check_shared_configuration() if m.id == "hosts.E003"]
    assert f"cannot decrypt custodial key {stored.key_id}" in message.msg
    settings.CUSTODIAL_KEY_RING = [fernet_key(), *settings.CUSTODIAL_KEY_RING[1:]]
    assert "hosts.E003" in errors()


@postgres
@pytest.mark.django_db(transaction=True)
def test_qcluster_with_another_secret_key_refuses_to_start_and_says_why(settings):
    assert errors() == []  # the first host recorded its key
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "DATA_DIR": str(settings.DATA_DIR),
        "SECRET_KEY": "another-machine-" + secrets.token_urlsafe(40),
    }
    started = subprocess.run(
        [sys.executable, "manage.py", "qcluster"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert started.returncode != 0
    assert "hosts.E001" in started.stderr
    assert "SECRET_KEY differs from the one the other hosts" in started.stderr
