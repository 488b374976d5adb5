"""Wire format of payment channels and the voucher keys that sign for them."""

from __future__ import annotations

from rest_framework import serializers

from escrow.models import PaymentChannel, RequesterKey
from marketplace.api.serializers.fields import StrictCharField, amount_field, existing_agent
from marketplace.models import Agent


class ChannelOpenSerializer(serializers.Serializer):
    agent = serializers.SlugField(max_length=64, help_text="The agent's slug.")
    deposit = amount_field(help_text="µCR moved from your wallet into the channel.")

    def validate_agent(self, value: str) -> Agent:
        return existing_agent(value)


class ChannelSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    agent = serializers.CharField(source="agent.slug")
    deposit = serializers.IntegerField()
    redeemed = serializers.IntegerField(help_text="µCR redeemed by finished tasks.")
    reserved = serializers.IntegerField(help_text="µCR held for tasks in flight.")
    drawn = serializers.IntegerField(
        help_text="µCR drawn from the deposit to pay the evaluators of its tasks (SPEC §21): "
        "each evaluated task's budget rest, moved into its evaluator's run. The next voucher "
        "must cover redeemed + drawn + reserved + its budget."
    )
    authorized = serializers.IntegerField(help_text="Cumulative amount of the latest voucher.")
    nonce = serializers.IntegerField(
        help_text="The latest voucher's nonce; the next must be higher."
    )
    in_flight = serializers.IntegerField()
    status = serializers.ChoiceField(choices=PaymentChannel.Status.choices)
    expires_at = serializers.DateTimeField()
    closes_at = serializers.DateTimeField(allow_null=True)
    settled_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()


class KeyRegisterSerializer(serializers.Serializer):
    public_key = StrictCharField(max_length=64, help_text="base64 of the raw 32-byte Ed25519 key.")


class KeySerializer(serializers.Serializer):
    id = serializers.IntegerField(help_text="Revoke the key with `DELETE keys/{id}/`.")
    public_key = serializers.CharField()
    key_id = serializers.CharField(help_text="First 16 hex digits of the key's SHA-256.")
    custodial = serializers.SerializerMethodField(
        help_text="True for the key the platform keeps to sign your browser tasks' vouchers."
    )
    created_at = serializers.DateTimeField()
    revoked_at = serializers.DateTimeField(
        allow_null=True, help_text="Set once revoked: the key verifies no new voucher."
    )

    def get_custodial(self, key: RequesterKey) -> bool:
        return bool(key.custodial_secret)
