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
# Widgets of an input schema's fields whose value changes as one types (a checkbox, a
# select or a date picker is chosen: `change`).
TYPED = {"text", "email", "url"}
# The size of the input as typed: the text area's bytes; for the fields of an input schema,
# about the document's: its objects' braces (data-skeleton-bytes) plus, for each field
# filled in, its key (data-json-bytes) and what is typed in it. The server measures the
# document itself when it draws the page (TaskForm.input_bytes).
INPUT_BYTES_JS = (
    "js:{input_bytes: (function (text, fields) {"
    " if (text) return new Blob([text.value]).size;"
    " if (!fields) return 0;"
    " var size = Number(fields.dataset.skeletonBytes) || 0;"
    ' fields.querySelectorAll("input:not([type=hidden]), textarea, select").forEach(function (e) {'
    " var key = Number(e.dataset.jsonBytes) || 0;"
    ' if (e.type === "checkbox" && e.hasAttribute("value"))'
    " size += e.checked ? e.value.length + 1 : 0;"
    ' else if (e.type === "checkbox") size += key + (e.checked ? 4 : 5);'
    " else if (e.value) size += key + new Blob([e.value]).size; });"
    " return size;"
    # The text area by its tag: the fieldset of an input schema's root object is id_input too.
    ' })(document.querySelector("textarea#id_input"),'
    ' document.getElementById("task-input-fields"))}'
)


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
        if name in form.fields:
            form.fields[name].widget.attrs.update(attrs, **{"hx-trigger": trigger})
    # The fields of an input schema, when the agent has one, instead of the text area.
    input_form = getattr(form, "input_form", None)
    for leaf in input_form.leaves() if input_form is not None else ():
        widget = form.fields[leaf.name].widget
        typed = getattr(widget, "input_type", "text") in TYPED  # a text area has none
        widget.attrs.update(attrs, **{"hx-trigger": QUOTE_TRIGGERS["input"] if typed else "change"})


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
    return {
        "quote": _quote(
            form["agent"].value(),
            form.input_bytes(),
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
