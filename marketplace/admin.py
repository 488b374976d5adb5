from django.contrib import admin

from marketplace.models import Agent, AgentBinary, Task


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "owner", "status", "base_fee", "fuel_price", "current_binary"]
    list_filter = ["status"]
    search_fields = ["slug", "name", "owner__username", "tags"]
    raw_id_fields = ["owner", "current_binary"]


@admin.register(AgentBinary)
class AgentBinaryAdmin(admin.ModelAdmin):
    list_display = ["agent", "version", "sha256", "size", "created_at"]
    search_fields = ["agent__slug", "sha256"]
    readonly_fields = ["agent", "version", "sha256", "size", "storage_name", "created_at"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "agent",
        "requester",
        "status",
        "budget",
        "cost",
        "failure_reason",
        "attempts",
        "created_at",
    ]
    list_filter = ["status", "failure_reason", "payment"]
    search_fields = ["id", "agent__slug", "requester__username"]
    date_hierarchy = "created_at"

    # Money and state change only through services (and the actions that call them).
    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in Task._meta.fields]

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
