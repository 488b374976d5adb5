"""Wire format of disputes."""

from __future__ import annotations

from rest_framework import serializers

from escrow.models import Dispute


class DisputeOpenSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=2000, help_text="What was wrong with the result.")


class DisputeContestSerializer(serializers.Serializer):
    statement = serializers.CharField(max_length=2000, help_text="Why the result was right.")


class DisputeSerializer(serializers.ModelSerializer):
    """A dispute; `evidence` holds the task's receipt, a replay of it once the worker ran it,
    and the signed receipt of the resolution."""

    task = serializers.UUIDField(source="task_id")

    class Meta:
        model = Dispute
        fields = [
            "id",
            "task",
            "status",
            "reason",
            "opened_at",
            "respond_by",
            "statement",
            "resolved_at",
            "resolution",
            "refunded",
            "evidence",
        ]
        read_only_fields = fields
