from django.db import migrations

SYSTEM_KINDS = ["escrow", "channels", "platform_fees", "external"]


def create_system_accounts(apps, schema_editor):
    Account = apps.get_model("escrow", "Account")
    for kind in SYSTEM_KINDS:
        Account.objects.get_or_create(kind=kind, user=None)


class Migration(migrations.Migration):
    dependencies = [("escrow", "0001_initial")]
    operations = [migrations.RunPython(create_system_accounts, migrations.RunPython.noop)]
