"""Voucher keys: the Ed25519 public keys that sign a requester's vouchers.

A requester has at most `MAX_REQUESTER_KEYS` live keys besides the custodial one, so that
checking a voucher costs a bounded number of signature verifications; a revoked key
verifies no new voucher.

A custodial key is one the platform keeps for the browser UI. Its private half is encrypted
with a Fernet key ring of its own, `CUSTODIAL_KEY_RING`: the first key encrypts, every key
decrypts, and `rotate_custodial_keys` re-encrypts every custodial key with the first. Keys
written before the ring existed were encrypted with a key derived from SECRET_KEY; that key
stays the ring's last member, only ever decrypting, so they keep working until the rotation
has moved them onto the ring.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from escrow.errors import InvalidPublicKey, KeyNotFound, KeyRevoked, TooManyKeys
from escrow.models import RequesterKey


def _key_id(public: bytes) -> str:
    return hashlib.sha256(public).hexdigest()[:16]


def key_register(*, user_id: int, public_key: Any) -> RequesterKey:
    """Register a requester's Ed25519 public key (base64 of the raw 32 bytes).

    Registering a live key again returns it; a revoked one stays revoked (409
    `key_revoked`), and a requester at `MAX_REQUESTER_KEYS` live keys must revoke one
    first (409 `too_many_keys`).
    """
    try:
        raw = base64.b64decode(public_key, validate=True) if isinstance(public_key, str) else b""
        Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError):
        raise InvalidPublicKey() from None
    encoded = base64.b64encode(raw).decode()
    with transaction.atomic():
        # One registration of a user at a time, so that two cannot pass the cap together.
        # FOR NO KEY UPDATE does not wait for the user's submissions (their KEY SHARE).
        list(
            get_user_model()
            .objects.select_for_update(no_key=True)
            .filter(pk=user_id)
            .values_list("pk", flat=True)
        )
        existing = RequesterKey.objects.filter(user_id=user_id, public_key=encoded).first()
        if existing is not None:
            if existing.revoked_at is not None:
                raise KeyRevoked()
            return existing
        live = RequesterKey.objects.filter(
            user_id=user_id, revoked_at__isnull=True, custodial_secret=""
        ).count()
        if live >= settings.MAX_REQUESTER_KEYS:
            raise TooManyKeys(
                f"You have {live} voucher keys, the most allowed; revoke one first.",
                fields={"public_key": [f"at most {settings.MAX_REQUESTER_KEYS} keys"]},
            )
        return RequesterKey.objects.create(user_id=user_id, public_key=encoded, key_id=_key_id(raw))


def key_revoke(*, user_id: int, key_pk: int) -> RequesterKey:
    """Revoke one of the user's keys at once; revoking it again changes nothing.

    Vouchers it signed before stay accepted; no new one verifies with it.
    """
    RequesterKey.objects.filter(pk=key_pk, user_id=user_id, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )
    key = RequesterKey.objects.filter(pk=key_pk, user_id=user_id).first()
    if key is None:
        raise KeyNotFound()
    return key


def keys_of(*, user_id: int) -> QuerySet[RequesterKey]:
    """The user's keys, revoked ones included, newest first."""
    return RequesterKey.objects.filter(user_id=user_id).order_by("-created_at", "-id")


def voucher_signer(*, user_id: int, message: bytes, signature: str) -> int | None:
    """The id of the user's live key whose signature over `message` this is, or None.

    Reads the keys without a lock: callers check signatures before they lock anything.
    """
    try:
        raw = base64.b64decode(signature, validate=True)
    except binascii.Error:
        return None
    if len(raw) != 64:
        return None
    live = RequesterKey.objects.filter(user_id=user_id, revoked_at__isnull=True)
    for pk, encoded in live.values_list("pk", "public_key"):
        try:
            Ed25519PublicKey.from_public_bytes(base64.b64decode(encoded)).verify(raw, message)
            return pk
        except (InvalidSignature, ValueError):
            continue
    return None


# --- custodial keys ------------------------------------------------------------------------


def _custody() -> MultiFernet:
    return _custody_ring(tuple(settings.CUSTODIAL_KEY_RING), settings.SECRET_KEY)


@lru_cache(maxsize=8)
def _custody_ring(keys: tuple[str, ...], secret_key: str) -> MultiFernet:
    if not keys:
        raise ImproperlyConfigured("CUSTODIAL_KEY_RING must hold at least one key")
    ring = []
    for position, key in enumerate(keys, start=1):
        try:
            ring.append(Fernet(key))
        except ValueError:
            raise ImproperlyConfigured(
                f"key {position} of CUSTODIAL_KEY_RING is not a Fernet key "
                "(32 url-safe base64-encoded bytes)"
            ) from None
    # Last, so it never encrypts: the key custodial keys were stored with before the ring.
    legacy = hashlib.sha256(f"custodial-voucher-keys:{secret_key}".encode()).digest()
    return MultiFernet([*ring, Fernet(base64.urlsafe_b64encode(legacy))])


def custodial_key(*, user_id: int) -> RequesterKey:
    """The key the platform keeps to sign vouchers for this user's browser sessions.

    A new one replaces a revoked one.
    """
    custodial = RequesterKey.objects.filter(user_id=user_id, revoked_at__isnull=True).exclude(
        custodial_secret=""
    )
    existing = custodial.first()
    if existing is not None:
        return existing
    private = Ed25519PrivateKey.generate()
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    try:
        with transaction.atomic():
            return RequesterKey.objects.create(
                user_id=user_id,
                public_key=base64.b64encode(public).decode(),
                key_id=_key_id(public),
                custodial_secret=_custody().encrypt(private.private_bytes_raw()).decode(),
            )
    except IntegrityError:
        return custodial.get()


def custodial_private_key(key: RequesterKey) -> Ed25519PrivateKey:
    try:
        raw = _custody().decrypt(key.custodial_secret.encode())
    except InvalidToken:
        raise ImproperlyConfigured(
            f"custodial key {key.key_id} was encrypted with a key missing from CUSTODIAL_KEY_RING"
        ) from None
    return Ed25519PrivateKey.from_private_bytes(raw)


@dataclass
class Rotation:
    rotated: int = 0
    unreadable: list[str] = field(default_factory=list)


def custodial_keys_rotate() -> Rotation:
    """Re-encrypt every custodial key with the ring's current key.

    Afterwards only the current key is needed: older ones (and SECRET_KEY's) can leave the
    ring. Row by row, each with a conditional UPDATE, so it can run while the site serves
    and can be run again after an interruption. Keys no member of the ring can decrypt are
    left alone and reported.
    """
    ring = _custody()
    rotation = Rotation()
    rows = RequesterKey.objects.exclude(custodial_secret="").values_list(
        "pk", "key_id", "custodial_secret"
    )
    for pk, key_id, secret in rows.iterator(chunk_size=500):
        try:
            fresh = ring.rotate(secret.encode()).decode()
        except InvalidToken:
            rotation.unreadable.append(key_id)
            continue
        rotation.rotated += RequesterKey.objects.filter(pk=pk, custodial_secret=secret).update(
            custodial_secret=fresh
        )
    return rotation
