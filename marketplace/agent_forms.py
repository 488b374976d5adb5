"""The limits an owner recommends for an agent (SPEC §13), as the browser asks for them: on
the form that lists a new agent, and on its page for the owner to change them."""

from __future__ import annotations

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
