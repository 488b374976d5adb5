"""Password guessing and account farming cost the attacker, not the platform (SPEC §23).

Every way in counts in the same buckets, kept in the shared cache (marketplace/cache_config.py)
so that the limits hold across gunicorn workers and hosts:

- A login attempt (the login page, the admin's login page, the API's token endpoint) counts
  against its client address and against the username it names, `LOGIN_THROTTLE_RATE` each
  (10 a minute). Every attempt counts, right or wrong: telling them apart would mean checking
  the password first, which is the cost the limit is there to refuse.
- A sign-up (the page, the API's register endpoint) counts against its client address once it
  has created an account, `SIGNUP_THROTTLE_RATE` (5 an hour): a form sent back for a taken
  name or a weak password creates nothing and hashes nothing, so it doesn't use the hour up.

The buckets are looked at before any password is hashed, so a refused attempt costs a cache
read. Client addresses are DRF's (`NUM_PROXIES` honoured), so the pages and the API agree.
The API applies the throttles as DRF throttle classes; the login pages, whose views are
Django's own, are checked by `LoginThrottleMiddleware` before their view runs.
"""

from __future__ import annotations

import hashlib
import math
import unicodedata
from collections.abc import Callable, Mapping
from typing import Any

from django.conf import settings
from django.contrib import admin
from django.contrib.auth.forms import AuthenticationForm
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import render
from django.urls import reverse
from rest_framework.throttling import SimpleRateThrottle

# The pages whose POST is a login attempt, by URL name (their views are Django's).
LOGIN_PAGES = frozenset({"login", "admin:login"})


class _SharedRateThrottle(SimpleRateThrottle):
    rate_setting = ""

    def get_rate(self) -> str:
        # Read per request, so that a changed setting applies (DRF reads its rates once).
        return getattr(settings, self.rate_setting)

    def _key(self, ident: str) -> str:
        return self.cache_format % {"scope": self.scope, "ident": ident}


class LoginAddressThrottle(_SharedRateThrottle):
    """Login attempts from one client address, whatever the username."""

    scope = "login-address"
    rate_setting = "LOGIN_THROTTLE_RATE"

    def get_cache_key(self, request: Any, view: Any) -> str:
        return self._key(self.get_ident(request))


class LoginUsernameThrottle(_SharedRateThrottle):
    """Login attempts naming one username, from whatever address: guessing one account's
    password from many addresses is as slow as from one."""

    scope = "login-username"
    rate_setting = "LOGIN_THROTTLE_RATE"

    def get_cache_key(self, request: Any, view: Any) -> str | None:
        username = login_username(request)
        if not username:
            return None
        return self._key(hashlib.sha256(username.encode()).hexdigest())


class SignupThrottle(_SharedRateThrottle):
    """Accounts created from one client address. Looking lets a sign-up through without
    counting it; `signup_count` counts it once the account exists."""

    scope = "signup"
    rate_setting = "SIGNUP_THROTTLE_RATE"

    def get_cache_key(self, request: Any, view: Any) -> str:
        return self._key(self.get_ident(request))

    def throttle_success(self) -> bool:
        return True

    def count(self) -> None:
        super().throttle_success()


def login_username(request: Any) -> str:
    """The username a login request names, as the login forms normalise it (NFKC, stripped),
    and case-folded: `Alice` and `alice` share one bucket."""
    data = getattr(request, "data", None)  # the API's parsed body; a page's is its POST
    fields: Any = data if data is not None else request.POST
    value = fields.get("username") if isinstance(fields, Mapping) else None
    if not isinstance(value, str):
        return ""
    return unicodedata.normalize("NFKC", value).strip().casefold()


def _wait(throttles: list[SimpleRateThrottle], request: Any) -> int | None:
    """Seconds until every bucket has room again, or None when all of them had room (each
    then counted the attempt, as DRF counts an API request in each of its throttles)."""
    no_view: Any = None  # the buckets do not depend on the view
    refused = [throttle for throttle in throttles if not throttle.allow_request(request, no_view)]
    if not refused:
        return None
    return max(1, math.ceil(max(throttle.wait() or 0 for throttle in refused)))


def login_wait(request: HttpRequest) -> int | None:
    """Seconds this login attempt must wait, or None when it may go on (it is then counted)."""
    return _wait([LoginAddressThrottle(), LoginUsernameThrottle()], request)


def signup_wait(request: Any) -> int | None:
    """Seconds before this client may create another account, or None when it may now
    (nothing is counted until `signup_count`)."""
    return _wait([SignupThrottle()], request)


def signup_count(request: Any) -> None:
    """Count an account just created against its client address."""
    throttle = SignupThrottle()
    no_view: Any = None  # the bucket does not depend on the view
    throttle.allow_request(request, no_view)  # reads the bucket; only `count` writes it
    throttle.count()


def refusal_message(action: str, wait: int) -> str:
    unit = "second" if wait == 1 else "seconds"
    if wait >= 120:
        wait, unit = math.ceil(wait / 60), "minutes"
    return f"Too many {action} from here. Try again in {wait} {unit}."


def with_retry_after(response: HttpResponse, wait: int) -> HttpResponse:
    response["Retry-After"] = str(wait)
    return response


class LoginThrottleMiddleware:
    """Looks at the buckets of a login page's POST before Django's login view checks the
    password, and answers a refused one with the form, a message and 429 itself. Placed after
    the CSRF check, so that a forged cross-site POST counts against nobody."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        return self.get_response(request)

    def process_view(
        self, request: HttpRequest, view: Any, args: Any, kwargs: Any
    ) -> HttpResponse | None:
        match = request.resolver_match
        if request.method != "POST" or match is None or match.view_name not in LOGIN_PAGES:
            return None
        wait = login_wait(request)
        if wait is None:
            return None
        form = AuthenticationForm(request, initial={"username": request.POST.get("username")})
        context: dict[str, Any] = {
            "form": form,
            "next": request.POST.get("next", ""),
            "refusal": refusal_message("login attempts", wait),
        }
        if match.view_name == "admin:login":
            # What the admin's own login view puts in the context of its template.
            context |= {
                **admin.site.each_context(request),
                "title": "Log in",
                "subtitle": None,
                "app_path": request.get_full_path(),
                "username": request.user.get_username(),
                "next": context["next"] or reverse("admin:index"),
            }
            template = "admin/login.html"
        else:
            template = "accounts/login.html"
        return with_retry_after(render(request, template, context, status=429), wait)
