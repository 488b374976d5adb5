import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

import escrow.payout_models


class Migration(migrations.Migration):
    dependencies = [
        ("escrow", "0009_withdrawal_provider_key_and_lease"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AlterField(
            model_name="withdrawal",
            name="provider_key",
            field=models.CharField(
                default=escrow.payout_models.withdrawal_key_new, max_length=64, unique=True
            ),
        ),
        migrations.CreateModel(
            name="FundingDiscrepancy",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "kind",
                    models.CharField(
                        choices=[
                            ("payout_paid_there", "Payout Paid There"),
                            ("payout_paid_here", "Payout Paid Here"),
                            ("collect_unmatched", "Collect Unmatched"),
                            ("credit_uncollected", "Credit Uncollected"),
                            ("amount_mismatch", "Amount Mismatch"),
                        ],
                        max_length=32,
                    ),
                ),
                ("provider", models.CharField(max_length=32)),
                ("reference", models.CharField(max_length=200)),
                ("our_status", models.CharField(max_length=16)),
                ("provider_status", models.CharField(max_length=16)),
                ("our_amount", models.BigIntegerField(blank=True, null=True)),
                ("provider_amount", models.BigIntegerField(blank=True, null=True)),
                ("detected_at", models.DateTimeField(auto_now_add=True)),
                ("resolved_at", models.DateTimeField(blank=True, null=True)),
                ("notes", models.TextField(blank=True)),
                (
                    "resolved_by",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "verbose_name_plural": "funding discrepancies",
                "ordering": ["-detected_at", "-id"],
                "permissions": [
                    ("resolve_fundingdiscrepancy", "Can mark funding discrepancies resolved")
                ],
                "indexes": [
                    models.Index(
                        condition=models.Q(("resolved_at__isnull", True)),
                        fields=["kind"],
                        name="discrepancy_open_idx",
                    )
                ],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("provider", "reference", "kind"), name="discrepancy_once"
                    )
                ],
            },
        ),
    ]
