"""What the view modules share: the htmx-aware login gate, fragment rendering, pagination
and the submit helper for forms that move money."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

from django.contrib import messages
from django.contrib.auth.decorators import login_required as django_login_required
from django.contrib.auth.models import User
from django.contrib.auth.views import redirect_to_login
from django.core.paginator import Page, Paginator
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.utils.cache import patch_vary_headers
from django_htmx.http import HttpResponseClientRedirect
from django_htmx.middleware import HtmxDetails

from escrow.errors import DomainError, IdempotencyConflict
from marketplace.forms import new_idempotency_key

# Live regions poll quickly while something is moving, slowly when nothing is.
POLL_ACTIVE = "every 1s"
POLL_IDLE = "every 10s"


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


def login_required(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    """Django's login_required, plus: an htmx request whose session ran out (a poll, say)
    sends the whole page to the login form instead of swapping it into a fragment."""
    protected = django_login_required(view)

    @wraps(view)
    def wrapper(request: HtmxHttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if request.htmx and not request.user.is_authenticated:
            page = request.htmx.current_url_abs_path or request.get_full_path()
            return HttpResponseClientRedirect(redirect_to_login(page).url)
        return protected(request, *args, **kwargs)

    return wrapper


def user_of(request: HtmxHttpRequest) -> User:
    # Only called behind @login_required.
    return cast(User, request.user)


def render_page(
    request: HtmxHttpRequest,
    template: str,
    context: dict[str, Any],
    *,
    fragment: str | None = None,
    status: int = 200,
    response_class: type[HttpResponse] = HttpResponse,
) -> HttpResponse:
    """The page, or for an htmx request just `fragment` of it (plus any flash messages)."""
    if fragment is None or not request.htmx or request.htmx.history_restore_request:
        response = render(request, template, context, status=status)
    else:
        body = render_to_string(f"{template}#{fragment}", context, request)
        if len(messages.get_messages(request)):
            # Flash messages travel with the fragment and land in the page's message slot.
            body += render_to_string("includes/messages.html#oob", {}, request)
        response = response_class(body)
        if status != 200:
            response.status_code = status
    if fragment is not None:
        # Caches must not hand the fragment to a full-page request, or the reverse.
        patch_vary_headers(response, ("HX-Request",))
    return response


def go_to(request: HtmxHttpRequest, url: str) -> HttpResponseBase:
    """Redirect after a successful POST; htmx is told to load the new page itself."""
    if request.htmx:
        return HttpResponseClientRedirect(url)
    return redirect(url)


def paginate(request: HtmxHttpRequest, items: Any, size: int) -> Page:
    return Paginator(items, size).get_page(request.GET.get("page"))


def _rebind_with_new_key(form: Any) -> Any:
    """The same values in a form with a fresh idempotency key (after a key conflict)."""
    data = form.data.copy()
    data["idempotency_key"] = new_idempotency_key()
    rebound = type(form)(data, form.files) if form.files else type(form)(data)
    rebound.is_valid()
    return rebound


T = TypeVar("T")


def submit_money_form(
    form: Any,
    action: Callable[[], T],
    *,
    reused: str,
    on_error: Callable[[Any, DomainError], None],
) -> tuple[Any, T | None]:
    """Call the service behind a money form; put its refusals on the form.

    A key conflict means the form was submitted before with other values: the form comes
    back with a fresh key and `reused` above it, so the next submit is a new operation.
    """
    try:
        return form, action()
    except IdempotencyConflict:
        form = _rebind_with_new_key(form)
        form.add_error(None, reused)
    except DomainError as exc:
        on_error(form, exc)
    return form, None
