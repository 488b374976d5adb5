"""Payment channels: opening one, its page, and closing it."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpResponse, HttpResponseBase
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from escrow.channel_evaluation import channel_returned
from escrow.channels import channel_close, channel_open
from escrow.errors import DomainError, InsufficientFunds
from escrow.models import PaymentChannel
from marketplace import selectors
from marketplace.forms import ChannelOpenForm
from marketplace.templatetags.exchange import format_credits
from marketplace.views.common import (
    HtmxHttpRequest,
    go_to,
    login_required,
    render_page,
    submit_money_form,
    user_of,
)


def _channels_context(request: HtmxHttpRequest, form: ChannelOpenForm) -> dict[str, Any]:
    user = user_of(request)
    return {
        "form": form,
        "summary": selectors.wallet_summary(user),
        "channels": list(selectors.channels_paid_by(user)),
        "incoming": list(selectors.channels_to_agents_of(user)),
        "has_agents": form.fields["agent"].queryset.exists(),  # type: ignore[attr-defined]
    }


def _channel_error(form: Any, exc: DomainError) -> None:
    if isinstance(exc, InsufficientFunds):
        form.add_error("deposit", "Your wallet cannot cover this deposit.")
    else:
        form.add_error("deposit", exc.message)


@require_http_methods(["GET", "POST"])
@login_required
def channel_list(request: HtmxHttpRequest) -> HttpResponseBase:
    user = user_of(request)
    if request.method == "POST":
        form = ChannelOpenForm(request.POST)
        if form.is_valid():
            agent, deposit = form.cleaned_data["agent"], form.cleaned_data["deposit"]
            form, channel = submit_money_form(
                form,
                lambda: channel_open(
                    requester_user_id=user.pk,
                    agent_id=agent.pk,
                    payee_user_id=agent.owner_id,
                    deposit=deposit,
                    idempotency_key=form.cleaned_data["idempotency_key"],
                ),
                reused="This form was already used to open another channel. Check the values "
                "and submit again.",
                on_error=_channel_error,
            )
            if channel is not None:
                messages.success(
                    request,
                    f"Channel to {agent.name} open with {format_credits(deposit)}. "
                    "Pick it under “Pay with” when you submit a task.",
                )
                return go_to(request, reverse("channel-detail", args=[channel.pk]))
    else:
        form = ChannelOpenForm(initial={"agent": request.GET.get("agent")})
    context = _channels_context(request, form)
    return render_page(request, "channels/list.html", context, fragment="form")


@require_GET
@login_required
def channel_detail(request: HtmxHttpRequest, channel_id: Any) -> HttpResponse:
    user = user_of(request)
    channel = selectors.channel_for(user, channel_id)
    context = {
        "channel": channel,
        "is_requester": channel.requester_id == user.pk,
        "available": selectors.channel_available(channel),
        "returned": channel_returned(channel),
        "vouchers": selectors.channel_vouchers(channel),
    }
    return render(request, "channels/detail.html", context)


@require_POST
@login_required
def channel_close_view(request: HtmxHttpRequest, channel_id: Any) -> HttpResponseBase:
    user = user_of(request)
    channel = selectors.channel_for(user, channel_id)
    try:
        closed = channel_close(channel_id=channel.pk, by_user_id=user.pk)
    except DomainError as exc:
        messages.error(request, exc.message)
    else:
        if closed.status == PaymentChannel.Status.SETTLED:
            refund = channel_returned(closed)
            messages.success(
                request,
                f"Channel closed and settled: {format_credits(closed.redeemed)} paid, "
                f"{format_credits(refund)} back to the requester's wallet.",
            )
        else:
            # Tasks already paid by voucher still run; the channel settles after the last.
            messages.success(
                request,
                "Channel closing: it takes no new tasks and settles when the tasks in "
                "flight finish.",
            )
    return go_to(request, reverse("channel-detail", args=[channel.pk]))
