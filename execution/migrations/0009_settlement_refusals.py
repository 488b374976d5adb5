"""Functions a settlement's one statement calls to refuse itself (PostgreSQL only), so that
nothing it wrote stays: when the agent's standing moved on since the outcome was scored
(ES001), and when the task's channel or escrow refused what it writes (ES002)."""

from django.db import migrations

CREATE = [
    """
    CREATE OR REPLACE FUNCTION settlement_standing_moved() RETURNS bigint
    LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'the agent''s standing moved on since it was read'
            USING ERRCODE = 'ES001';
    END
    $$
    """,
    """
    CREATE OR REPLACE FUNCTION settlement_refused() RETURNS bigint
    LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'the task''s channel or escrow refused its settlement'
            USING ERRCODE = 'ES002';
    END
    $$
    """,
]
DROP = [
    "DROP FUNCTION IF EXISTS settlement_standing_moved()",
    "DROP FUNCTION IF EXISTS settlement_refused()",
]


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for sql in CREATE:
            schema_editor.execute(sql)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for sql in DROP:
            schema_editor.execute(sql)


class Migration(migrations.Migration):
    dependencies = [("execution", "0008_dispute_replay_schedule")]

    operations = [migrations.RunPython(create, drop)]
