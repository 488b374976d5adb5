from django.db import migrations


def schedule(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.get_or_create(
        func="execution.tasks.settle_channels",
        defaults={"name": "settle due channels", "schedule_type": "I", "minutes": 1, "repeats": -1},
    )


def unschedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(
        func="execution.tasks.settle_channels"
    ).delete()


class Migration(migrations.Migration):
    dependencies = [("execution", "0002_recovery_schedule")]
    operations = [migrations.RunPython(schedule, unschedule)]
