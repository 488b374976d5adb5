"""Sign-up. Log-in and log-out are Django's own views (see marketplace/urls.py); their
attempts are throttled before the password is checked (marketplace/login_throttle.py)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import login
from django.http import HttpResponseBase
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from marketplace.forms import SignupForm
from marketplace.login_throttle import (
    refusal_message,
    signup_count,
    signup_wait,
    with_retry_after,
)
from marketplace.services import user_create
from marketplace.views.common import HtmxHttpRequest, go_to, render_page


@require_http_methods(["GET", "POST"])
def signup(request: HtmxHttpRequest) -> HttpResponseBase:
    if request.user.is_authenticated:
        return redirect("dashboard")
    if request.method == "POST":
        # Before the form is read: a refused sign-up costs no validation and no hash.
        wait = signup_wait(request)
        if wait is not None:
            form = SignupForm(initial={"username": request.POST.get("username")})
            context = {"form": form, "refusal": refusal_message("new accounts", wait)}
            response = render_page(
                request, "accounts/signup.html", context, fragment="form", status=429
            )
            return with_retry_after(response, wait)
    form = SignupForm(request.POST) if request.method == "POST" else SignupForm()
    if request.method == "POST" and form.is_valid():
        user = user_create(
            username=form.cleaned_data["username"], password=form.cleaned_data["password"]
        )
        signup_count(request)
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(request, f"Welcome, {user.username}! Add credits to run your first task.")
        return go_to(request, reverse("wallet"))
    return render_page(request, "accounts/signup.html", {"form": form}, fragment="form")
