"""Wire format of execution receipts and their verification."""

from __future__ import annotations

from rest_framework import serializers

from marketplace.api.serializers.fields import StrictCharField


class ReceiptSerializer(serializers.Serializer):
    payload = StrictCharField(
        max_length=64 * 1024,
        trim_whitespace=False,
        help_text="Canonical JSON (sorted keys, no spaces) of the settled task.",
    )
    signature = StrictCharField(
        max_length=1024, trim_whitespace=False, help_text="Base64 Ed25519 signature."
    )
    key_id = StrictCharField(max_length=64, trim_whitespace=False)


class VerificationSerializer(serializers.Serializer):
    valid = serializers.BooleanField()


class PublicKeySerializer(serializers.Serializer):
    public_key = serializers.CharField(help_text="Base64 of the raw 32-byte Ed25519 public key.")
    key_id = serializers.CharField(
        help_text="First 16 hex digits of the SHA-256 of the raw public key; receipts name "
        "the key that signed them by it."
    )


class RingKeySerializer(PublicKeySerializer):
    current = serializers.BooleanField(help_text="True for the key that signs new receipts.")


class PublicKeysSerializer(serializers.Serializer):
    keys = RingKeySerializer(
        many=True, help_text="Every key receipts may be signed with, the current one first."
    )
