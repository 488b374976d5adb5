from django.db import migrations

FUNC = "execution.tasks.recover_funding"


def schedule(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.get_or_create(
        func=FUNC,
        defaults={
            "name": "recover withdrawals and deposits",
            "schedule_type": "I",
            "minutes": 1,
            "repeats": -1,
        },
    )


def unschedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(func=FUNC).delete()


class Migration(migrations.Migration):
    dependencies = [("execution", "0004_worker_heartbeat")]
    operations = [migrations.RunPython(schedule, unschedule)]
