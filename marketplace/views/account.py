"""The account token in the browser: whether there is one and when it expires; rotate it
(the new token is shown in that one response, never cached) or revoke it. Changing the
password here revokes it too (any password change does: see `marketplace.account_tokens`)."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth import update_session_auth_hash
from django.contrib.auth.forms import PasswordChangeForm
from django.http import HttpResponse, HttpResponseBase
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST
from rest_framework.authtoken.models import Token

from marketplace.account_tokens import (
    account_token_expired,
    account_token_expires_at,
    account_token_of,
    account_token_revoke,
    account_token_rotate,
)
from marketplace.views.common import HtmxHttpRequest, go_to, login_required, render_page, user_of


def _page(
    request: HtmxHttpRequest,
    *,
    new: str | None = None,
    password_form: PasswordChangeForm | None = None,
    status: int = 200,
) -> HttpResponse:
    user = user_of(request)
    token: Token | None = account_token_of(user)
    context: dict[str, Any] = {
        "token": token,
        "expires_at": account_token_expires_at(token) if token else None,
        "expired": account_token_expired(token) if token else False,
        "new_token": new,
        "password_form": password_form or PasswordChangeForm(user),
    }
    return render_page(request, "accounts/token.html", context, status=status)


# Every response of the page is uncached: the one after a rotation carries the new token.
@never_cache
@require_GET
@login_required
def account_token(request: HtmxHttpRequest) -> HttpResponseBase:
    return _page(request)


@never_cache
@require_POST
@login_required
def account_token_rotate_view(request: HtmxHttpRequest) -> HttpResponseBase:
    new = account_token_rotate(user=user_of(request))
    # Shown in this response only: never stored, never put in a message or a redirect.
    return _page(request, new=new)


@never_cache
@require_POST
@login_required
def account_token_revoke_view(request: HtmxHttpRequest) -> HttpResponseBase:
    if account_token_revoke(user=user_of(request)):
        messages.success(request, "Token revoked: requests made with it are refused from now on.")
    return go_to(request, reverse("account-token"))


@never_cache
@require_POST
@login_required
def account_password(request: HtmxHttpRequest) -> HttpResponseBase:
    form = PasswordChangeForm(user_of(request), request.POST)
    if not form.is_valid():
        return _page(request, password_form=form, status=400)
    user = form.save()
    # This browser stays signed in; other sessions of the account end.
    update_session_auth_hash(request, user)
    messages.success(
        request, "Password changed. Your token went with the old one: rotate for a new token."
    )
    return go_to(request, reverse("account-token"))
