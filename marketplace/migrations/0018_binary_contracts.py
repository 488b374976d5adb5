"""Each binary version carries its own contract (SPEC §19): `input_schema` and
`output_schema`. Until now an agent's `output_schema` applied to whichever version ran, so
every existing version gets it as its output schema (the current one included); none has an
input schema. Going back copies each agent's current version's output schema to the agent."""

from django.db import migrations, models


def copy_output_schemas(apps, schema_editor):
    Agent = apps.get_model("marketplace", "Agent")
    AgentBinary = apps.get_model("marketplace", "AgentBinary")
    agents = Agent.objects.filter(output_schema__isnull=False).values_list("pk", "output_schema")
    for agent_id, schema in agents.iterator():
        AgentBinary.objects.filter(agent_id=agent_id).update(output_schema=schema)


def copy_back(apps, schema_editor):
    Agent = apps.get_model("marketplace", "Agent")
    current = Agent.objects.filter(current_binary__isnull=False).select_related("current_binary")
    for agent in current.iterator():
        Agent.objects.filter(pk=agent.pk).update(output_schema=agent.current_binary.output_schema)


class Migration(migrations.Migration):
    dependencies = [
        ("marketplace", "0017_admin_action_permissions"),
    ]

    operations = [
        migrations.AddField(
            model_name="agentbinary",
            name="input_schema",
            field=models.JSONField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="agentbinary",
            name="output_schema",
            field=models.JSONField(blank=True, null=True),
        ),
        migrations.RunPython(copy_output_schemas, copy_back),
    ]
