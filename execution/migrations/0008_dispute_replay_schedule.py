from django.db import migrations

FUNC = "execution.dispute_evidence.dispute_replays_recover"


def schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.get_or_create(
        func=FUNC,
        defaults={
            "name": "replay disputes' receipts a lost worker left pending",
            "schedule_type": "I",
            "minutes": 1,
            "repeats": -1,
        },
    )


def unschedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(func=FUNC).delete()


class Migration(migrations.Migration):
    dependencies = [("execution", "0007_recovery_count")]
    operations = [migrations.RunPython(schedule, unschedule)]
