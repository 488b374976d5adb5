from django.core.management.base import BaseCommand, CommandError

from escrow.audit import ledger_audit


class Command(BaseCommand):
    help = "Recompute every balance from the transfers and check the ledger invariants."

    def handle(self, *args, **options):
        report = ledger_audit()
        self.stdout.write(
            f"accounts={report.accounts} transfers={report.transfers} escrows={report.escrows} "
            f"channels={report.channels} sum_of_balances={report.total_balance} "
            f"held_in_escrow={report.held_in_escrow} in_channels={report.in_channels}"
        )
        for violation in report.violations:
            self.stderr.write(f"VIOLATION: {violation}")
        if not report.ok:
            raise CommandError(f"ledger audit failed: {len(report.violations)} violation(s)")
        self.stdout.write(self.style.SUCCESS("ledger audit passed"))
