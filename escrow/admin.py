"""The ledger in the admin: shown, searched and audited, never edited."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Sum
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import URLPattern, path, reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

# Withdrawals, deposits and held earnings have an admin module of their own; importing it
# registers it.
from escrow import payout_admin  # noqa: F401
from escrow.admin_base import LedgerAdmin, ReadOnlyAdmin, credits, credits_text
from escrow.audit import ledger_audit
from escrow.models import Account, Escrow, PaymentChannel, RequesterKey, Transfer, Voucher

MAX_VIOLATIONS_SHOWN = 20


@admin.register(Account)
class AccountAdmin(LedgerAdmin):
    list_display = ["id", "kind", "shard", "user", "balance_cr", "created_at"]
    list_filter = ["kind"]
    search_fields = ["user__username"]
    list_select_related = ["user"]

    @admin.display(description="balance", ordering="balance")
    def balance_cr(self, obj: Account) -> str:
        return credits(obj.balance)

    def changelist_view(self, request: HttpRequest, extra_context=None):  # type: ignore[override]
        # A system account is SYSTEM_ACCOUNT_SHARDS rows: above the rows, one figure each.
        totals = dict(
            Account.objects.exclude(kind=Account.Kind.WALLET)
            .values("kind")
            .annotate(total=Sum("balance"))
            .values_list("kind", "total")
        )
        balances = [(kind, credits_text(totals.get(kind) or 0)) for kind in Account.SYSTEM_KINDS]
        return super().changelist_view(
            request, {**(extra_context or {}), "system_balances": balances}
        )


@admin.register(Transfer)
class TransferAdmin(LedgerAdmin):
    list_display = [
        "id",
        "kind",
        "amount_cr",
        "debit_account",
        "credit_account",
        "escrow",
        "task",
        "created_at",
    ]
    list_filter = ["kind", ("created_at", admin.DateFieldListFilter)]
    search_fields = ["idempotency_key", "memo", "task__id", "debit_account__user__username"]
    list_select_related = ["debit_account", "credit_account", "escrow", "task"]
    date_hierarchy = "created_at"

    @admin.display(description="amount", ordering="amount")
    def amount_cr(self, obj: Transfer) -> str:
        return credits(obj.amount)

    def get_urls(self) -> list[URLPattern]:
        audit = path(
            "audit/",
            self.admin_site.admin_view(require_POST(self.audit_view)),
            name="escrow_ledger_audit",
        )
        return [audit, *super().get_urls()]

    def audit_view(self, request: HttpRequest) -> HttpResponseRedirect:
        """Recompute every balance from the transfers and report as a message."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        report = ledger_audit()
        if report.ok:
            messages.success(
                request,
                f"Ledger audit passed: {report.accounts} accounts, {report.transfers} "
                f"transfers and {report.escrows} escrows add up; "
                f"{credits_text(report.held_in_escrow)} held in escrow.",
            )
        else:
            messages.error(
                request, f"Ledger audit FAILED with {len(report.violations)} violation(s)."
            )
            for violation in report.violations[:MAX_VIOLATIONS_SHOWN]:
                messages.error(request, violation)
        target = request.POST.get("next", "")
        if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
            target = reverse("admin:escrow_transfer_changelist")
        return HttpResponseRedirect(target)


@admin.register(Escrow)
class EscrowAdmin(LedgerAdmin):
    list_display = [
        "id",
        "status",
        "payment",
        "amount_cr",
        "cost_cr",
        "fee_cr",
        "refund_cr",
        "task",
        "created_at",
        "resolved_at",
    ]
    list_filter = ["status", "payment", ("created_at", admin.DateFieldListFilter)]
    search_fields = ["task__id", "payer__user__username", "payee__user__username"]
    list_select_related = ["task"]

    @admin.display(description="amount", ordering="amount")
    def amount_cr(self, obj: Escrow) -> str:
        return credits(obj.amount)

    @admin.display(description="cost", ordering="cost")
    def cost_cr(self, obj: Escrow) -> str:
        return credits(obj.cost)

    @admin.display(description="fee", ordering="fee")
    def fee_cr(self, obj: Escrow) -> str:
        return credits(obj.fee)

    @admin.display(description="refund", ordering="refund")
    def refund_cr(self, obj: Escrow) -> str:
        return credits(obj.refund)


@admin.register(PaymentChannel)
class PaymentChannelAdmin(LedgerAdmin):
    list_display = [
        "id",
        "agent",
        "requester",
        "status",
        "deposit_cr",
        "redeemed_cr",
        "drawn_cr",
        "reserved_cr",
        "in_flight",
        "nonce",
        "expires_at",
        "created_at",
    ]
    list_filter = ["status", ("created_at", admin.DateFieldListFilter)]
    search_fields = ["id", "agent__slug", "requester__username"]
    list_select_related = ["agent", "requester"]

    @admin.display(description="deposit", ordering="deposit")
    def deposit_cr(self, obj: PaymentChannel) -> str:
        return credits(obj.deposit)

    @admin.display(description="redeemed", ordering="redeemed")
    def redeemed_cr(self, obj: PaymentChannel) -> str:
        return credits(obj.redeemed)

    @admin.display(description="drawn for evaluators", ordering="drawn")
    def drawn_cr(self, obj: PaymentChannel) -> str:
        return credits(obj.drawn)

    @admin.display(description="in flight", ordering="reserved")
    def reserved_cr(self, obj: PaymentChannel) -> str:
        return credits(obj.reserved)


@admin.register(Voucher)
class VoucherAdmin(ReadOnlyAdmin):
    list_display = ["id", "channel", "nonce", "cumulative_cr", "task", "created_at"]
    list_filter = [("created_at", admin.DateFieldListFilter)]
    search_fields = ["channel__id", "task__id"]
    list_select_related = ["channel", "task"]

    @admin.display(description="cumulative amount", ordering="cumulative_amount")
    def cumulative_cr(self, obj: Voucher) -> str:
        return credits(obj.cumulative_amount)


@admin.register(RequesterKey)
class RequesterKeyAdmin(ReadOnlyAdmin):
    list_display = ["key_id", "user", "custodial", "created_at"]
    list_filter = [("created_at", admin.DateFieldListFilter)]
    search_fields = ["key_id", "public_key", "user__username"]
    list_select_related = ["user"]
    # The custodial private key stays out of sight, even encrypted.
    exclude = ["custodial_secret"]

    @admin.display(boolean=True, description="custodial")
    def custodial(self, obj: RequesterKey) -> bool:
        return bool(obj.custodial_secret)
