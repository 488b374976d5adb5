from datetime import timedelta

from django.db import migrations, models
from django.db.models import CharField, F, Value
from django.db.models.functions import Cast, Concat

# The lease a claim now takes with the default settings (escrow.withdrawals.withdrawal_lease).
DEFAULT_LEASE = timedelta(seconds=120)


def backfill(apps, schema_editor):
    """Existing withdrawals keep the key the provider already knows them by
    (`withdrawal:<id>`): one that was asked before must be asked about under that key. One
    left processing gets the lease its claim would have had, so recovery reaches it as
    before, once a live worker could no longer be inside the call."""
    Withdrawal = apps.get_model("escrow", "Withdrawal")
    Withdrawal.objects.update(
        provider_key=Concat(Value("withdrawal:"), Cast("id", output_field=CharField()))
    )
    Withdrawal.objects.filter(status="processing").update(
        processing_until=F("processing_at") + DEFAULT_LEASE
    )


class Migration(migrations.Migration):
    dependencies = [("escrow", "0008_system_account_shards")]

    operations = [
        migrations.AddField(
            model_name="withdrawal",
            name="provider_key",
            field=models.CharField(max_length=64, null=True),
        ),
        migrations.AddField(
            model_name="withdrawal",
            name="processing_until",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
