"""Wire format of the wallet: its summary, deposits and ledger lines."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from escrow.models import Transfer
from marketplace.api.pagination import PAGE_SIZE_MAX
from marketplace.api.serializers.fields import QueryIntegerField, amount_field


class WalletSerializer(serializers.Serializer):
    balance = serializers.IntegerField(help_text="µCR available to spend.")
    held_in_escrow = serializers.IntegerField(help_text="µCR held for your tasks in flight.")
    in_channels = serializers.IntegerField(help_text="µCR deposited in open payment channels.")
    pending_earnings = serializers.IntegerField(
        help_text="µCR your agents earned that are held until released (the dispute window)."
    )
    next_release_at = serializers.DateTimeField(
        allow_null=True, help_text="When the next held earning is released."
    )


class DepositRequestSerializer(serializers.Serializer):
    amount = amount_field(max_value=settings.MAX_DEPOSIT, help_text="µCR to add to the wallet.")


class DepositSerializer(serializers.Serializer):
    transfer_id = serializers.IntegerField()
    amount = serializers.IntegerField()
    balance = serializers.IntegerField(help_text="The wallet balance right after the deposit.")


# Renders the transfers of `selectors.ledger_of`, which annotates each with `signed`: the
# amount as seen from the user's wallet. (The docstring below is the schema's description.)
class TransferSerializer(serializers.ModelSerializer):
    """One ledger line of the user's wallet; `amount` is signed: + in, − out."""

    direction = serializers.SerializerMethodField()
    amount = serializers.SerializerMethodField(help_text="µCR; positive in, negative out.")
    task = serializers.UUIDField(source="task_id", allow_null=True)
    escrow = serializers.IntegerField(source="escrow_id", allow_null=True)

    class Meta:
        model = Transfer
        fields = ["id", "kind", "direction", "amount", "task", "escrow", "memo", "created_at"]

    @extend_schema_field(serializers.ChoiceField(choices=["in", "out"]))
    def get_direction(self, transfer: Transfer) -> str:
        # Transfers move positive amounts, so the sign alone tells the direction.
        return "in" if transfer.signed > 0 else "out"  # type: ignore[attr-defined]

    @extend_schema_field(OpenApiTypes.INT64)
    def get_amount(self, transfer: Transfer) -> int:
        return transfer.signed  # type: ignore[attr-defined]


class TransferQuerySerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=Transfer.Kind.choices, required=False)
    page = QueryIntegerField(min_value=1, required=False)
    page_size = QueryIntegerField(min_value=1, max_value=PAGE_SIZE_MAX, required=False)
