"""The browser UI: function views over the services and selectors.

One view serves a page and, for htmx requests, a fragment of it (`"page.html#fragment"`,
Django's template partials). Every form works without JavaScript: a POST that succeeds
redirects (POST/redirect/GET), one that fails renders the form with its errors next to
the fields. Forms that move money carry an idempotency key made when they were rendered,
so submitting the same form twice has one effect.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from decimal import Decimal
from functools import wraps
from typing import Any, TypeVar, cast

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required as django_login_required
from django.contrib.auth.models import User
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import ValidationError
from django.core.paginator import Page, Paginator
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    StreamingHttpResponse,
)
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect, HttpResponseStopPolling
from django_htmx.middleware import HtmxDetails

from escrow.channels import channel_close, channel_open, voucher_sign_custodial
from escrow.errors import (
    ChannelAgentMismatch,
    ChannelExpired,
    ChannelNotOpen,
    DomainError,
    IdempotencyConflict,
    InsufficientFunds,
    VoucherError,
    VoucherExceedsDeposit,
    VoucherInsufficient,
)
from escrow.models import PaymentChannel, Voucher
from escrow.services import deposit_create
from execution.engine.receipts import public_key_info, receipt_verify
from execution.engine.validation import WasmInvalid
from execution.models import Receipt
from marketplace import selectors
from marketplace.binaries import binary_upload
from marketplace.errors import (
    AgentHasNoBinary,
    AgentUnavailable,
    BudgetTooLow,
    InputTooLarge,
    InvalidOutputSchema,
    LimitExceeded,
)
from marketplace.forms import (
    AgentForm,
    AgentSearchForm,
    BinaryUploadForm,
    ChannelOpenForm,
    DepositForm,
    SignupForm,
    TaskForm,
    new_idempotency_key,
)
from marketplace.models import Agent, Task
from marketplace.services import agent_create, task_cancel, task_submit, user_create
from marketplace.templatetags.exchange import format_credits

LEDGER_PAGE_SIZE = 20
TASKS_PAGE_SIZE = 25
AGENTS_PAGE_SIZE = 24
DASHBOARD_TASKS = 8
# Live regions poll quickly while something is moving, slowly when nothing is.
POLL_ACTIVE = "every 1s"
POLL_IDLE = "every 10s"


# --- helpers ---------------------------------------------------------------------------


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


def _user(request: HtmxHttpRequest) -> User:
    # Only called behind @login_required.
    return cast(User, request.user)


def _render(
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


def _go(request: HtmxHttpRequest, url: str) -> HttpResponseBase:
    """Redirect after a successful POST; htmx is told to load the new page itself."""
    if request.htmx:
        return HttpResponseClientRedirect(url)
    return redirect(url)


def _page(request: HtmxHttpRequest, items: Any, size: int) -> Page:
    return Paginator(items, size).get_page(request.GET.get("page"))


def _rebind_with_new_key(form: Any) -> Any:
    """The same values in a form with a fresh idempotency key (after a key conflict)."""
    data = form.data.copy()
    data["idempotency_key"] = new_idempotency_key()
    rebound = type(form)(data, form.files) if form.files else type(form)(data)
    rebound.is_valid()
    return rebound


T = TypeVar("T")


def _submit(
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


def _add_validation_errors(form: Any, error: ValidationError) -> None:
    if hasattr(error, "error_dict"):
        for name, errors in error.message_dict.items():
            form.add_error(name if name in form.fields else None, errors)
    else:
        form.add_error(None, error)


# --- accounts --------------------------------------------------------------------------


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
        return _go(request, reverse("wallet"))
    return _render(request, "accounts/signup.html", {"form": form}, fragment="form")


# --- dashboard -------------------------------------------------------------------------


def _dashboard_context(user: User) -> dict[str, Any]:
    recent = list(selectors.tasks_of(user)[:DASHBOARD_TASKS])
    active = selectors.has_active_tasks(recent)
    return {
        "summary": selectors.wallet_summary(user),
        "recent_tasks": recent,
        "poll": POLL_ACTIVE if active else POLL_IDLE,
        "task_count": selectors.tasks_of(user).count(),
    }


@require_GET
@login_required
def dashboard(request: HtmxHttpRequest) -> HttpResponse:
    user = _user(request)
    context = _dashboard_context(user)
    if not request.htmx:
        agents = list(selectors.agents_of(user))
        context.update(
            {
                "my_agents": agents,
                "earnings": sum(agent.earned for agent in agents),  # type: ignore[attr-defined]
            }
        )
    return _render(request, "dashboard.html", context, fragment="live")


# --- wallet ----------------------------------------------------------------------------


def _wallet_context(request: HtmxHttpRequest, form: DepositForm) -> dict[str, Any]:
    user = _user(request)
    page = _page(request, selectors.ledger_of(user), LEDGER_PAGE_SIZE)
    return {
        "summary": selectors.wallet_summary(user),
        "form": form,
        "page": page,
        "lines": selectors.ledger_lines(user, page.object_list),
        "funding_enabled": settings.DEV_FUNDING_ENABLED,
    }


@require_http_methods(["GET", "POST"])
@login_required
def wallet(request: HtmxHttpRequest) -> HttpResponseBase:
    user = _user(request)
    if request.method == "POST":
        form = DepositForm(request.POST)
        if form.is_valid():
            amount = form.cleaned_data["amount"]
            form, transfer = _submit(
                form,
                lambda: deposit_create(
                    user_id=user.pk,
                    amount=amount,
                    idempotency_key=form.cleaned_data["idempotency_key"],
                ),
                reused="This form was already used for another amount. Check the amount and "
                "submit again.",
                on_error=lambda form, exc: form.add_error("amount", exc.message),
            )
            if transfer is not None:
                balance = selectors.wallet_summary(user).balance
                messages.success(
                    request,
                    f"Added {format_credits(amount)}. Your balance is {format_credits(balance)}.",
                )
                if request.htmx:
                    # No history entry to protect: show the new balance and a fresh form.
                    context = _wallet_context(request, DepositForm())
                    return _render(request, "wallet.html", context, fragment="panel")
                return redirect("wallet")
        return _render(request, "wallet.html", _wallet_context(request, form), fragment="panel")
    return _render(
        request, "wallet.html", _wallet_context(request, DepositForm()), fragment="panel"
    )


def _agent_slug(transfer: Any) -> str:
    if transfer.task_id:
        return transfer.task.agent.slug
    if transfer.channel_id:
        return transfer.channel.agent.slug
    return ""


class _Echo:
    def write(self, value: str) -> str:
        return value


@require_GET
@login_required
def wallet_export(request: HtmxHttpRequest) -> StreamingHttpResponse:
    """The whole ledger as CSV, oldest first, amounts in µCR and in credits."""
    user = _user(request)
    writer = csv.writer(_Echo())

    def rows() -> Iterator[str]:
        yield writer.writerow(
            [
                "id",
                "created_at",
                "kind",
                "direction",
                "amount_ucr",
                "amount_cr",
                "balance_after_ucr",
                "task",
                "channel",
                "agent",
                "memo",
            ]
        )
        for line in selectors.ledger_export(user):
            transfer = line.transfer
            yield writer.writerow(
                [
                    transfer.pk,
                    transfer.created_at.isoformat(),
                    transfer.kind,
                    "in" if line.incoming else "out",
                    line.amount,
                    format_credits(line.amount).removesuffix(" CR").replace("−", "-"),
                    line.balance_after,
                    transfer.task_id or "",
                    transfer.channel_id or "",
                    _agent_slug(transfer),
                    transfer.memo,
                ]
            )

    stamp = timezone.now().strftime("%Y%m%d")
    response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="ledger-{user.username}-{stamp}.csv"'
    return response


# --- agents ----------------------------------------------------------------------------


@require_GET
@login_required
def agent_list(request: HtmxHttpRequest) -> HttpResponse:
    user = _user(request)
    search = AgentSearchForm(request.GET)
    search.is_valid()
    data = search.cleaned_data if search.is_valid() else {}
    listing = selectors.agent_catalogue(
        query=data.get("q") or "",
        order_by=search.order_by(),
        owner=user if data.get("mine") else None,
    )
    page = _page(request, listing, AGENTS_PAGE_SIZE)
    context = {
        "search": search,
        "page": page,
        "searching": bool(data.get("q") or data.get("mine")),
        "total": Agent.objects.count(),
    }
    return _render(request, "agents/list.html", context, fragment="results")


@require_GET
@login_required
def agent_detail(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    user = _user(request)
    agent = selectors.agent_by_slug(slug)
    is_owner = agent.owner_id == user.pk
    context: dict[str, Any] = {
        "agent": agent,
        "is_owner": is_owner,
        "stats": selectors.agent_stats(agent),
        "chart": selectors.reputation_chart(agent),
        "recent_tasks": selectors.agent_recent_tasks(agent),
        "can_run": agent.status == Agent.Status.ACTIVE and agent.current_binary_id is not None,
    }
    if is_owner:
        context["earnings"] = selectors.agent_earnings(agent)
        context["binaries"] = list(agent.binaries.order_by("-version")[:10])
    return render(request, "agents/detail.html", context)


@require_http_methods(["GET", "POST"])
@login_required
def agent_new(request: HtmxHttpRequest) -> HttpResponseBase:
    form = AgentForm(request.POST) if request.method == "POST" else AgentForm()
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            agent = agent_create(
                owner=_user(request),
                slug=data["slug"],
                name=data["name"],
                description=data["description"],
                tags=data["tags"],
                base_fee=data["base_fee"],
                fuel_price=data["fuel_price"],
            )
        except ValidationError as exc:
            _add_validation_errors(form, exc)
        else:
            messages.success(
                request,
                f"{agent.name} is listed. Upload its WebAssembly binary so it can take tasks.",
            )
            return _go(request, reverse("agent-binary-new", args=[agent.slug]))
    return _render(request, "agents/new.html", {"form": form}, fragment="form")


@require_http_methods(["GET", "POST"])
@login_required
def agent_binary_new(request: HtmxHttpRequest, slug: str) -> HttpResponseBase:
    agent = selectors.agent_owned_by(_user(request), slug)
    if request.method == "POST":
        form = BinaryUploadForm(request.POST, request.FILES)
    else:
        form = BinaryUploadForm()
    if request.method == "POST" and form.is_valid():
        upload = form.cleaned_data["wasm"]
        limit = settings.WASM_MAX_UPLOAD_BYTES
        previous = agent.current_binary_id
        if upload.size > limit:
            form.add_error("wasm", f"The file is {upload.size:,} bytes; the limit is {limit:,}.")
        else:
            try:
                binary = binary_upload(agent=agent, data=upload.read())
            except WasmInvalid as exc:
                form.add_error("wasm", exc.message)
            else:
                if binary.pk == previous:
                    messages.info(request, f"That is already version {binary.version}.")
                else:
                    messages.success(
                        request,
                        f"Version {binary.version} is live ({binary.size:,} bytes, "
                        f"sha256 {binary.sha256[:12]}…).",
                    )
                return _go(request, reverse("agent-detail", args=[agent.slug]))
    context = {"agent": agent, "form": form}
    return _render(request, "agents/binary_new.html", context, fragment="form")


# --- tasks -----------------------------------------------------------------------------

# Where each service error belongs on the task form.
TASK_ERROR_FIELDS: list[tuple[type[DomainError], str]] = [
    (InsufficientFunds, "budget"),
    (BudgetTooLow, "budget"),
    (AgentUnavailable, "agent"),
    (AgentHasNoBinary, "agent"),
    (InputTooLarge, "input"),
    (InvalidOutputSchema, "output_schema"),
]


def _payment(user: User, channel: PaymentChannel | None, budget: int) -> dict[str, Any]:
    """How task_submit is paid: escrow, or a voucher signed with the user's custodial key."""
    if channel is None:
        return {}
    voucher = voucher_sign_custodial(user_id=user.pk, channel_id=channel.pk, budget=budget)
    return {"payment": Task.Payment.CHANNEL, "channel": channel.pk, "voucher": voucher.as_dict()}


