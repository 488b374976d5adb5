"""Disputes in the browser: a requester opens one from the task's page; the agent's owner
accepts or contests it from the dashboard; both watch its state without a reload.

The services in `marketplace.disputes` decide everything (who, when, how much); their
refusals are shown with their stable code and message. Anybody but the task's requester
(or the dispute's owner) is told it does not exist.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import Http404, HttpResponse, HttpResponseBase
from django.shortcuts import redirect
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseStopPolling

from escrow.errors import DomainError
from escrow.models import Dispute
from marketplace import selectors
from marketplace.dispute_forms import ContestForm, DisputeForm
from marketplace.disputes import DisputeNotFound, dispute_accept, dispute_contest, dispute_file
from marketplace.models import Task
from marketplace.selectors.disputes import (
    disputes_opened_by,
    disputes_to_answer,
    has_pending,
    task_dispute,
)
from marketplace.templatetags.exchange import format_credits
from marketplace.views.common import HtmxHttpRequest, login_required, render_page, user_of
from marketplace.views.withdrawals import CHANGED_EVENT, CHANGED_HEADER

# A dispute's state is worth watching closely: money moves when it is answered.
POLL_DISPUTE = "every 2s"


def task_dispute_context(
    task: Task, form: DisputeForm | None = None, error: DomainError | None = None
) -> dict[str, Any]:
    """What the dispute section of a task's page shows (also rendered inside the page)."""
    return {
        "task": task,
        "state": task_dispute(task),
        "dispute_form": form or DisputeForm(),
        "dispute_error": error,
        "dispute_poll": POLL_DISPUTE,
    }


@require_http_methods(["GET", "POST"])
@login_required
def task_dispute_view(request: HtmxHttpRequest, task_id: Any) -> HttpResponseBase:
    user = user_of(request)
    task = selectors.task_of(user, task_id)
    form: DisputeForm | None = None
    error: DomainError | None = None
    if request.method == "POST":
        form = DisputeForm(request.POST)
        if form.is_valid():
            try:
                dispute_file(task_id=task.pk, user=user, reason=form.cleaned_data["reason"])
            except DomainError as exc:
                error = exc
                if not request.htmx:
                    messages.error(request, f"{exc.message} ({exc.code})")
            else:
                form = None
                messages.success(request, "Dispute opened; the agent's owner has been told.")
        if not request.htmx:
            return redirect("task-detail", task_id=task.pk)
    elif not request.htmx:
        return redirect("task-detail", task_id=task.pk)
    context = task_dispute_context(task, form, error)
    # The last answer about a settled dispute ends the section's polling.
    final = not context["state"].pending
    return render_page(
        request,
        "disputes/task.html",
        context,
        fragment="section",
        response_class=HttpResponseStopPolling if final else HttpResponse,
    )


def received_context(
    user: Any, *, error: DomainError | None = None, contest: ContestForm | None = None
) -> dict[str, Any]:
    """The owner's pending disputes, each with its contest form (`contest` is the one just
    submitted, with its errors), and the refusal of the last answer, if any."""
    disputes = list(disputes_to_answer(user))
    for dispute in disputes:
        dispute.contest_form = (  # type: ignore[attr-defined]
            contest
            if contest is not None and contest.dispute_id == dispute.pk
            else ContestForm(dispute_id=dispute.pk)
        )
    return {"received": disputes, "received_error": error}


def opened_context(user: Any) -> dict[str, Any]:
    opened = list(disputes_opened_by(user))
    return {"opened": opened, "opened_poll": POLL_DISPUTE if has_pending(opened) else ""}


@require_GET
@login_required
def disputes_received(request: HtmxHttpRequest) -> HttpResponseBase:
    if not request.htmx:
        return redirect("dashboard")
    context = received_context(user_of(request))
    return render_page(request, "disputes/dashboard.html", context, fragment="received")


@require_GET
@login_required
def disputes_opened(request: HtmxHttpRequest) -> HttpResponseBase:
    if not request.htmx:
        return redirect("dashboard")
    context = opened_context(user_of(request))
    final = not context["opened_poll"]
    return render_page(
        request,
        "disputes/dashboard.html",
        context,
        fragment="opened",
        response_class=HttpResponseStopPolling if final else HttpResponse,
    )


def _answered(request: HtmxHttpRequest, answer: Any, done: str) -> HttpResponseBase:
    """Call the owner's answer; show the list again with its result or its refusal."""
    user = user_of(request)
    error: DomainError | None = None
    dispute: Dispute | None = None
    try:
        dispute = answer()
    except DisputeNotFound:
        raise Http404("No such dispute.") from None
    except DomainError as exc:
        error = exc
        if not request.htmx:
            messages.error(request, f"{exc.message} ({exc.code})")
    else:
        assert dispute is not None
        messages.success(request, done.format(refunded=format_credits(dispute.refunded)))
    if not request.htmx:
        return redirect("dashboard")
    context = received_context(user, error=error)
    response = render_page(request, "disputes/dashboard.html", context, fragment="received")
    if error is None:
        # The owner's pending earnings changed: the dashboard's live part reloads itself.
        response[CHANGED_HEADER] = CHANGED_EVENT
    return response


@require_POST
@login_required
def dispute_accept_view(request: HtmxHttpRequest, dispute_id: int) -> HttpResponseBase:
    return _answered(
        request,
        lambda: dispute_accept(dispute_id=dispute_id, user=user_of(request)),
        "Dispute accepted: {refunded} went back to the requester.",
    )


@require_POST
@login_required
def dispute_contest_view(request: HtmxHttpRequest, dispute_id: int) -> HttpResponseBase:
    user = user_of(request)
    form = ContestForm(request.POST, dispute_id=dispute_id)
    if not form.is_valid():
        if not Dispute.objects.filter(pk=dispute_id, owner=user).exists():
            raise Http404("No such dispute.")
        if not request.htmx:
            messages.error(request, "Say why the result was right to contest the dispute.")
            return redirect("dashboard")
        context = received_context(user, contest=form)
        return render_page(request, "disputes/dashboard.html", context, fragment="received")
    statement = form.cleaned_data["statement"]
    return _answered(
        request,
        lambda: dispute_contest(dispute_id=dispute_id, user=user, statement=statement),
        "Dispute contested: an operator will decide.",
    )
