"""Tasks: submitting one, its live page, the list, cancelling, and its signed receipt."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, Protocol

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.models import User
from django.http import Http404, HttpResponse, HttpResponseBase
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseStopPolling

from escrow.channels import voucher_sign_custodial
from escrow.errors import (
    ChannelAgentMismatch,
    ChannelExpired,
    ChannelNotOpen,
    DomainError,
    InsufficientFunds,
    VoucherError,
    VoucherExceedsDeposit,
    VoucherInsufficient,
)
from escrow.models import PaymentChannel, Voucher
from execution.engine.receipts import receipt_verify
from marketplace import selectors
from marketplace.errors import (
    AgentHasNoBinary,
    AgentUnavailable,
    BudgetTooLow,
    InputTooLarge,
    InvalidInput,
    InvalidOutputSchema,
    LimitExceeded,
    TooManyTasks,
)
from marketplace.evaluators import (
    BudgetTooSmall,
    EvaluatorNotAccepted,
    evaluation_shown,
)
from marketplace.forms import TaskForm
from marketplace.models import Task
from marketplace.services import task_cancel, task_submit
from marketplace.submission_throttle import submission_refusal
from marketplace.templatetags.exchange import format_credits
from marketplace.views.common import (
    POLL_ACTIVE,
    POLL_IDLE,
    HtmxHttpRequest,
    go_to,
    login_required,
    paginate,
    render_page,
    submit_money_form,
    user_of,
)
from marketplace.views.disputes import task_dispute_context
from marketplace.views.quotes import INPUT_BYTES_JS, quote_context, quote_live

TASKS_PAGE_SIZE = 25

# Where each service error belongs on the task form.
TASK_ERROR_FIELDS: list[tuple[type[DomainError], str]] = [
    (InsufficientFunds, "budget"),
    (BudgetTooLow, "budget"),
    (AgentUnavailable, "agent"),
    (AgentHasNoBinary, "agent"),
    (InputTooLarge, "input"),
    (InvalidOutputSchema, "output_schema"),
    (EvaluatorNotAccepted, "evaluator"),
    (BudgetTooSmall, "budget"),
]

CHANNEL_ERRORS = (VoucherError, ChannelNotOpen, ChannelExpired, ChannelAgentMismatch)


class SignedReceipt(Protocol):
    """What these views read of the executor's receipt (execution.models.Receipt).

    Described here rather than imported: marketplace does not import the executor app.
    """

    @property
    def payload(self) -> str: ...

    def as_dict(self) -> dict[str, str]: ...


def _receipt(task: Task) -> SignedReceipt | None:
    # The reverse one-to-one from the receipt; selectors.task_of() already joined it in.
    try:
        return task.receipt
    except Task.receipt.RelatedObjectDoesNotExist:
        return None


def _receipt_or_404(task: Task) -> SignedReceipt:
    receipt = _receipt(task)
    if receipt is None:
        raise Http404("The task has no receipt yet.")
    return receipt


def _payment(user: User, channel: PaymentChannel | None, budget: int) -> dict[str, Any]:
    """How task_submit is paid: escrow, or a voucher signed with the user's custodial key."""
    if channel is None:
        return {}
    voucher = voucher_sign_custodial(user_id=user.pk, channel_id=channel.pk, budget=budget)
    return {"payment": Task.Payment.CHANNEL, "channel": channel.pk, "voucher": voucher.as_dict()}


