"""Webhooks: adding an endpoint (its secret shown once), its delivery log, a test ping,
enabling a disabled one again, and removing it."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.http import HttpResponse, HttpResponseBase
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from escrow.errors import DomainError
from marketplace.views.common import (
    POLL_ACTIVE,
    HtmxHttpRequest,
    go_to,
    login_required,
    paginate,
    render_page,
    user_of,
)
from marketplace.webhooks import selectors
from marketplace.webhooks.events import EVENT_TYPES, TASK_EVENTS
from marketplace.webhooks.outbox import (
    webhook_create,
    webhook_delete,
    webhook_enable,
    webhook_ping,
)
from marketplace.webhooks.transport import MAX_URL_LENGTH

ATTEMPTS_PAGE_SIZE = 25


class WebhookForm(forms.Form):
    url = forms.CharField(
        label="Endpoint URL",
        max_length=MAX_URL_LENGTH,
        widget=forms.TextInput(
            attrs={"placeholder": "https://example.com/hooks/exchange", "inputmode": "url"}
        ),
        help_text="Receives a signed POST for each event. It must be reachable on the internet.",
    )
    events = forms.MultipleChoiceField(
        label="Events",
        choices=[(name, name) for name in EVENT_TYPES],
        initial=list(TASK_EVENTS),
        widget=forms.CheckboxSelectMultiple,
    )


@never_cache  # the response that shows a new endpoint's secret must not be kept by any cache
@require_http_methods(["GET", "POST"])
@login_required
def webhook_list(request: HtmxHttpRequest) -> HttpResponseBase:
    user = user_of(request)
    created = None
    if request.method == "POST":
        form = WebhookForm(request.POST)
        if form.is_valid():
            try:
                created = webhook_create(
                    owner=user, url=form.cleaned_data["url"], events=form.cleaned_data["events"]
                )
            except DomainError as exc:
                form.add_error("url" if "url" in exc.code else None, exc.message)
            else:
                # Rendered, never redirected to: the secret must not sit in a URL or a
                # session, and this page is the only time it is shown.
                form = WebhookForm()
    else:
        form = WebhookForm()
    context = {"form": form, "created": created, "webhooks": list(selectors.webhooks_of(user))}
    status = 400 if request.method == "POST" and created is None else 200
    return render_page(request, "webhooks/list.html", context, fragment="add", status=status)


def _detail_context(request: HtmxHttpRequest, webhook_id: Any) -> dict[str, Any]:
    endpoint = selectors.webhook_of(user_of(request), webhook_id)
    page = paginate(request, selectors.webhook_attempts(endpoint), ATTEMPTS_PAGE_SIZE)
    return {
        "webhook": endpoint,
        "page": page,
        # The log refreshes itself while events wait to be delivered.
        "poll": POLL_ACTIVE if getattr(endpoint, "pending", 0) else "",
    }


@require_GET
@login_required
def webhook_detail(request: HtmxHttpRequest, webhook_id: Any) -> HttpResponse:
    context = _detail_context(request, webhook_id)
    return render_page(request, "webhooks/detail.html", context, fragment="log")


@require_POST
@login_required
def webhook_ping_view(request: HtmxHttpRequest, webhook_id: Any) -> HttpResponseBase:
    endpoint = selectors.webhook_of(user_of(request), webhook_id)
    try:
        event_id = webhook_ping(endpoint=endpoint)
    except DomainError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Ping {event_id} sent; it appears in the log once delivered.")
    if request.htmx:
        context = _detail_context(request, webhook_id)
        context["poll"] = POLL_ACTIVE  # until the ping's attempt shows up
        return render_page(request, "webhooks/detail.html", context, fragment="log")
    return go_to(request, reverse("webhook-detail", args=[endpoint.pk]))


@require_POST
@login_required
def webhook_enable_view(request: HtmxHttpRequest, webhook_id: Any) -> HttpResponseBase:
    endpoint = selectors.webhook_of(user_of(request), webhook_id)
    webhook_enable(endpoint=endpoint)
    messages.success(request, "Webhook enabled: it receives new events again.")
    return go_to(request, reverse("webhook-detail", args=[endpoint.pk]))


@require_POST
@login_required
def webhook_delete_view(request: HtmxHttpRequest, webhook_id: Any) -> HttpResponseBase:
    endpoint = selectors.webhook_of(user_of(request), webhook_id)
    webhook_delete(endpoint=endpoint)
    messages.success(request, f"Webhook to {endpoint.url} removed.")
    return go_to(request, reverse("webhook-list"))
