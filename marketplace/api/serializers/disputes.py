"""Wire format of disputes."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from escrow.models import Dispute


class DisputeOpenSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=2000, help_text="What was wrong with the result.")


class DisputeContestSerializer(serializers.Serializer):
    statement = serializers.CharField(max_length=2000, help_text="Why the result was right.")


class SignedReceiptSerializer(serializers.Serializer):
    payload = serializers.CharField(help_text="Canonical JSON, as signed.")
    signature = serializers.CharField()
    key_id = serializers.CharField()


class DisputeReplaySerializer(serializers.Serializer):
    status = serializers.ChoiceField(
        choices=Dispute.Replay.choices,
        source="replay_status",
        help_text="pending until a worker reran the receipt's binary on the task's input: "
        "matched (same output hash), mismatched, or unavailable (nothing to replay, or it "
        "could not run).",
    )
    replayed_at = serializers.DateTimeField(allow_null=True)
    output_sha256 = serializers.CharField(
        source="replay_output_sha256", help_text="The rerun's output hash (empty if none)."
    )
    detail = serializers.CharField(source="replay_detail")


class DisputeEvidenceSerializer(serializers.Serializer):
    """What the platform gathers itself."""

    receipt = SignedReceiptSerializer(
        allow_null=True, help_text="The task's signed receipt (null if it has none)."
    )
    replay = DisputeReplaySerializer(help_text="A rerun of the receipt.")
    resolution_receipt = SignedReceiptSerializer(
        allow_null=True,
        help_text="The signed receipt of the resolution (kind dispute_refund or "
        "dispute_rejection); null while the dispute is pending.",
    )

    def to_representation(self, instance: Dispute) -> dict[str, Any]:
        stored = instance.evidence or {}
        return {
            "receipt": stored.get("receipt"),
            "replay": DisputeReplaySerializer(instance).data,
            "resolution_receipt": stored.get("resolution_receipt"),
        }


class DisputeSerializer(serializers.ModelSerializer):
    """A dispute; `evidence` holds the task's receipt, the platform's replay of it and the
    signed receipt of the resolution."""

    task = serializers.UUIDField(source="task_id")
    evidence = DisputeEvidenceSerializer(source="*")

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
