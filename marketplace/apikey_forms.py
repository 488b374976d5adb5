"""The browser's form for a new API key: scopes, limits in credits, agents and expiry.

It parses what a person types; `marketplace.apikeys.api_key_create` decides."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django import forms
from django.utils import timezone

from marketplace.apikey_models import ApiKey
from marketplace.forms import CreditsField, task_agents

EXPIRY_CHOICES = [
    ("", "Never"),
    ("1", "In 1 day"),
    ("7", "In 7 days"),
    ("30", "In 30 days"),
    ("90", "In 90 days"),
    ("365", "In a year"),
]


def limit_field(label: str, help_text: str) -> CreditsField:
    return CreditsField(
        label=label,
        required=False,
        help_text=help_text,
        widget=forms.TextInput(attrs={"placeholder": "no limit"}),
    )


class AgentsField(forms.ModelMultipleChoiceField):
    def label_from_instance(self, obj: Any) -> str:
        return f"{obj.name} ({obj.slug})"


class ApiKeyForm(forms.Form):
    name = forms.CharField(
        label="Name",
        max_length=100,
        help_text="What uses it, so that you know which key to revoke.",
        widget=forms.TextInput(attrs={"placeholder": "nightly summarizer", "autocomplete": "off"}),
    )
    scopes = forms.MultipleChoiceField(
        label="Scopes",
        choices=ApiKey.Scope.choices,
        initial=[ApiKey.Scope.TASKS_READ, ApiKey.Scope.TASKS_WRITE],
        widget=forms.CheckboxSelectMultiple,
        help_text="No key can manage keys, deposit, withdraw, dispute or change the account.",
    )
    per_task = limit_field("Per task", "The largest budget of one task.")
    daily = limit_field("Per day", "Resets at 00:00 UTC.")
    monthly = limit_field("Per month", "Resets on the 1st, 00:00 UTC.")
    total = limit_field("In all", "Over the key's whole life.")
    agents = AgentsField(
        label="Agents",
        queryset=ApiKey.objects.none(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Only these; none ticked: any agent.",
    )
    expires = forms.ChoiceField(label="Expires", choices=EXPIRY_CHOICES, required=False)

    LIMITS = ("per_task", "daily", "monthly", "total")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["agents"]
        assert isinstance(field, AgentsField)
        field.queryset = task_agents().order_by("name")

    def settings(self) -> dict[str, Any]:
        """The validated values as `api_key_create` takes them."""
        data = self.cleaned_data
        days = data.get("expires")
        expires_at: datetime | None = timezone.now() + timedelta(days=int(days)) if days else None
        return {
            "name": data["name"],
            "scopes": data["scopes"],
            "limits": {name: data.get(name) for name in self.LIMITS},
            "agents": list(data["agents"]) or None,
            "expires_at": expires_at,
        }
