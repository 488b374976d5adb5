"""Wire format of withdrawals."""

from __future__ import annotations

from rest_framework import serializers

from escrow.models import Withdrawal
from marketplace.api.pagination import PAGE_SIZE_MAX
from marketplace.api.serializers.fields import QueryIntegerField, amount_field


class WithdrawalRequestSerializer(serializers.Serializer):
    amount = amount_field(
        help_text="µCR to pay out of the wallet; at least WITHDRAWAL_MIN (1 CR by default)."
    )


class WithdrawalSerializer(serializers.ModelSerializer):
    """A withdrawal: `pending` → `processing` → `paid` | `failed`, or `pending` →
    `cancelled`. Its amount left the wallet when it was asked; failed or cancelled, it came
    back."""

    failure = serializers.CharField(allow_null=True, read_only=True)

    class Meta:
        model = Withdrawal
        fields = ["id", "amount", "status", "created_at", "paid_at", "failure"]
        read_only_fields = fields


class WithdrawalQuerySerializer(serializers.Serializer):
    page = QueryIntegerField(min_value=1, required=False)
    page_size = QueryIntegerField(min_value=1, max_value=PAGE_SIZE_MAX, required=False)
