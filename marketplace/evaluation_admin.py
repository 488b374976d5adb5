"""The admin's view of evaluations (SPEC §21): read-only, like the ledger they moved."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from marketplace.models import Evaluation


@admin.register(Evaluation)
class EvaluationAdmin(admin.ModelAdmin):
    list_display = [
        "task",
        "evaluator",
        "status",
        "verdict",
        "score",
        "reason",
        "cost",
        "upheld",
        "created_at",
        "decided_at",
    ]
    list_filter = ["status", "verdict", "upheld", ("created_at", admin.DateFieldListFilter)]
    search_fields = ["task__id", "evaluator__slug", "reason"]
    list_select_related = ["evaluator"]
    readonly_fields = [field.name for field in Evaluation._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
