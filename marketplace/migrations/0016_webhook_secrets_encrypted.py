"""Webhook secrets are encrypted at rest with WEBHOOK_KEY_RING's first key (the clear column
goes); going back decrypts them with any key of the ring."""

from cryptography.fernet import Fernet, MultiFernet
from django.conf import settings
from django.db import migrations, models


def _ring():
    return MultiFernet([Fernet(key) for key in settings.WEBHOOK_KEY_RING])


def encrypt(apps, schema_editor):
    endpoint = apps.get_model("marketplace", "WebhookEndpoint")
    ring = _ring()
    for pk, secret in endpoint.objects.values_list("pk", "secret").iterator(chunk_size=500):
        encrypted = ring.encrypt(secret.encode()).decode()
        endpoint.objects.filter(pk=pk).update(secret_encrypted=encrypted)


def decrypt(apps, schema_editor):
    endpoint = apps.get_model("marketplace", "WebhookEndpoint")
    ring = _ring()
    rows = endpoint.objects.values_list("pk", "secret_encrypted")
    for pk, encrypted in rows.iterator(chunk_size=500):
        secret = ring.decrypt(encrypted.encode()).decode()
        endpoint.objects.filter(pk=pk).update(secret=secret)


class Migration(migrations.Migration):
    dependencies = [("marketplace", "0015_webhook_events")]

    operations = [
        migrations.AddField(
            model_name="webhookendpoint",
            name="secret_encrypted",
            field=models.TextField(default=""),
            preserve_default=False,
        ),
        migrations.RunPython(encrypt, decrypt),
        # A default, so that going back can add the column again before it is decrypted into.
        migrations.AlterField(
            model_name="webhookendpoint",
            name="secret",
            field=models.CharField(default="", max_length=100),
        ),
        migrations.RemoveField(model_name="webhookendpoint", name="secret"),
    ]
