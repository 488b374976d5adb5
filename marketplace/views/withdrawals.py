"""The wallet's withdrawals: the form, the history, live status and cancel.

The section is its own fragment, loaded into the wallet page. Each withdrawal still under
way polls its own row until it is final; the last answer stops the polling.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.http import HttpResponse, HttpResponseBase
from django.shortcuts import redirect
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseStopPolling

from escrow.errors import DomainError
from escrow.models import Withdrawal
from marketplace.forms import CreditsField, IdempotentForm
from marketplace.templatetags.exchange import format_credits
from marketplace.views.common import (
    POLL_ACTIVE,
    HtmxHttpRequest,
    login_required,
    render_page,
    submit_money_form,
    user_of,
)
from marketplace.withdrawals import (
    withdrawal_cancel_request,
    withdrawal_of,
    withdrawal_request,
    withdrawals_of,
)

HISTORY_SIZE = 10
# Tells the wallet page (listening on its panel) that the balances changed.
CHANGED_HEADER = "HX-Trigger"
CHANGED_EVENT = "wallet-changed"


class WithdrawForm(IdempotentForm):
    amount = CreditsField(
        label="Amount",
        help_text="In credits (CR); it leaves your available balance at once.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Beside the deposit form on one page: ids of its own.
        kwargs.setdefault("auto_id", "withdraw_%s")
        super().__init__(*args, **kwargs)


def _context(request: HtmxHttpRequest, form: WithdrawForm) -> dict[str, Any]:
    user = user_of(request)
    return {
        "form": form,
        "withdrawals": list(withdrawals_of(user)[:HISTORY_SIZE]),
        "minimum": settings.WITHDRAWAL_MIN,
        "poll": POLL_ACTIVE,
    }


@require_http_methods(["GET", "POST"])
@login_required
def withdrawals(request: HtmxHttpRequest) -> HttpResponseBase:
    user = user_of(request)
    form = WithdrawForm()
    if request.method == "GET" and not request.htmx:
        return redirect("wallet")
    if request.method == "POST":
        form = WithdrawForm(request.POST)
        if form.is_valid():
            amount = form.cleaned_data["amount"]
            form, made = submit_money_form(
                form,
                lambda: withdrawal_request(
                    user=user, amount=amount, idempotency_key=form.cleaned_data["idempotency_key"]
                ),
                reused="This form was already used for another amount. Check the amount and "
                "submit again.",
                on_error=lambda form, exc: form.add_error("amount", exc.message),
            )
            if made is not None:
                messages.success(request, f"Withdrawing {format_credits(amount)}.")
                if not request.htmx:
                    return redirect("wallet")
                # The balances above change too: the wallet panel reloads itself.
                response = render_page(
                    request,
                    "withdrawals/section.html",
                    _context(request, WithdrawForm()),
                    fragment="section",
                )
                response[CHANGED_HEADER] = CHANGED_EVENT
                return response
        elif not request.htmx:
            return redirect("wallet")
    return render_page(
        request, "withdrawals/section.html", _context(request, form), fragment="section"
    )


@require_GET
@login_required
def withdrawal_row(request: HtmxHttpRequest, withdrawal_id: int) -> HttpResponse:
    try:
        withdrawal = withdrawal_of(user_of(request), withdrawal_id)
    except DomainError:
        return HttpResponse(status=404)
    final = withdrawal.status not in Withdrawal.IN_FLIGHT
    response_class = HttpResponseStopPolling if final else HttpResponse
    return render_page(
        request,
        "withdrawals/row.html",
        {"w": withdrawal, "poll": POLL_ACTIVE},
        fragment="row",
        response_class=response_class,
    )


@require_POST
@login_required
def withdrawal_cancel(request: HtmxHttpRequest, withdrawal_id: int) -> HttpResponseBase:
    changed = False
    try:
        withdrawal_cancel_request(user=user_of(request), withdrawal_id=withdrawal_id)
        messages.success(request, "Withdrawal cancelled; the credits are back in your wallet.")
        changed = True
    except DomainError as exc:
        messages.error(request, exc.message)
    if not request.htmx:
        return redirect("wallet")
    response = render_page(
        request, "withdrawals/section.html", _context(request, WithdrawForm()), fragment="section"
    )
    if changed:
        response[CHANGED_HEADER] = CHANGED_EVENT
    return response
