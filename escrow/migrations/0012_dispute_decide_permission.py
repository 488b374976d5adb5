"""Deciding a contested dispute gets a permission of its own (it moves money)."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("escrow", "0011_funding_reconciliation_schedule"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="dispute",
            options={
                "ordering": ["-opened_at", "-id"],
                "permissions": [("decide_dispute", "Can decide contested disputes")],
            },
        ),
    ]
