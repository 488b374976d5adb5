"""Operators' actions get permissions of their own: suspending agents, refunding and requeueing
stuck tasks, revoking API keys, enabling webhook endpoints (the view permission no longer
lets anyone do them)."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("marketplace", "0016_webhook_secrets_encrypted"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="agent",
            options={
                "ordering": ["slug"],
                "permissions": [("suspend_agent", "Can suspend and reactivate agents")],
            },
        ),
        migrations.AlterModelOptions(
            name="apikey",
            options={
                "ordering": ["-created_at", "-pk"],
                "permissions": [("revoke_apikey", "Can revoke users' API keys")],
                "verbose_name": "API key",
            },
        ),
        migrations.AlterModelOptions(
            name="task",
            options={
                "ordering": ["-created_at"],
                "permissions": [
                    ("refund_task", "Can refund stuck tasks"),
                    ("requeue_task", "Can requeue stuck tasks"),
                ],
            },
        ),
        migrations.AlterModelOptions(
            name="webhookendpoint",
            options={
                "ordering": ["created_at"],
                "permissions": [
                    ("enable_webhookendpoint", "Can enable disabled webhook endpoints")
                ],
            },
        ),
    ]
