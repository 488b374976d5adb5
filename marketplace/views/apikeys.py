"""API keys in the browser: create one with limits (shown once), watch its spending against
each limit, revoke it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib import messages
from django.http import HttpResponse, HttpResponseBase
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from escrow.errors import DomainError
from marketplace import selectors
from marketplace.apikey_forms import ApiKeyForm
from marketplace.apikey_models import ApiKey
from marketplace.apikeys import (
    api_key_create,
    api_key_revoke,
    api_key_spending,
    api_keys_settle_channels,
)
from marketplace.views.common import HtmxHttpRequest, go_to, login_required, render_page, user_of


@dataclass(frozen=True)
class Bar:
    """One limit of a key: what was spent against it, as a share of it."""

    label: str
    spent: int
    limit: int

    @property
    def percent(self) -> int:
        return min(100, self.spent * 100 // self.limit)

    @property
    def left(self) -> int:
        return max(0, self.limit - self.spent)


@dataclass(frozen=True)
class Row:
    key: ApiKey
    status: str
    bars: list[Bar]
    total: int


def _row(key: ApiKey, now: Any) -> Row:
    spending = api_key_spending(key, now=now)
    used = {"daily": spending.daily, "monthly": spending.monthly, "total": spending.total}
    labels = {"daily": "Today (UTC)", "monthly": "This month", "total": "In all"}
    bars = [
        Bar(labels[name], used[name], limit)
        for name, limit in spending.limits.items()
        if name in used and limit is not None
    ]
    if key.revoked_at is not None:
        status = "revoked"
    elif key.expires_at is not None and key.expires_at <= now:
        status = "expired"
    else:
        status = "active"
    return Row(key=key, status=status, bars=bars, total=spending.total)


def _page(
    request: HtmxHttpRequest, form: ApiKeyForm, created: tuple[ApiKey, str] | None = None
) -> HttpResponse:
    user = user_of(request)
    api_keys_settle_channels(user=user)
    now = timezone.now()
    context = {
        "form": form,
        "created": created[0] if created else None,
        "secret": created[1] if created else None,
        "rows": [_row(key, now) for key in selectors.api_keys_of(user)],
    }
    return render_page(request, "apikeys/list.html", context, fragment="panel")


@never_cache  # the one response that carries a new key must not be kept by any cache
@require_http_methods(["GET", "POST"])
@login_required
def api_key_list(request: HtmxHttpRequest) -> HttpResponseBase:
    if request.method != "POST":
        return _page(request, ApiKeyForm())
    form = ApiKeyForm(request.POST)
    if form.is_valid():
        try:
            key, secret = api_key_create(user=user_of(request), **form.settings())
        except DomainError as exc:
            for name, _problem in exc.fields.items():
                if name in form.fields:
                    form.add_error(name, exc.message)
                    break
            else:
                form.add_error(None, exc.message)
        else:
            # Shown in this response only: never stored, never put in a message or a redirect.
            return _page(request, ApiKeyForm(), created=(key, secret))
    return _page(request, form)


@require_POST
@login_required
def api_key_revoke_view(request: HtmxHttpRequest, key_id: Any) -> HttpResponseBase:
    key = selectors.api_key_for(user_of(request), key_id)
    if key.revoked_at is None:
        api_key_revoke(key=key)
        messages.success(request, f"Revoked “{key.name}” ({key.prefix}…): it works no more.")
    if request.htmx:
        return _page(request, ApiKeyForm())
    return go_to(request, reverse("api-key-list"))
