"""An event's body is stored once, in a WebhookEvent, instead of once per endpoint in each
WebhookDelivery: the bodies already frozen move there, one per event."""

from django.db import migrations, models

BATCH = 500


def bodies_to_events(apps, schema_editor):
    delivery = apps.get_model("marketplace", "WebhookDelivery")
    event = apps.get_model("marketplace", "WebhookEvent")
    frozen = (
        delivery.objects.filter(body__isnull=False)
        .order_by("event_id")
        .values_list("event_id", "type", "created_at", "body")
    )
    batch, last = [], None
    for event_id, type, created_at, body in frozen.iterator(chunk_size=BATCH):
        if event_id == last:  # the same event's body, frozen for another endpoint
            continue
        last = event_id
        batch.append(event(id=event_id, type=type, created_at=created_at, body=body))
        if len(batch) >= BATCH:
            event.objects.bulk_create(batch, ignore_conflicts=True)
            batch = []
    event.objects.bulk_create(batch, ignore_conflicts=True)


def events_to_bodies(apps, schema_editor):
    delivery = apps.get_model("marketplace", "WebhookDelivery")
    event = apps.get_model("marketplace", "WebhookEvent")
    for event_id, body in event.objects.values_list("id", "body").iterator(chunk_size=BATCH):
        delivery.objects.filter(event_id=event_id).update(body=body)


class Migration(migrations.Migration):
    dependencies = [("marketplace", "0014_task_admit")]

    operations = [
        migrations.CreateModel(
            name="WebhookEvent",
            fields=[
                ("id", models.CharField(max_length=40, primary_key=True, serialize=False)),
                ("type", models.CharField(max_length=40)),
                ("created_at", models.DateTimeField()),
                ("body", models.TextField()),
            ],
            options={
                "indexes": [models.Index(fields=["created_at"], name="webhook_event_age_idx")],
            },
        ),
        migrations.RunPython(bodies_to_events, events_to_bodies),
        migrations.RemoveField(model_name="webhookdelivery", name="body"),
    ]
