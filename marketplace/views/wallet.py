"""The wallet: balances and pending earnings (live), (development) deposits, the ledger
and its CSV export."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.http import HttpResponseBase, StreamingHttpResponse
from django.shortcuts import redirect
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods

from escrow.services import deposit_create
from marketplace import selectors
from marketplace.forms import DepositForm
from marketplace.selectors.earnings import PENDING_SHOWN, pending_earnings_of
from marketplace.templatetags.exchange import format_credits
from marketplace.views.common import (
    HtmxHttpRequest,
    login_required,
    paginate,
    render_page,
    submit_money_form,
    user_of,
)
from marketplace.views.withdrawals import CHANGED_EVENT, CHANGED_HEADER

LEDGER_PAGE_SIZE = 20
# The balances refresh themselves: earnings are released and disputes refunded by others.
POLL_BALANCES = "every 2s"


def _balances_context(user: Any) -> dict[str, Any]:
    return {
        "summary": selectors.wallet_summary(user),
        "pending": list(pending_earnings_of(user)[:PENDING_SHOWN]),
        "balances_poll": POLL_BALANCES,
    }


def _wallet_context(request: HtmxHttpRequest, form: DepositForm) -> dict[str, Any]:
    user = user_of(request)
    page = paginate(request, selectors.ledger_of(user), LEDGER_PAGE_SIZE)
    return {
        **_balances_context(user),
        "form": form,
        "page": page,
        "lines": selectors.ledger_lines(user, page.object_list),
        "funding_enabled": settings.DEV_FUNDING_ENABLED,
    }


@require_http_methods(["GET", "POST"])
@login_required
def wallet(request: HtmxHttpRequest) -> HttpResponseBase:
    user = user_of(request)
    if request.method == "POST":
        form = DepositForm(request.POST)
        if form.is_valid():
            amount = form.cleaned_data["amount"]
            form, transfer = submit_money_form(
                form,
                lambda: deposit_create(
                    user_id=user.pk,
                    amount=amount,
                    idempotency_key=form.cleaned_data["idempotency_key"],
                ),
                reused="This form was already used for another amount. Check the amount and "
                "submit again.",
                on_error=lambda form, exc: form.add_error("amount", exc.message),
            )
            if transfer is not None:
                balance = selectors.wallet_summary(user).balance
                messages.success(
                    request,
                    f"Added {format_credits(amount)}. Your balance is {format_credits(balance)}.",
                )
                if request.htmx:
                    # No history entry to protect: show the new balance and a fresh form.
                    context = _wallet_context(request, DepositForm())
                    return render_page(request, "wallet.html", context, fragment="panel")
                return redirect("wallet")
        return render_page(request, "wallet.html", _wallet_context(request, form), fragment="panel")
    return render_page(
        request, "wallet.html", _wallet_context(request, DepositForm()), fragment="panel"
    )


@require_GET
@login_required
def wallet_balances(request: HtmxHttpRequest) -> HttpResponseBase:
    """The live part of the wallet page: balances and the pending earnings.

    Each poll says which balance the page shows; when money arrived or left meanwhile
    (released earnings, a dispute's refund), the whole panel reloads, ledger included.
    """
    if not request.htmx:
        return redirect("wallet")
    context = _balances_context(user_of(request))
    response = render_page(request, "wallet.html", context, fragment="balances")
    if request.GET.get("shown", str(context["summary"].balance)) != str(context["summary"].balance):
        response[CHANGED_HEADER] = CHANGED_EVENT
    return response


def _agent_slug(transfer: Any) -> str:
    if transfer.task_id:
        return transfer.task.agent.slug
    if transfer.channel_id:
        return transfer.channel.agent.slug
    return ""


class _Echo:
    # csv.writer wants a file; this one hands each row back so it can be streamed.
    def write(self, value: str) -> str:
        return value


@require_GET
@login_required
def wallet_export(request: HtmxHttpRequest) -> StreamingHttpResponse:
    """The whole ledger as CSV, oldest first, amounts in µCR and in credits."""
    user = user_of(request)
    writer = csv.writer(_Echo())

    def rows() -> Iterator[str]:
        yield writer.writerow(
            [
                "id",
                "created_at",
                "kind",
                "direction",
                "amount_ucr",
                "amount_cr",
                "balance_after_ucr",
                "task",
                "channel",
                "agent",
                "memo",
            ]
        )
        for line in selectors.ledger_export(user):
            transfer = line.transfer
            yield writer.writerow(
                [
                    transfer.pk,
                    transfer.created_at.isoformat(),
                    transfer.kind,
                    "in" if line.incoming else "out",
                    line.amount,
                    format_credits(line.amount).removesuffix(" CR").replace("−", "-"),
                    line.balance_after,
                    transfer.task_id or "",
                    transfer.channel_id or "",
                    _agent_slug(transfer),
                    transfer.memo,
                ]
            )

    stamp = timezone.now().strftime("%Y%m%d")
    response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="ledger-{user.username}-{stamp}.csv"'
    return response
