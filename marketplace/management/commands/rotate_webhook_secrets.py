from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from marketplace.webhooks.outbox import webhook_secrets_rotate


class Command(BaseCommand):
    help = (
        "Re-encrypt every webhook secret with the first key of WEBHOOK_KEY_RING. Put the new "
        "key first (keeping the old ones after it), run this, then drop the old keys from the "
        "ring. Safe to run again."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        rotation = webhook_secrets_rotate()
        self.stdout.write(f"re-encrypted {rotation.rotated} webhook secrets with the current key")
        if rotation.unreadable:
            raise CommandError(
                f"{len(rotation.unreadable)} webhook secrets could not be decrypted with any key "
                f"of the ring (endpoints {', '.join(rotation.unreadable)})"
            )