CHANNEL_ERRORS = (VoucherError, ChannelNotOpen, ChannelExpired, ChannelAgentMismatch)


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
    for error_class, name in TASK_ERROR_FIELDS:
        if isinstance(exc, error_class):
            message = exc.message
            if isinstance(exc, InsufficientFunds):
                message = "Your wallet cannot cover this budget. Add credits or lower it."
            elif isinstance(exc, BudgetTooLow):
                fee = form.cleaned_data["agent"].base_fee
                message = f"The budget is below the agent's base fee of {format_credits(fee)}."
            form.add_error(name, message)
            return
    form.add_error(None, exc.message)


@require_GET
@login_required
def task_list(request: HtmxHttpRequest) -> HttpResponse:
    user = _user(request)
    status = request.GET.get("status", "")
    listing = selectors.tasks_of(user)
    if status in Task.Status.values:
        listing = listing.filter(status=status)
    else:
        status = ""
    page = _page(request, listing, TASKS_PAGE_SIZE)
    context = {
        "page": page,
        "status": status,
        "statuses": Task.Status.choices,
        "poll": POLL_ACTIVE if selectors.has_active_tasks(page.object_list) else POLL_IDLE,
    }
    return _render(request, "tasks/list.html", context, fragment="rows")


@require_http_methods(["GET", "POST"])
@login_required
def task_new(request: HtmxHttpRequest) -> HttpResponseBase:
    user = _user(request)
    channels = list(selectors.open_channels_of(user))
    if request.method == "POST":
        form = TaskForm(request.POST, channels=channels)
        if form.is_valid():
            data = form.cleaned_data
            form, task = _submit(
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
                ),
                reused="This form was already submitted with other values. Check them and "
                "submit again to create a new task.",
                on_error=_task_error,
            )
            if task is not None:
                messages.success(request, f"Task submitted to {task.agent.name}.")
                return _go(request, reverse("task-detail", args=[task.pk]))
    else:
        initial = {"agent": request.GET.get("agent"), "payment": request.GET.get("channel")}
        form = TaskForm(initial=initial, channels=channels)
    context = {
        "form": form,
        "summary": selectors.wallet_summary(user),
        "has_agents": form.fields["agent"].queryset.exists(),  # type: ignore[attr-defined]
        "fee_percent": f"{Decimal(settings.PLATFORM_FEE_BPS) / 100:g}",
    }
    return _render(request, "tasks/new.html", context, fragment="form")


