from django.contrib import admin

from escrow.admin import ReadOnlyAdmin
from reputation.models import AgentReputation, ReputationEvent


@admin.register(AgentReputation)
class AgentReputationAdmin(ReadOnlyAdmin):
    list_display = ["agent", "score", "successes", "failures", "neutral", "updated_at"]
    search_fields = ["agent__slug"]


@admin.register(ReputationEvent)
class ReputationEventAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "agent",
        "outcome",
        "reason",
        "delta",
        "score_after",
        "task",
        "created_at",
    ]
    list_filter = ["outcome", "reason", "policy"]
    search_fields = ["agent__slug", "task__id"]
