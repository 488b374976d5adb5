"""Sign-up. Log-in and log-out are Django's own views (see marketplace/urls.py)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import login
from django.http import HttpResponseBase
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from marketplace.forms import SignupForm
from marketplace.services import user_create
from marketplace.views.common import HtmxHttpRequest, go_to, render_page


@require_http_methods(["GET", "POST"])
def signup(request: HtmxHttpRequest) -> HttpResponseBase:
    if request.user.is_authenticated:
        return redirect("dashboard")
    form = SignupForm(request.POST) if request.method == "POST" else SignupForm()
    if request.method == "POST" and form.is_valid():
        user = user_create(
            username=form.cleaned_data["username"], password=form.cleaned_data["password"]
        )
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(request, f"Welcome, {user.username}! Add credits to run your first task.")
        return go_to(request, reverse("wallet"))
    return render_page(request, "accounts/signup.html", {"form": form}, fragment="form")