def _task_context(task: Task) -> dict[str, Any]:
    receipt = Receipt.objects.filter(task=task).first()
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
    }


@require_GET
@login_required
def task_detail(request: HtmxHttpRequest, task_id: Any) -> HttpResponse:
    task = selectors.task_of(_user(request), task_id)
    context = _task_context(task)
    # Polling stops once the task is final: the last answer carries the result.
    response_class = HttpResponseStopPolling if task.is_final else HttpResponse
    return _render(
        request, "tasks/detail.html", context, fragment="panel", response_class=response_class
    )


@require_POST
@login_required
def task_cancel_view(request: HtmxHttpRequest, task_id: Any) -> HttpResponseBase:
    user = _user(request)
    task = selectors.task_of(user, task_id)
    try:
        task_cancel(task=task)
    except DomainError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Task cancelled; {format_credits(task.budget)} refunded.")
    if request.htmx:
        context = _task_context(selectors.task_of(user, task_id))
        return _render(request, "tasks/detail.html", context, fragment="panel")
    return redirect("task-detail", task_id=task.pk)


@require_GET
@login_required
def task_receipt(request: HtmxHttpRequest, task_id: Any) -> HttpResponse:
    task = selectors.task_of(_user(request), task_id)
    receipt = Receipt.objects.filter(task=task).first()
    if receipt is None:
        raise Http404("The task has no receipt yet.")
    response = HttpResponse(
        json.dumps(receipt.as_dict(), indent=2) + "\n", content_type="application/json"
    )
    response["Content-Disposition"] = f'attachment; filename="receipt-{task.pk}.json"'
    return response


