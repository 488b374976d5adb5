from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from escrow.reconcile import DEFAULT_WINDOW, funding_reconcile


class Command(BaseCommand):
    help = (
        "Match the funding provider's records of the last HOURS against our deposits and "
        "withdrawals: credit collections no one credited, flag every other difference for "
        "operators (admin: Funding discrepancies)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--hours",
            type=float,
            default=DEFAULT_WINDOW.total_seconds() / 3600,
            help="how far back to read the provider's records (default: %(default)s)",
        )
        parser.add_argument("--provider", help="the provider to reconcile (FUNDING_PROVIDER)")

    def handle(self, *args, hours: float, provider: str | None, **options) -> None:
        if hours <= 0:
            raise CommandError("--hours must be positive")
        until = timezone.now()
        counts = funding_reconcile(
            since=until - timedelta(hours=hours), until=until, provider=provider
        )
        self.stdout.write(
            f"records {counts['records']}, credited {counts['credited']}, "
            f"flagged {counts['flagged']}, errors {counts['errors']}"
        )
        if counts["errors"]:
            raise CommandError(f"{counts['errors']} record(s) could not be reconciled")
