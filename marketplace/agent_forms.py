"""The limits an owner recommends for an agent (SPEC §13), as the browser asks for them: on
the form that lists a new agent, and on its page for the owner to change them; and the
contract a new version is uploaded with (SPEC §19)."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.conf import settings


def limit_field(label: str, default: int, maximum: int, unit: str = "") -> forms.IntegerField:
    return forms.IntegerField(
        label=label,
        required=False,
        min_value=1,
        max_value=maximum,
        help_text=f"Default {default:,}{unit}; at most {maximum:,}{unit}.",
        widget=forms.NumberInput(attrs={"placeholder": f"{default}"}),
    )


class AgentLimitsForm(forms.Form):
    """What the agent needs to do its work. A task that names no limits runs with these; a
    task run below them that runs out is not held against the agent. Blank: the default."""

    recommended_fuel = limit_field(
        "Recommended fuel", settings.TASK_DEFAULT_FUEL, settings.TASK_MAX_FUEL
    )
    recommended_memory_mb = limit_field(
        "Recommended memory (MB)", settings.TASK_DEFAULT_MEMORY_MB, settings.TASK_MAX_MEMORY_MB
    )
    recommended_timeout_ms = limit_field(
        "Recommended timeout (ms)",
        settings.TASK_DEFAULT_TIMEOUT_MS,
        settings.TASK_MAX_TIMEOUT_MS,
    )
    LIMITS = ("recommended_fuel", "recommended_memory_mb", "recommended_timeout_ms")

    def limits(self) -> dict[str, Any]:
        """The limits the owner named (the others keep their current or default value)."""
        return {
            name: self.cleaned_data[name]
            for name in self.LIMITS
            if self.cleaned_data.get(name) is not None
        }


class ContractSchemaField(forms.CharField):
    """A JSON Schema typed in as JSON text: a JSON object, or nothing (blank)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            required=False,
            strip=True,
            widget=forms.Textarea(attrs={"rows": 8, "class": "mono", "spellcheck": "false"}),
            **kwargs,
        )

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, dict):
            return json.dumps(value, indent=2, ensure_ascii=False)
        return value

    def to_python(self, value: Any) -> Any:  # a JSON object, not the text it was typed as
        text = super().to_python(value)
        if not text or text == "null":
            return None
        try:
            schema = json.loads(text, parse_constant=_no_constant)
        except (ValueError, RecursionError) as exc:
            raise forms.ValidationError(f"Not valid JSON: {exc}.") from None
        if not isinstance(schema, dict):
            raise forms.ValidationError("A JSON Schema is a JSON object.")
        return schema


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


class ContractForm(forms.Form):
    """A version's contract. The upload page fills it in with the current version's, so an
    upload that leaves it alone keeps it; a contract that differs makes a new version even
    for the same bytes."""

    input_schema = ContractSchemaField(
        label="Input schema",
        help_text="A JSON Schema the input must match; a task then sends a JSON document, "
        "checked before it is paid for, and the task form is built from it. Blank: the input "
        "is free text.",
    )
    output_schema = ContractSchemaField(
        label="Output schema",
        help_text="A JSON Schema every output must match (JSON on stdout); a run whose output "
        "does not fails as invalid output. Blank: any output.",
    )
