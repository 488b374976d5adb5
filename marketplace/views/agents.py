"""The agent catalogue, an agent's page, listing a new agent and uploading its binary."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import Http404, HttpResponse, HttpResponseBase
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods

from escrow.errors import DomainError
from execution.engine.validation import WasmInvalid
from marketplace import selectors
from marketplace.agent_forms import AgentLimitsForm
from marketplace.binaries import binary_upload, binary_upload_refusal
from marketplace.evaluator_forms import AgentSettingsForm
from marketplace.evaluators import EvaluatorNotAccepted, accepted_evaluators_set, accepted_slugs
from marketplace.forms import AgentForm, AgentSearchForm, BinaryUploadForm
from marketplace.models import Agent
from marketplace.services import agent_create, agent_update
from marketplace.views.common import (
    HtmxHttpRequest,
    go_to,
    login_required,
    paginate,
    render_page,
    user_of,
)

AGENTS_PAGE_SIZE = 24
AGENT_EVENTS_SHOWN = 10


def _add_validation_errors(form: Any, error: ValidationError) -> None:
    # A model's full_clean() names its fields; the ones the form does not show go on top.
    if hasattr(error, "error_dict"):
        for name, errors in error.message_dict.items():
            form.add_error(name if name in form.fields else None, errors)
    else:
        form.add_error(None, error)


@require_GET
@login_required
def agent_list(request: HtmxHttpRequest) -> HttpResponse:
    user = user_of(request)
    search = AgentSearchForm(request.GET)
    search.is_valid()
    data = search.cleaned_data if search.is_valid() else {}
    listing = selectors.agent_catalogue(
        query=data.get("q") or "",
        order_by=search.order_by(),
        owner=user if data.get("mine") else None,
    )
    page = paginate(request, listing, AGENTS_PAGE_SIZE)
    context = {
        "search": search,
        "page": page,
        "searching": bool(data.get("q") or data.get("mine")),
        "total": Agent.objects.count(),
    }
    return render_page(request, "agents/list.html", context, fragment="results")


@require_http_methods(["GET", "POST"])
@login_required
def agent_detail(request: HtmxHttpRequest, slug: str) -> HttpResponseBase:
    """The agent's page. Its owner also posts the agent's recommended limits here."""
    user = user_of(request)
    agent = selectors.agent_by_slug(slug)
    is_owner = agent.owner_id == user.pk
    limits_form = None
    evaluators = accepted_slugs(agent)
    if is_owner:
        current: dict[str, Any] = {name: getattr(agent, name) for name in AgentLimitsForm.LIMITS}
        current["accepted_evaluators"] = " ".join(evaluators)
        limits_form = AgentSettingsForm(request.POST or None, initial=current)
    if request.method == "POST":
        if limits_form is None:  # only the owner changes an agent; to others it is a 404
            raise Http404("No such agent.")
        if limits_form.is_valid():
            try:
                with transaction.atomic():
                    agent_update(agent=agent, **limits_form.limits())
                    accepted_evaluators_set(
                        agent=agent, slugs=limits_form.cleaned_data["accepted_evaluators"]
                    )
            except ValidationError as exc:
                _add_validation_errors(limits_form, exc)
            except EvaluatorNotAccepted as exc:
                limits_form.add_error("accepted_evaluators", exc.message)
            else:
                messages.success(
                    request,
                    "Recommended limits saved, and the evaluators it accepts; new tasks use them.",
                )
                return go_to(request, reverse("agent-detail", args=[agent.slug]))
    context: dict[str, Any] = {
        "agent": agent,
        "is_owner": is_owner,
        "stats": selectors.agent_stats(agent),
        "chart": selectors.reputation_chart(agent),
        "events": selectors.agent_standing(agent, events=AGENT_EVENTS_SHOWN).events,
        "recent_tasks": selectors.agent_recent_tasks(agent),
        "can_run": agent.status == Agent.Status.ACTIVE and agent.current_binary_id is not None,
        "limits_form": limits_form,
        "accepted_evaluators": evaluators,
        "daily_cap": settings.REPUTATION_DAILY_CAP_PER_REQUESTER.normalize(),
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
            with transaction.atomic():
                agent = agent_create(
                    owner=user_of(request),
                    slug=data["slug"],
                    name=data["name"],
                    description=data["description"],
                    tags=data["tags"],
                    base_fee=data["base_fee"],
                    fuel_price=data["fuel_price"],
                    **form.limits(),
                )
                accepted_evaluators_set(agent=agent, slugs=data["accepted_evaluators"])
        except ValidationError as exc:
            _add_validation_errors(form, exc)
        except EvaluatorNotAccepted as exc:
            form.add_error("accepted_evaluators", exc.message)
        else:
            messages.success(
                request,
                f"{agent.name} is listed. Upload its WebAssembly binary so it can take tasks.",
            )
            return go_to(request, reverse("agent-binary-new", args=[agent.slug]))
    context = {"form": form, "daily_cap": settings.REPUTATION_DAILY_CAP_PER_REQUESTER.normalize()}
    return render_page(request, "agents/new.html", context, fragment="form")


@require_http_methods(["GET", "POST"])
@login_required
def agent_binary_new(request: HtmxHttpRequest, slug: str) -> HttpResponseBase:
    agent = selectors.agent_owned_by(user_of(request), slug)
    if request.method == "POST":
        form = BinaryUploadForm(request.POST, request.FILES)
    else:
        # The current version's contract, which an upload that leaves it alone keeps.
        current = agent.current_binary
        form = BinaryUploadForm(
            initial={
                "input_schema": current.input_schema if current else None,
                "output_schema": current.output_schema if current else agent.output_schema,
            }
        )
    if request.method == "POST" and form.is_valid():
        upload = form.cleaned_data["wasm"]
        limit = settings.WASM_MAX_UPLOAD_BYTES
        previous = agent.current_binary_id
        refusal = binary_upload_refusal(request)
        if refusal is not None:
            form.add_error("wasm", refusal)
        elif upload.size > limit:
            # Refused on the size the upload recorded, before its bytes are read.
            form.add_error("wasm", f"The file is {upload.size:,} bytes; the limit is {limit:,}.")
        else:
            try:
                binary = binary_upload(
                    agent=agent,
                    data=upload.read(),
                    input_schema=form.cleaned_data["input_schema"],
                    output_schema=form.cleaned_data["output_schema"],
                )
            except WasmInvalid as exc:
                form.add_error("wasm", exc.message)
            except DomainError as exc:  # a schema refused (invalid, too large, over budget)
                named = [name for name in exc.fields if name in form.fields]
                form.add_error(named[0] if named else None, exc.message)
            else:
                if binary.pk == previous:
                    messages.info(request, f"That is already version {binary.version}.")
                else:
                    messages.success(
                        request,
                        f"Version {binary.version} is live ({binary.size:,} bytes, "
                        f"sha256 {binary.sha256[:12]}…).",
                    )
                return go_to(request, reverse("agent-detail", args=[agent.slug]))
    context = {"agent": agent, "form": form}
    return render_page(request, "agents/binary_new.html", context, fragment="form")
