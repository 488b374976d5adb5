from __future__ import annotations

from django.db import models


class Receipt(models.Model):
    """The signed record of one finished task (see execution/receipts.py)."""

    task = models.OneToOneField("marketplace.Task", models.PROTECT, related_name="receipt")
    payload = models.TextField()
    signature = models.CharField(max_length=100)
    key_id = models.CharField(max_length=32)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"receipt for {self.task_id}"

    def as_dict(self) -> dict[str, str]:
        return {"payload": self.payload, "signature": self.signature, "key_id": self.key_id}
