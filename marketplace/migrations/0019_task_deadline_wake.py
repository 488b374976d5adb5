"""Deadlines and synchronous runs (SPEC §19).

- `Task.deadline_at`: a task still queued then is cancelled as `deadline_passed`; a partial
  index keeps the deadline sweep's query to the queued tasks that have a deadline.
- `Task.wake_waiters` and, on PostgreSQL, a trigger: a task that somebody waits for
  (`Prefer: wait`) sends `NOTIFY task_final, '<task id>'` in the statement that makes it
  final, whichever statement that is (the settlement, a cancellation, a refund), and the
  notification goes out when that statement's transaction commits. Tasks nobody waits for
  send nothing: PostgreSQL serialises the commits of every transaction that notified (one
  lock for the whole database, held through the commit's flush), which no settlement
  should pay for without a reason.
"""

from django.db import migrations, models

CHANNEL = "task_final"
FINAL = "('succeeded', 'failed', 'cancelled')"

CREATE = f"""
CREATE FUNCTION marketplace_task_wake() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{CHANNEL}', NEW.id::text);
    RETURN NULL;
END
$$;
CREATE TRIGGER marketplace_task_wake
    AFTER UPDATE ON marketplace_task
    FOR EACH ROW
    WHEN (NEW.wake_waiters AND NEW.status IN {FINAL} AND OLD.status NOT IN {FINAL})
    EXECUTE FUNCTION marketplace_task_wake();
"""
DROP = """
DROP TRIGGER IF EXISTS marketplace_task_wake ON marketplace_task;
DROP FUNCTION IF EXISTS marketplace_task_wake();
"""


def create_trigger(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def drop_trigger(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [
        ("marketplace", "0018_binary_contracts"),
    ]

    operations = [
        migrations.AddField(
            model_name="task",
            name="deadline_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="task",
            name="wake_waiters",
            field=models.BooleanField(default=False),
        ),
        migrations.AlterField(
            model_name="task",
            name="failure_reason",
            field=models.CharField(
                blank=True,
                choices=[
                    ("out_of_fuel", "Out Of Fuel"),
                    ("timeout", "Timeout"),
                    ("memory_limit", "Memory Limit"),
                    ("trap", "Trap"),
                    ("exit_nonzero", "Exit Nonzero"),
                    ("output_too_large", "Output Too Large"),
                    ("invalid_output", "Invalid Output"),
                    ("validation_failed", "Validation Failed"),
                    ("platform_error", "Platform Error"),
                    ("deadline_passed", "Deadline Passed"),
                ],
                max_length=32,
            ),
        ),
        migrations.AddIndex(
            model_name="task",
            index=models.Index(
                condition=models.Q(("deadline_at__isnull", False), ("status", "queued")),
                fields=["deadline_at"],
                name="task_deadline_idx",
            ),
        ),
        migrations.RunPython(create_trigger, drop_trigger, elidable=False),
    ]