def _task_error(form: TaskForm, exc: DomainError) -> None:
    if isinstance(exc, LimitExceeded) and exc.fields:
        for name in exc.fields:
            form.add_error(name if name in form.fields else None, exc.message)
        return
    if isinstance(exc, CHANNEL_ERRORS):
        channel = form.cleaned_data.get("payment")
        message = exc.message
        if isinstance(exc, (VoucherInsufficient, VoucherExceedsDeposit)) and channel is not None:
            channel.refresh_from_db()
            available = format_credits(selectors.channel_available(channel))
            message = (
                f"This channel has {available} available; lower the budget or pay with escrow."
            )
        form.add_error("payment", message)
        return
    if isinstance(exc, TooManyTasks):
        form.add_error(
            None,
            f"You already have {settings.MAX_TASKS_IN_FLIGHT} tasks pending, queued or running: "
            "the most you can have at once. Submit this one when some of them have finished.",
        )
        return
    if isinstance(exc, InvalidInput):
        form.add_input_error(exc.path, exc.message)
        return
    for error_class, name in TASK_ERROR_FIELDS:
        if isinstance(exc, error_class):
            message = exc.message
            if isinstance(exc, InsufficientFunds):
                message = "Your wallet cannot cover this budget. Add credits or lower it."
            elif isinstance(exc, BudgetTooLow):
                fee = form.cleaned_data["agent"].base_fee
                message = f"The budget is below the agent's base fee of {format_credits(fee)}."
            # An input schema's fields stand where the text area was: "input" is then the
            # whole input's (a fieldset, shown at the top of the form).
            form.add_error(name if name in form.fields else None, message)
            return
    form.add_error(None, exc.message)


@require_GET
@login_required
def task_list(request: HtmxHttpRequest) -> HttpResponse:
    user = user_of(request)
    status = request.GET.get("status", "")
    listing = selectors.tasks_of(user)
    if status in Task.Status.values:
        listing = listing.filter(status=status)
    else:
        status = ""
    page = paginate(request, listing, TASKS_PAGE_SIZE)
    context = {
        "page": page,
        "status": status,
        "statuses": Task.Status.choices,
        "poll": POLL_ACTIVE if selectors.has_active_tasks(page.object_list) else POLL_IDLE,
    }
    return render_page(request, "tasks/list.html", context, fragment="rows")


def _submit(request: HtmxHttpRequest, form: TaskForm) -> TaskForm | HttpResponseBase:
    """Submit the task the form describes: the task's page, or the form with its errors."""
    user = user_of(request)
    refusal = submission_refusal(request) if form.is_valid() else None
    if refusal is not None:
        form.add_error(None, refusal)
    elif form.is_valid():
        data = form.cleaned_data
        form, task = submit_money_form(
            form,
            lambda: task_submit(
                requester=user,
                **_payment(user, data["payment"], data["budget"]),
                agent=data["agent"],
                input=data["input"],
                budget=data["budget"],
                fuel_limit=data["fuel_limit"],
                memory_limit_mb=data["memory_limit_mb"],
                timeout_ms=data["timeout_ms"],
                min_reputation=data["min_reputation"],
                output_schema=data["output_schema"],
                idempotency_key=data["idempotency_key"],
                evaluator=data.get("evaluator"),
            ),
            reused="This form was already submitted with other values. Check them and "
            "submit again to create a new task.",
            on_error=_task_error,
        )
        if task is not None:
            messages.success(request, f"Task submitted to {task.agent.name}.")
            return go_to(request, reverse("task-detail", args=[task.pk]))
    return form


@require_http_methods(["GET", "POST"])
@login_required
def task_new(request: HtmxHttpRequest) -> HttpResponseBase:
    user = user_of(request)
    channels = list(selectors.open_channels_of(user))
    input_notice = None
    if request.method == "POST":
        form = TaskForm(request.POST, channels=channels)
        if form.input_changed() or "show_input" in request.POST:
            # Without JavaScript, choosing another agent changes no fields until the form
            # comes back: it comes back with that agent's input fields, and nothing is run.
            if form.input_changed():
                input_notice = _input_notice(form)
            form = form.with_agent_input()
        else:
            answer = _submit(request, form)
            if not isinstance(answer, TaskForm):
                return answer
            form = answer
    else:
        initial = {"agent": request.GET.get("agent"), "payment": request.GET.get("channel")}
        form = TaskForm(initial=initial, channels=channels)
        if request.htmx and request.htmx.target == "task-input":
            return _input_fields(request, form)
    quote_live(form)
    context = {
        "form": form,
        "input_notice": input_notice,
        "summary": selectors.wallet_summary(user),
        "has_agents": form.fields["agent"].queryset.exists(),  # type: ignore[attr-defined]
        "fee_percent": f"{Decimal(settings.PLATFORM_FEE_BPS) / 100:g}",
        **quote_context(form),
    }
    return render_page(request, "tasks/new.html", context, fragment="form")


