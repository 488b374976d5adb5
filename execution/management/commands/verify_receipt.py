from __future__ import annotations

import base64
import binascii
import json
import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from execution.engine.receipts import receipt_verify
from execution.services import NOTHING_TO_REPLAY, receipt_replay


class Command(BaseCommand):
    help = "Verify an execution receipt (JSON with payload, signature, key_id) offline."

    def add_arguments(self, parser):
        parser.add_argument("file", help="the receipt as returned by the API ('-' for stdin)")
        parser.add_argument(
            "--public-key",
            help="base64 Ed25519 public key (default: this platform's key named by the "
            "receipt's key_id, current or retired)",
        )
        parser.add_argument(
            "--replay",
            action="store_true",
            help="also rerun the pinned binary on the task's input and compare the output hash "
            "(for a verdict's receipt: the evaluator's run)",
        )

    def handle(self, *args, **options):
        try:
            source = options["file"]
            text = sys.stdin.read() if source == "-" else Path(source).read_text()
            receipt = json.loads(text)
        except (OSError, ValueError) as exc:
            raise CommandError(f"cannot read a receipt from {options['file']}: {exc}") from None
        public = None
        if options["public_key"]:
            try:
                public = base64.b64decode(options["public_key"], validate=True)
            except binascii.Error:
                raise CommandError("--public-key must be base64") from None
        if not receipt_verify(receipt, public_key=public):
            raise CommandError("INVALID: the signature does not verify")
        self.stdout.write(self.style.SUCCESS(f"signature valid (key {receipt.get('key_id')})"))
        if options["replay"]:
            matches, detail = receipt_replay(json.loads(receipt["payload"]))
            if detail.startswith(NOTHING_TO_REPLAY):  # a decision's receipt, or no run
                self.stdout.write(self.style.WARNING(detail))
                return
            if not matches:
                raise CommandError(f"REPLAY MISMATCH: {detail}")
            self.stdout.write(self.style.SUCCESS(f"replay matches: {detail}"))