@require_POST
@login_required
def task_receipt_verify(request: HtmxHttpRequest, task_id: Any) -> HttpResponseBase:
    task = selectors.task_of(_user(request), task_id)
    receipt = Receipt.objects.filter(task=task).first()
    if receipt is None:
        raise Http404("The task has no receipt yet.")
    valid = receipt_verify(receipt.as_dict())
    key = public_key_info()
    if request.htmx:
        context = {"task": task, "verification": {"valid": valid, **key}}
        return _render(request, "tasks/detail.html", context, fragment="verification")
    if valid:
        messages.success(
            request, f"The receipt's signature is valid (platform key {key['key_id']})."
        )
    else:
        messages.error(request, "The receipt's signature does NOT verify.")
    return redirect(reverse("task-detail", args=[task.pk]) + "#receipt")


# --- payment channels ------------------------------------------------------------------------


def _channels_context(request: HtmxHttpRequest, form: ChannelOpenForm) -> dict[str, Any]:
    user = _user(request)
    return {
        "form": form,
        "summary": selectors.wallet_summary(user),
        "channels": list(selectors.channels_paid_by(user)),
        "incoming": list(selectors.channels_to_agents_of(user)),
        "has_agents": form.fields["agent"].queryset.exists(),  # type: ignore[attr-defined]
    }


