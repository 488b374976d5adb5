"""Execution receipts: canonical JSON signed with the platform's Ed25519 key.

The payload is JSON with sorted keys and no spaces; the signature covers its UTF-8
bytes. The signing keys form a ring (`RECEIPT_SIGNING_KEYS`): the first signs, and every
one of them still verifies, so receipts signed before a rotation stay valid. A receipt
names its key by `key_id` (derived from the public key), and anyone holding the public
keys (GET /api/v1/receipts/public-keys/) can verify a receipt offline.

A task's receipt names its format in `receipt_version`. Format 2 adds `agent_version`, the
binary version that ran (SPEC §19); format 3 drops `reputation_delta`: the receipt is
signed before the settlement's one statement, which scores the outcome (SPEC §20), so the
delta is on the task's reputation event instead. A receipt without `receipt_version` is
format 1, issued before them; every format verifies exactly as it did: the signature
covers whatever payload was signed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

# The format of the task receipts issued now (see above).
RECEIPT_VERSION = 3


def canonical_json(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def key_id_for(public: bytes) -> str:
    return hashlib.sha256(public).hexdigest()[:16]


@dataclass(frozen=True)
class SigningKey:
    key_id: str
    private: Ed25519PrivateKey
    public: bytes

    def info(self) -> dict[str, str]:
        return {"public_key": base64.b64encode(self.public).decode(), "key_id": self.key_id}


def signing_keys() -> tuple[SigningKey, ...]:
    """The ring, current key first. Built once per configuration (settings may change in tests)."""
    return _ring(tuple(settings.RECEIPT_SIGNING_KEYS))


@lru_cache(maxsize=8)
def _ring(encoded: tuple[str, ...]) -> tuple[SigningKey, ...]:
    if not encoded:
        raise ImproperlyConfigured("RECEIPT_SIGNING_KEYS must hold at least one key")
    ring: list[SigningKey] = []
    for position, text in enumerate(encoded, start=1):
        try:
            private = Ed25519PrivateKey.from_private_bytes(base64.b64decode(text, validate=True))
        except (binascii.Error, ValueError):
            raise ImproperlyConfigured(
                f"key {position} of RECEIPT_SIGNING_KEYS is not a base64 raw 32-byte "
                "Ed25519 private key"
            ) from None
        public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        key = SigningKey(key_id_for(public), private, public)
        if any(other.key_id == key.key_id for other in ring):
            raise ImproperlyConfigured(f"RECEIPT_SIGNING_KEYS holds key {key.key_id} twice")
        ring.append(key)
    return tuple(ring)


def signing_key() -> Ed25519PrivateKey:
    """The current key: the one new receipts are signed with."""
    return signing_keys()[0].private


def public_key_bytes() -> bytes:
    return signing_keys()[0].public


def public_key_info() -> dict[str, str]:
    """The current key's id and public key."""
    return signing_keys()[0].info()


def public_keys_info() -> list[dict[str, Any]]:
    """Every key of the ring, current first, each with its id and public key."""
    return [{**key.info(), "current": index == 0} for index, key in enumerate(signing_keys())]


def verifying_key(key_id: Any) -> bytes | None:
    """The public key of the ring's key `key_id`, or None when the ring has no such key."""
    for key in signing_keys():
        if key.key_id == key_id:
            return key.public
    return None


def receipt_sign(data: dict[str, Any]) -> dict[str, str]:
    payload = canonical_json(data)
    key = signing_keys()[0]
    return {
        "payload": payload,
        "signature": base64.b64encode(key.private.sign(payload.encode())).decode(),
        "key_id": key.key_id,
    }


def receipt_verify(receipt: Any, *, public_key: bytes | None = None) -> bool:
    """True only for a well-formed receipt whose signature verifies under its key.

    The key is `public_key` when given (checking it is the one the receipt names), else the
    ring's key named by the receipt's `key_id`: a receipt from a retired key stays valid as
    long as its key is in the ring.
    """
    if not isinstance(receipt, dict):
        return False
    payload, signature = receipt.get("payload"), receipt.get("signature")
    if not isinstance(payload, str) or not isinstance(signature, str):
        return False
    public = public_key if public_key is not None else verifying_key(receipt.get("key_id"))
    if public is None or receipt.get("key_id") != key_id_for(public):
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(
            base64.b64decode(signature, validate=True), payload.encode()
        )
        data = json.loads(payload)
    except (InvalidSignature, ValueError):
        return False
    # A signature over a non-canonical rendering is not a receipt we issued.
    return isinstance(data, dict) and canonical_json(data) == payload
