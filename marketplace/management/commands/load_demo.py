"""Demo data for the embedded default: idempotent, safe to run on every start."""

from __future__ import annotations

import os
import secrets

from django.conf import settings
from django.contrib.auth.models import User
from django.core.management.base import BaseCommand

from escrow.models import Account
from escrow.services import deposit_create
from marketplace.services import user_create

DEMO_REQUESTER = "demo"
DEMO_OWNER = "demo-owner"
DEMO_FUNDS = 100 * 1_000_000  # 100 CR


class Command(BaseCommand):
    help = "Create the demo requester (with a funded wallet), the demo agent owner and an admin."

    def handle(self, *args, **options):
        password = os.environ.get("DEMO_PASSWORD", "demo-password")
        requester = self._user(DEMO_REQUESTER, password)
        self._user(DEMO_OWNER, password)
        if not Account.objects.filter(user=requester, credits__kind="deposit").exists():
            deposit_create(user_id=requester.pk, amount=DEMO_FUNDS, idempotency_key="demo-funds")
        admin_password = self._admin()
        self.stdout.write(
            f"demo data ready: log in as {DEMO_REQUESTER!r} or {DEMO_OWNER!r} with password "
            f"{password!r}; admin: 'admin' / {admin_password!r}"
        )

    def _user(self, username: str, password: str) -> User:
        user = User.objects.filter(username=username).first()
        if user is None:
            user = user_create(username=username, password=password)
        return user

    def _admin(self) -> str:
        """An operator account whose password is generated once into the data directory."""
        path = settings.DATA_DIR / "admin_password"
        if not path.exists():
            path.write_text(secrets.token_urlsafe(12))
            path.chmod(0o600)
        password = os.environ.get("DEMO_ADMIN_PASSWORD") or path.read_text().strip()
        admin = User.objects.filter(username="admin").first()
        if admin is None:
            User.objects.create_superuser("admin", password=password)
        return password
