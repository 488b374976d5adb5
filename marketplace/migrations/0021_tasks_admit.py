"""The function a submission's one statement calls on PostgreSQL to admit all its tasks at
once (marketplace/fair_share.py, marketplace/submissions.py): one count of the requester's
tasks in flight for a batch of a hundred, rather than one per task.

As `marketplace_task_admit` (migration 0014) it first takes the transaction-scoped advisory
lock on the requester, then counts the tasks in flight under it; past the limit with the new
tasks, it raises EX429, which rolls the submission back whole. It returns the first new
task's fair-share tag; the statement gives the others the tags after it, one each, as
admitting them one by one would.
"""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION marketplace_tasks_admit(
    requester bigint, in_flight_limit bigint, tasks bigint
) RETURNS bigint LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    in_flight bigint;
    lowest bigint;
    own bigint;
BEGIN
    -- The same lock as marketplace_task_admit's: both kinds of submission take turns.
    PERFORM pg_advisory_xact_lock(4290, (requester % 2147483647)::int);
    SELECT count(*) INTO in_flight FROM marketplace_task
        WHERE requester_id = requester AND status IN ('pending_funding', 'queued', 'running');
    IF in_flight + tasks > in_flight_limit THEN
        RAISE EXCEPTION 'too_many_tasks: % in flight and % more, the limit is %',
            in_flight, tasks, in_flight_limit
            USING ERRCODE = 'EX429';
    END IF;
    SELECT min(fair_tag) INTO lowest FROM marketplace_task WHERE status = 'queued';
    SELECT max(fair_tag) INTO own FROM marketplace_task
        WHERE status = 'queued' AND requester_id = requester;
    RETURN greatest(coalesce(lowest, 0), coalesce(own + 1, 0));
END
$$
"""
DROP = "DROP FUNCTION IF EXISTS marketplace_tasks_admit(bigint, bigint, bigint)"


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE, params=None)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [("marketplace", "0020_evaluated_settlement")]

    operations = [migrations.RunPython(create, drop)]
