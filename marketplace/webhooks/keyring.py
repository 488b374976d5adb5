"""Webhook secrets at rest: encrypted with a Fernet key ring of their own, `WEBHOOK_KEY_RING`.

The first key encrypts, every key decrypts, as for the custodial voucher keys
(`CUSTODIAL_KEY_RING`): to rotate, put a new key first, run `manage.py
rotate_webhook_secrets`, then drop the old keys. A delivery must sign with the clear secret,
so it is encrypted rather than hashed; a copy of the database alone no longer lets anyone
forge deliveries.
"""

from __future__ import annotations

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


def _ring() -> MultiFernet:
    return _ring_of(tuple(settings.WEBHOOK_KEY_RING))


@lru_cache(maxsize=8)
def _ring_of(keys: tuple[str, ...]) -> MultiFernet:
    if not keys:
        raise ImproperlyConfigured("WEBHOOK_KEY_RING must hold at least one key")
    ring = []
    for position, key in enumerate(keys, start=1):
        try:
            ring.append(Fernet(key))
        except ValueError:
            raise ImproperlyConfigured(
                f"key {position} of WEBHOOK_KEY_RING is not a Fernet key "
                "(32 url-safe base64-encoded bytes)"
            ) from None
    return MultiFernet(ring)


def secret_encrypt(secret: str) -> str:
    return _ring().encrypt(secret.encode()).decode()


def secret_decrypt(encrypted: str) -> str:
    try:
        return _ring().decrypt(encrypted.encode()).decode()
    except InvalidToken:
        raise ImproperlyConfigured(
            "a webhook secret was encrypted with a key missing from WEBHOOK_KEY_RING"
        ) from None


def secret_reencrypt(encrypted: str) -> str:
    """The same secret under the ring's first key (InvalidToken when no key reads it)."""
    return _ring().rotate(encrypted.encode()).decode()
