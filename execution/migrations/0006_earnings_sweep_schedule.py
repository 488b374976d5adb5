from django.db import migrations

FUNC = "execution.tasks.sweep_earnings"


def schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.get_or_create(
        func=FUNC,
        defaults={
            "name": "release held earnings",
            "schedule_type": "I",
            "minutes": 1,
            "repeats": -1,
        },
    )


def unschedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(func=FUNC).delete()


class Migration(migrations.Migration):
    dependencies = [("execution", "0005_funding_recovery_schedule")]
    operations = [migrations.RunPython(schedule, unschedule)]
