"""Execution receipts: canonical JSON signed with the platform's Ed25519 key.

The payload is JSON with sorted keys and no spaces; the signature covers its UTF-8
bytes. Anyone holding the public key (GET /api/v1/receipts/public-key/) can verify a
receipt offline.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from functools import cache
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


def canonical_json(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _load_private_key() -> Ed25519PrivateKey:
    encoded = settings.RECEIPT_SIGNING_KEY
    if not encoded:
        if not settings.GENERATE_DEVELOPMENT_KEYS:
            raise ImproperlyConfigured("RECEIPT_SIGNING_KEY must be set when DEBUG is off")
        path = settings.DATA_DIR / "receipt_signing_key"
        if not path.exists():
            raw = Ed25519PrivateKey.generate().private_bytes_raw()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(base64.b64encode(raw).decode())
        encoded = path.read_text().strip()
    try:
        raw = base64.b64decode(encoded, validate=True)
        return Ed25519PrivateKey.from_private_bytes(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(
            "RECEIPT_SIGNING_KEY must be a base64 raw 32-byte Ed25519 private key"
        ) from exc


@cache
def signing_key() -> Ed25519PrivateKey:
    return _load_private_key()


def public_key_bytes() -> bytes:
    return signing_key().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id_for(public: bytes) -> str:
    return hashlib.sha256(public).hexdigest()[:16]


def public_key_info() -> dict[str, str]:
    public = public_key_bytes()
    return {"public_key": base64.b64encode(public).decode(), "key_id": key_id_for(public)}


def receipt_sign(data: dict[str, Any]) -> dict[str, str]:
    payload = canonical_json(data)
    signature = signing_key().sign(payload.encode())
    return {
        "payload": payload,
        "signature": base64.b64encode(signature).decode(),
        "key_id": key_id_for(public_key_bytes()),
    }


def receipt_verify(receipt: Any, *, public_key: bytes | None = None) -> bool:
    """True only for a well-formed receipt whose signature verifies under the key."""
    if not isinstance(receipt, dict):
        return False
    payload, signature = receipt.get("payload"), receipt.get("signature")
    if not isinstance(payload, str) or not isinstance(signature, str):
        return False
    public = public_key or public_key_bytes()
    if receipt.get("key_id") != key_id_for(public):
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
