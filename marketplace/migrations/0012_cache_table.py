"""The database cache's table (marketplace.cache_config.CACHE_TABLE), where every process
and host counts the rate limits when REDIS_URL is not set. Created whatever the cache in
use, so that a deployment can drop Redis later; `createcachetable` leaves an existing table
alone."""

from django.core.management import call_command
from django.db import migrations

# The name the settings give the database cache (marketplace.cache_config.CACHE_TABLE),
# written out because a migration must not change with the code.
TABLE = "marketplace_cache"


def create_cache_table(apps, schema_editor):
    call_command("createcachetable", TABLE, database=schema_editor.connection.alias, verbosity=0)


def drop_cache_table(apps, schema_editor):
    schema_editor.execute(f"DROP TABLE {schema_editor.quote_name(TABLE)}")


class Migration(migrations.Migration):
    dependencies = [
        ("marketplace", "0011_task_input_sha256"),
    ]

    operations = [
        migrations.RunPython(create_cache_table, drop_cache_table),
    ]