def _input_notice(form: TaskForm) -> str:
    agent = form.input_agent
    assert agent is not None
    if form.input_form is None:
        return f"{agent.name} takes its input as text: type it below and submit again."
    return f"These are the input fields {agent.name} asks for: fill them in and submit again."


def _input_fields(request: HtmxHttpRequest, form: TaskForm) -> HttpResponse:
    """The input fields for the agent just chosen (htmx), or 204 when they are the same as
    those on the page, so that nothing typed in them is lost."""
    if request.GET.get("input_contract", "") == form.input_contract:
        response = HttpResponse(status=204)
    else:
        quote_live(form)
        # The quote asked for when the agent changed measured the old fields: ask again.
        context = {"form": form, "requote": True, "quote_vals": INPUT_BYTES_JS}
        response = render_page(request, "tasks/new.html", context, fragment="input")
    patch_vary_headers(response, ("HX-Request", "HX-Target"))
    return response


def _task_context(task: Task) -> dict[str, Any]:
    receipt = _receipt(task)
    paid_to_agent = None if task.cost is None or task.fee is None else task.cost - task.fee
    voucher = Voucher.objects.filter(task=task).select_related("channel__agent").first()
    return {
        "task": task,
        "channel": voucher.channel if voucher else None,
        "voucher": voucher,
        "receipt": receipt,
        "receipt_payload": json.loads(receipt.payload) if receipt else None,
        "paid_to_agent": paid_to_agent,
        "poll": POLL_ACTIVE,
        "evaluation": evaluation_shown(task) or {"status": None},
        # Only a succeeded task can be disputed (and show a dispute).
        **(task_dispute_context(task) if task.status == Task.Status.SUCCEEDED else {}),
    }


@require_GET
@login_required
def task_detail(request: HtmxHttpRequest, task_id: Any) -> HttpResponse:
    task = selectors.task_of(user_of(request), task_id)
    context = _task_context(task)
    # Polling stops once the task is final (and its verdict given, if an evaluator checks
    # it): the last answer carries the result.
    settled = task.is_final and context["evaluation"]["status"] != "running"
    response_class = HttpResponseStopPolling if settled else HttpResponse
    return render_page(
        request, "tasks/detail.html", context, fragment="panel", response_class=response_class
    )


@require_POST
@login_required
def task_cancel_view(request: HtmxHttpRequest, task_id: Any) -> HttpResponseBase:
    user = user_of(request)
    task = selectors.task_of(user, task_id)
    try:
        task_cancel(task=task)
    except DomainError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Task cancelled; {format_credits(task.budget)} refunded.")
    if request.htmx:
        # Read again: task_cancel updates the row, not this instance (and a worker may have won).
        context = _task_context(selectors.task_of(user, task_id))
        return render_page(request, "tasks/detail.html", context, fragment="panel")
    return redirect("task-detail", task_id=task.pk)


@require_GET
@login_required
def task_receipt(request: HtmxHttpRequest, task_id: Any) -> HttpResponse:
    task = selectors.task_of(user_of(request), task_id)
    receipt = _receipt_or_404(task)
    response = HttpResponse(
        json.dumps(receipt.as_dict(), indent=2) + "\n", content_type="application/json"
    )
    response["Content-Disposition"] = f'attachment; filename="receipt-{task.pk}.json"'
    return response


@require_POST
@login_required
def task_receipt_verify(request: HtmxHttpRequest, task_id: Any) -> HttpResponseBase:
    task = selectors.task_of(user_of(request), task_id)
    signed = _receipt_or_404(task).as_dict()
    valid = receipt_verify(signed)
    # The key the receipt names: the current one, or an older one of the ring.
    key = {"key_id": signed["key_id"]}
    if request.htmx:
        context = {"task": task, "verification": {"valid": valid, **key}}
        return render_page(request, "tasks/detail.html", context, fragment="verification")
    if valid:
        messages.success(
            request, f"The receipt's signature is valid (platform key {key['key_id']})."
        )
    else:
        messages.error(request, "The receipt's signature does NOT verify.")
    return redirect(reverse("task-detail", args=[task.pk]) + "#receipt")
