"""Startup checks for a host joining a deployment (SPEC §17): every host must share the
secrets and key rings the others use, because they all read and write one database.

They are Django system checks tagged `hosts`: `manage.py qcluster`, `runserver` and `check`
run them before starting, and marketplace/wsgi.py runs them before gunicorn serves, so a host
given a wrong key refuses to start with the reason instead of failing task by task. They look
only when the database is shared (PostgreSQL); before the tables exist they stay silent.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

from cryptography.fernet import InvalidToken
from django.apps import apps
from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, connection
from django.utils.crypto import constant_time_compare, salted_hmac

from escrow.keys import custodial_private_key
from execution.engine.receipts import verifying_key
from marketplace.webhooks.keyring import secret_decrypt

TAG = "hosts"
_SALT = "marketplace.checks.shared-secret"


def secret_digest(secret: str) -> str:
    return salted_hmac(_SALT, "agent-exchange", secret=secret, algorithm="sha256").hexdigest()


@checks.register(TAG)
def check_shared_configuration(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    problems: list[checks.CheckMessage] = []
    if settings.BINARY_STORAGE == "s3" and importlib.util.find_spec("storages") is None:
        problems.append(
            checks.Error(
                "BINARY_STORAGE=s3 needs django-storages: pip install 'django-storages[s3]'.",
                id="hosts.E004",
            )
        )
    if connection.vendor != "postgresql":
        return problems  # SQLite: one machine, nothing to agree with
    if settings.BINARY_STORAGE == "file":
        problems.append(
            checks.Warning(
                "BINARY_STORAGE=file keeps agent binaries on this host's disk, where the other "
                "hosts cannot read them.",
                hint="Use BINARY_STORAGE=database (the default with PostgreSQL) or s3.",
                id="hosts.W001",
            )
        )
    keys = ("SECRET_KEY", "CUSTODIAL_KEY_RING", "WEBHOOK_KEY_RING")
    generated = [n for n in keys if not os.environ.get(n)]
    if not (os.environ.get("RECEIPT_SIGNING_KEYS") or os.environ.get("RECEIPT_SIGNING_KEY")):
        generated.append("RECEIPT_SIGNING_KEYS")
    if generated:
        problems.append(
            checks.Warning(
                f"{', '.join(generated)} generated into DATA_DIR ({settings.DATA_DIR}) on a "
                "shared database: another host generates different ones.",
                hint="Give every host the same keys in its environment.",
                id="hosts.W002",
            )
        )
    try:
        connection.ensure_connection()
    except (DatabaseError, RuntimeError):
        # Unreachable (the command will say so itself), or blocked: a test runner collecting
        # modules that import the WSGI app.
        return problems
    try:
        problems += _secret_key() + _receipt_keys() + _custodial_keys() + _webhook_secrets()
    except DatabaseError:
        return problems  # not migrated yet (checks run before `migrate` too)
    return problems


def _secret_key() -> list[checks.CheckMessage]:
    """The first host records a keyed digest of SECRET_KEY; the others must match it (or hold
    it in SECRET_KEY_FALLBACKS while rotating, which moves the record to the new key)."""
    record = apps.get_model("marketplace", "SharedSecretCheck")
    current = secret_digest(settings.SECRET_KEY)
    row = record.objects.filter(name="SECRET_KEY").first()
    if row is None:
        record.objects.get_or_create(name="SECRET_KEY", defaults={"digest": current})
        return []
    if constant_time_compare(row.digest, current):
        return []
    fallbacks = getattr(settings, "SECRET_KEY_FALLBACKS", [])
    if any(constant_time_compare(row.digest, secret_digest(old)) for old in fallbacks):
        record.objects.filter(name="SECRET_KEY", digest=row.digest).update(digest=current)
        return []
    return [
        checks.Error(
            "SECRET_KEY differs from the one the other hosts of this deployment use: their "
            "worker messages and sessions are signed with theirs and would be refused here.",
            hint="Set the same SECRET_KEY on every host (the old one in SECRET_KEY_FALLBACKS "
            "while rotating).",
            id="hosts.E001",
        )
    ]


def _receipt_keys() -> list[checks.CheckMessage]:
    receipt = apps.get_model("execution", "Receipt")
    latest = receipt.objects.order_by("-pk").values_list("key_id", flat=True).first()
    if latest is None or verifying_key(latest) is not None:
        return []
    return [
        checks.Error(
            f"RECEIPT_SIGNING_KEYS does not hold key {latest}, which signed the latest receipt "
            "in the database: this host would sign with a key the other hosts do not verify.",
            hint="Give every host the same RECEIPT_SIGNING_KEYS ring.",
            id="hosts.E002",
        )
    ]


def _custodial_keys() -> list[checks.CheckMessage]:
    requester_key = apps.get_model("escrow", "RequesterKey")
    stored = requester_key.objects.exclude(custodial_secret="").order_by("-pk").first()
    if stored is None:
        return []
    try:
        custodial_private_key(stored)
    except (ImproperlyConfigured, InvalidToken, ValueError):
        return [
            checks.Error(
                f"CUSTODIAL_KEY_RING cannot decrypt custodial key {stored.key_id} stored in the "
                "database: this host could not sign vouchers for browser users.",
                hint="Give every host the same CUSTODIAL_KEY_RING.",
                id="hosts.E003",
            )
        ]
    return []


def _webhook_secrets() -> list[checks.CheckMessage]:
    endpoint = apps.get_model("marketplace", "WebhookEndpoint")
    stored = endpoint.objects.order_by("-created_at").values_list("pk", "secret_encrypted").first()
    if stored is None:
        return []
    try:
        secret_decrypt(stored[1])
    except ImproperlyConfigured:
        return [
            checks.Error(
                f"WEBHOOK_KEY_RING cannot decrypt the secret of webhook endpoint {stored[0]}: "
                "this host could not sign deliveries.",
                hint="Give every host the same WEBHOOK_KEY_RING.",
                id="hosts.E005",
            )
        ]
    return []
