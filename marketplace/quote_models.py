"""What quotes are computed from: a small ring of recent successful runs per binary.

Imported by `marketplace.models`, so it belongs to the marketplace app and its migrations.
"""

from __future__ import annotations

from django.db import models


class FuelSample(models.Model):
    """One recent successful run of a binary: the fuel it used on an input of this size.

    Each binary has at most `QUOTE_SAMPLES` rows (slots); settlement overwrites the oldest
    with one statement (`marketplace.quotes.fuel_sample_record`), so a quote reads a
    bounded handful of rows however many tasks the platform has run.
    """

    binary = models.ForeignKey("marketplace.AgentBinary", models.CASCADE, related_name="+")
    slot = models.PositiveSmallIntegerField()
    # Counts the binary's recorded runs: the newest sample has the highest.
    seq = models.BigIntegerField()
    fuel_used = models.BigIntegerField()
    input_bytes = models.BigIntegerField()
    recorded_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["binary", "slot"], name="fuel_sample_slot_unique"),
        ]

    def __str__(self) -> str:
        return f"binary {self.binary_id} #{self.seq}: {self.fuel_used} fuel, {self.input_bytes} B"
