"""The live quote on the task form: what the run is likely to cost, and a budget for it.

The agent, input and fuel-limit fields fetch the quote fragment as they change. Only the
input's size travels (its UTF-8 byte count, measured in the browser), never the input.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET

from marketplace.forms import task_agents
from marketplace.quotes import Quote, quote_for
from marketplace.views.common import HtmxHttpRequest, login_required

# What each field's quote waits for. Typing fires `input`; `change` (sent again when a
# text field loses focus) is left to the select, so clicking "Use it" just after typing
# does not fetch the same quote again and swap the button away under the pointer.
QUOTE_TRIGGERS = {
    "agent": "change",
    "input": "input changed delay:300ms",
    "fuel_limit": "input changed delay:300ms",
}
INPUT_BYTES_JS = 'js:{input_bytes: new Blob([document.getElementById("id_input").value]).size}'


def quote_live(form: Any) -> None:
    """Make the task form's agent, input and fuel limit refresh the quote as they change."""
    attrs = {
        "hx-get": reverse("task-quote"),
        "hx-target": "#task-quote",
        "hx-swap": "outerHTML",
        "hx-include": "#id_agent, #id_fuel_limit",
        "hx-vals": INPUT_BYTES_JS,
        # A newer keystroke's quote replaces an older one still on its way.
        "hx-sync": "#task-quote:replace",
        # Not the form's: a quote must not disable the submit button while it loads.
        "hx-disabled-elt": "unset",
    }
    for name, trigger in QUOTE_TRIGGERS.items():
        form.fields[name].widget.attrs.update(attrs, **{"hx-trigger": trigger})


def _number(raw: Any, maximum: int) -> int | None:
    text = str(raw or "").strip().replace(",", "").replace("_", "")
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        return None
    value = int(text)
    return value if 0 <= value <= maximum else None


def _quote(slug: Any, input_bytes: int | None, fuel_limit: int | None) -> Quote | None:
    agent = task_agents().filter(slug=str(slug or "")).first()
    if agent is None:
        return None
    limit = fuel_limit if fuel_limit else None
    return quote_for(agent, input_bytes=input_bytes or 0, fuel_limit=limit)


def quote_context(form: Any) -> dict[str, Any]:
    """The quote for what the form holds now (shown when the page is first drawn)."""
    text = form["input"].value() or ""
    return {
        "quote": _quote(
            form["agent"].value(),
            len(str(text).encode()),
            _number(form["fuel_limit"].value(), settings.TASK_MAX_FUEL),
        )
    }


@require_GET
@login_required
def task_quote(request: HtmxHttpRequest) -> HttpResponse:
    input_bytes = _number(request.GET.get("input_bytes"), 2**62)
    context = {
        "quote": _quote(
            request.GET.get("agent"),
            input_bytes,
            _number(request.GET.get("fuel_limit"), settings.TASK_MAX_FUEL),
        ),
        "too_large": (input_bytes or 0) > settings.TASK_MAX_INPUT_BYTES,
    }
    return render(request, "tasks/_quote.html", context)
