"""Tasks not yet settled pin what the reputation verdict needs, as a new submission does:
the agent's recommended limits (the platform defaults every agent starts with) and whether
their output schema is the requester's own."""

from django.conf import settings
from django.db import migrations

UNSETTLED = ("pending_funding", "queued", "running")


def pin(apps, schema_editor):
    Task = apps.get_model("marketplace", "Task")
    unsettled = Task.objects.filter(status__in=UNSETTLED)
    unsettled.update(
        recommended_fuel=min(settings.TASK_DEFAULT_FUEL, settings.TASK_MAX_FUEL),
        recommended_memory_mb=min(settings.TASK_DEFAULT_MEMORY_MB, settings.TASK_MAX_MEMORY_MB),
        recommended_timeout_ms=min(settings.TASK_DEFAULT_TIMEOUT_MS, settings.TASK_MAX_TIMEOUT_MS),
    )
    with_schema = unsettled.filter(output_schema__isnull=False).select_related("agent")
    for task in with_schema.only("pk", "output_schema", "agent__output_schema").iterator():
        if task.output_schema != task.agent.output_schema:
            Task.objects.filter(pk=task.pk).update(requester_schema=True)


class Migration(migrations.Migration):
    dependencies = [("marketplace", "0006_agent_recommended_limits")]

    operations = [migrations.RunPython(pin, migrations.RunPython.noop)]
