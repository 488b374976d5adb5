from django.core.management.base import BaseCommand, CommandError

from reputation.audit import reputation_audit


class Command(BaseCommand):
    help = "Replay every reputation event and check the stored scores match exactly."

    def handle(self, *args, **options):
        report = reputation_audit()
        self.stdout.write(f"agents={report.agents} events={report.events}")
        for violation in report.violations:
            self.stderr.write(f"VIOLATION: {violation}")
        if not report.ok:
            raise CommandError(f"reputation audit failed: {len(report.violations)} violation(s)")
        self.stdout.write(self.style.SUCCESS("reputation audit passed"))
