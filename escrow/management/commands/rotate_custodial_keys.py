from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from escrow.keys import custodial_keys_rotate


class Command(BaseCommand):
    help = (
        "Re-encrypt every custodial voucher key with the first key of CUSTODIAL_KEY_RING. "
        "Put the new key first (keeping the old ones after it), run this, then drop the old "
        "keys from the ring. Safe to run again."
    )

    def handle(self, *args, **options):
        rotation = custodial_keys_rotate()
        self.stdout.write(f"re-encrypted {rotation.rotated} custodial keys with the current key")
        if rotation.unreadable:
            raise CommandError(
                f"{len(rotation.unreadable)} custodial keys could not be decrypted with any key "
                f"of the ring: {', '.join(rotation.unreadable)}"
            )
