"""The function a task's INSERT calls on PostgreSQL for its fair-share tag, which also admits
the task under the requester's limit of tasks in flight (marketplace/fair_share.py).

It takes a transaction-scoped advisory lock on the requester first, so that one requester's
submissions are admitted one at a time; being VOLATILE, each of its statements then reads a
fresh snapshot, which sees every submission of the requester that committed before the lock
was granted. Past the limit it raises EX429, which rolls the submission back whole.
"""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION marketplace_task_admit(requester bigint, in_flight_limit bigint)
RETURNS bigint LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    in_flight bigint;
    lowest bigint;
    own bigint;
BEGIN
    -- Two int4 keys: a key space apart from the one-bigint keys of the scheduled jobs.
    PERFORM pg_advisory_xact_lock(4290, (requester % 2147483647)::int);
    SELECT count(*) INTO in_flight FROM marketplace_task
        WHERE requester_id = requester AND status IN ('pending_funding', 'queued', 'running');
    IF in_flight >= in_flight_limit THEN
        RAISE EXCEPTION 'too_many_tasks: % in flight, the limit is %', in_flight, in_flight_limit
            USING ERRCODE = 'EX429';
    END IF;
    SELECT min(fair_tag) INTO lowest FROM marketplace_task WHERE status = 'queued';
    SELECT max(fair_tag) INTO own FROM marketplace_task
        WHERE status = 'queued' AND requester_id = requester;
    RETURN greatest(coalesce(lowest, 0), coalesce(own + 1, 0));
END
$$
"""
DROP = "DROP FUNCTION IF EXISTS marketplace_task_admit(bigint, bigint)"


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE, params=None)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [("marketplace", "0013_fair_queue")]

    operations = [migrations.RunPython(create, drop)]