@require_http_methods(["GET", "POST"])
@login_required
def channel_list(request: HtmxHttpRequest) -> HttpResponseBase:
    user = _user(request)
    if request.method == "POST":
        form = ChannelOpenForm(request.POST)
        if form.is_valid():
            agent, deposit = form.cleaned_data["agent"], form.cleaned_data["deposit"]
            form, channel = _submit(
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
                return _go(request, reverse("channel-detail", args=[channel.pk]))
    else:
        form = ChannelOpenForm(initial={"agent": request.GET.get("agent")})
    return _render(request, "channels/list.html", _channels_context(request, form), fragment="form")


def _channel_error(form: Any, exc: DomainError) -> None:
    if isinstance(exc, InsufficientFunds):
        form.add_error("deposit", "Your wallet cannot cover this deposit.")
    else:
        form.add_error("deposit", exc.message)


@require_GET
@login_required
def channel_detail(request: HtmxHttpRequest, channel_id: Any) -> HttpResponse:
    user = _user(request)
    channel = selectors.channel_for(user, channel_id)
    context = {
        "channel": channel,
        "is_requester": channel.requester_id == user.pk,
        "available": selectors.channel_available(channel),
        "returned": channel.deposit - channel.redeemed,
        "vouchers": selectors.channel_vouchers(channel),
    }
    return render(request, "channels/detail.html", context)


@require_POST
@login_required
def channel_close_view(request: HtmxHttpRequest, channel_id: Any) -> HttpResponseBase:
    user = _user(request)
    channel = selectors.channel_for(user, channel_id)
    try:
        closed = channel_close(channel_id=channel.pk, by_user_id=user.pk)
    except DomainError as exc:
        messages.error(request, exc.message)
    else:
        if closed.status == PaymentChannel.Status.SETTLED:
            refund = closed.deposit - closed.redeemed
            messages.success(
                request,
                f"Channel closed and settled: {format_credits(closed.redeemed)} paid, "
                f"{format_credits(refund)} back to the requester's wallet.",
            )
        else:
            messages.success(
                request,
                "Channel closing: it takes no new tasks and settles when the tasks in "
                "flight finish.",
            )
    return _go(request, reverse("channel-detail", args=[channel.pk]))
