"""Forms of the browser UI. They parse and check input; every decision is a service's.

Credits are typed as decimals ("12.5") and become integer µCR here, exactly, through
`Decimal`: no floats, at most six decimals (1 µCR = 0.000001 CR).
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from typing import Any

from django import forms
from django.conf import settings
from django.contrib.auth.models import User
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db.models import F, QuerySet

from marketplace.agent_forms import AgentLimitsForm, ContractForm
from marketplace.evaluator_forms import AcceptedEvaluatorsForm, EvaluatorForm
from marketplace.models import Agent
from marketplace.selectors.channels import channel_available
from marketplace.task_input import InputFieldsForm
from marketplace.templatetags.exchange import MICRO, format_credits

CREDITS_PATTERN = re.compile(r"(?:\d+(?:\.\d*)?|\.\d+)")
IDEMPOTENCY_KEY_PATTERN = re.compile(r"[A-Za-z0-9_-]{16,64}")
# Paths under /agents/ that an agent's page must not shadow.
RESERVED_SLUGS = {"new"}
# Prices stay within the largest possible single deposit (as in the API).
MAX_PRICE = 10**15


def parse_credits(text: str) -> int:
    """ "12.5" (or "12.5 CR") → 12_500_000 µCR. Raises ValidationError on anything else."""
    cleaned = text.strip()
    if cleaned[-2:].upper() == "CR":
        cleaned = cleaned[:-2].strip()
    if cleaned.startswith("-"):
        raise ValidationError("Enter a positive amount.", code="negative")
    if not CREDITS_PATTERN.fullmatch(cleaned):
        raise ValidationError("Enter an amount in credits, like 12.5.", code="invalid")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:  # pragma: no cover - the pattern admits only decimals
        raise ValidationError("Enter an amount in credits, like 12.5.", code="invalid") from None
    micro = value * MICRO
    if micro != micro.to_integral_value():
        raise ValidationError("At most 6 decimal places (1 µCR = 0.000001 CR).", code="too_precise")
    return int(micro)


class CreditsField(forms.Field):
    """A number of credits typed by a person; cleans to integer µCR."""

    widget = forms.TextInput
    MAX_LENGTH = 40

    def __init__(self, *, min_micro: int = 1, max_micro: int | None = None, **kwargs: Any) -> None:
        self.min_micro = min_micro
        self.max_micro = max_micro
        super().__init__(**kwargs)

    def widget_attrs(self, widget: forms.Widget) -> dict[str, Any]:
        attrs = super().widget_attrs(widget)
        # Text with a decimal keyboard: a number input would accept "1e3" and round.
        attrs.update(
            {
                "inputmode": "decimal",
                "autocomplete": "off",
                "spellcheck": "false",
                "maxlength": str(self.MAX_LENGTH),
            }
        )
        return attrs

    def to_python(self, value: Any) -> int | None:
        text = "" if value is None else str(value).strip()
        if not text:
            return None
        if len(text) > self.MAX_LENGTH:
            raise ValidationError("Enter an amount in credits, like 12.5.", code="invalid")
        micro = parse_credits(text)
        if micro < self.min_micro:
            raise ValidationError(
                "Enter an amount greater than zero."
                if self.min_micro == 1
                else f"At least {format_credits(self.min_micro)}.",
                code="min_value",
            )
        if self.max_micro is not None and micro > self.max_micro:
            raise ValidationError(f"At most {format_credits(self.max_micro)}.", code="max_value")
        return micro


class IdempotentForm(forms.Form):
    """A form that moves money carries a key made when it was rendered.

    Submitting the same rendered form twice (a double click, a refresh of the POST, the
    back button) reaches the service with the same key, which makes it one operation.
    """

    idempotency_key = forms.CharField(widget=forms.HiddenInput, max_length=64)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.is_bound:
            self.initial.setdefault("idempotency_key", new_idempotency_key())

    def clean_idempotency_key(self) -> str:
        key = self.cleaned_data["idempotency_key"]
        if not IDEMPOTENCY_KEY_PATTERN.fullmatch(key):
            raise ValidationError("This form is damaged; reload the page and try again.")
        return key


def new_idempotency_key() -> str:
    return secrets.token_urlsafe(18)


# --- accounts --------------------------------------------------------------------------


class SignupForm(forms.Form):
    username = forms.RegexField(
        label="Username",
        regex=r"^[\w.@+-]+\Z",
        max_length=150,
        error_messages={"invalid": "Letters, digits and @ . + - _ only."},
        widget=forms.TextInput(attrs={"autocomplete": "username", "autofocus": True}),
    )
    password = forms.CharField(
        label="Password",
        strip=False,
        max_length=128,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text="At least 8 characters, not too common, not all digits.",
    )

    def clean_username(self) -> str:
        username = self.cleaned_data["username"]
        if User.objects.filter(username__iexact=username).exists():
            raise ValidationError("This username is taken.")
        return username

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if "username" in cleaned and "password" in cleaned:
            try:
                validate_password(cleaned["password"], User(username=cleaned["username"]))
            except ValidationError as exc:
                self.add_error("password", exc)
        return cleaned


# --- wallet ----------------------------------------------------------------------------


class DepositForm(IdempotentForm):
    amount = CreditsField(
        label="Amount",
        help_text="In credits (CR), up to 6 decimal places.",
        widget=forms.TextInput(attrs={"placeholder": "10.00"}),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["amount"]
        assert isinstance(field, CreditsField)
        field.max_micro = settings.MAX_DEPOSIT


# --- agents ----------------------------------------------------------------------------


def _tags(text: str) -> list[str]:
    return [tag for tag in re.split(r"[\s,]+", text.strip().lower()) if tag]


class AgentForm(AgentLimitsForm, AcceptedEvaluatorsForm):
    name = forms.CharField(label="Name", max_length=100)
    slug = forms.RegexField(
        label="Slug",
        regex=r"^[a-z0-9][a-z0-9_-]{0,63}\Z",
        max_length=64,
        help_text="The agent's address: lowercase letters, digits, - and _.",
        error_messages={"invalid": "Lowercase letters, digits, hyphens and underscores."},
    )
    description = forms.CharField(
        label="Description",
        required=False,
        max_length=5000,
        widget=forms.Textarea(attrs={"rows": 4, "class": "prose-input"}),
    )
    tags = forms.CharField(
        label="Tags",
        required=False,
        max_length=400,
        help_text="Words separated by spaces or commas, like: text json.",
    )
    base_fee = CreditsField(
        label="Base fee",
        min_micro=0,
        max_micro=MAX_PRICE,
        help_text="Credits charged for every successful run.",
        widget=forms.TextInput(attrs={"placeholder": "0.001"}),
    )
    fuel_price = CreditsField(
        label="Fuel price",
        min_micro=0,
        max_micro=MAX_PRICE,
        help_text="Credits per million fuel units (about a million instructions).",
        widget=forms.TextInput(attrs={"placeholder": "0.002"}),
    )

    def clean_slug(self) -> str:
        slug = self.cleaned_data["slug"]
        if slug in RESERVED_SLUGS:
            raise ValidationError("This slug is reserved; choose another.")
        if Agent.objects.filter(slug=slug).exists():
            raise ValidationError("An agent with this slug already exists.")
        return slug

    def clean_tags(self) -> list[str]:
        tags = _tags(self.cleaned_data.get("tags") or "")
        for tag in tags:
            if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,31}", tag):
                raise ValidationError(
                    f"“{tag}” is not a tag: use lowercase letters, digits and hyphens."
                )
        if len(tags) > 20:
            raise ValidationError("At most 20 tags.")
        return list(dict.fromkeys(tags))


class BinaryUploadForm(ContractForm):
    wasm = forms.FileField(
        label="WebAssembly binary",
        help_text="A WASI command (.wasm) exporting _start and memory; at most 16 MiB.",
        widget=forms.FileInput(attrs={"accept": ".wasm,application/wasm"}),
    )

    field_order = ["wasm", "input_schema", "output_schema"]


class AgentSearchForm(forms.Form):
    ORDERINGS = {
        "-reputation": ("Best reputation", ("-score", "slug")),
        "base_fee": ("Lowest price", ("base_fee", "fuel_price", "slug")),
        "-base_fee": ("Highest price", ("-base_fee", "-fuel_price", "slug")),
        "name": ("Name", ("name", "slug")),
        "-created_at": ("Newest", ("-created_at", "slug")),
    }

    q = forms.CharField(
        label="Search",
        required=False,
        max_length=100,
        widget=forms.SearchInput(attrs={"placeholder": "Search agents by name, tag or owner"}),
    )
    ordering = forms.ChoiceField(
        label="Sort by",
        required=False,
        choices=[(key, label) for key, (label, _) in ORDERINGS.items()],
    )
    mine = forms.BooleanField(label="Only mine", required=False)

    def order_by(self) -> tuple[str, ...]:
        key = (self.cleaned_data.get("ordering") if self.is_valid() else None) or "-reputation"
        return self.ORDERINGS[key][1]


# --- tasks -----------------------------------------------------------------------------


class AgentChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: Any) -> str:
        return (
            f"{obj.name} — {format_credits(obj.base_fee)} + {format_credits(obj.fuel_price)}"
            f"/M fuel · reputation {obj.score:.1f}"
        )


def task_agents() -> QuerySet[Agent]:
    """Agents that can take a task right now: active, with a binary."""
    return (
        Agent.objects.filter(status=Agent.Status.ACTIVE, current_binary__isnull=False)
        .annotate(score=F("reputation__score"))
        .order_by("-score", "name")
    )


class ChannelOpenForm(IdempotentForm):
    agent = AgentChoiceField(
        label="Agent",
        queryset=Agent.objects.none(),
        to_field_name="slug",
        empty_label="Choose an agent…",
    )
    deposit = CreditsField(
        label="Deposit",
        help_text="Credits moved from your wallet into the channel; what is not spent comes back.",
        widget=forms.TextInput(attrs={"placeholder": "5"}),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["agent"]
        assert isinstance(field, AgentChoiceField)
        field.queryset = task_agents()


class TaskForm(IdempotentForm, InputFieldsForm, EvaluatorForm):
    agent = AgentChoiceField(
        label="Agent",
        queryset=Agent.objects.none(),
        to_field_name="slug",
        empty_label="Choose an agent…",
    )
    input = forms.CharField(
        label="Input",
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 6, "spellcheck": "false"}),
        help_text="Given to the agent on its standard input.",
    )
    budget = CreditsField(
        label="Budget",
        help_text="Credits held in escrow: the most this task can cost. The rest comes back.",
        widget=forms.TextInput(attrs={"placeholder": "0.1"}),
    )
    fuel_limit = forms.IntegerField(
        label="Fuel limit",
        required=False,
        min_value=1,
        max_value=settings.TASK_MAX_FUEL,
        help_text=f"Default {settings.TASK_DEFAULT_FUEL:,}; at most {settings.TASK_MAX_FUEL:,}.",
    )
    memory_limit_mb = forms.IntegerField(
        label="Memory limit (MB)",
        required=False,
        min_value=1,
        max_value=settings.TASK_MAX_MEMORY_MB,
        help_text=(
            f"Default {settings.TASK_DEFAULT_MEMORY_MB}; at most {settings.TASK_MAX_MEMORY_MB}."
        ),
    )
    timeout_ms = forms.IntegerField(
        label="Timeout (ms)",
        required=False,
        min_value=1,
        max_value=settings.TASK_MAX_TIMEOUT_MS,
        help_text=(
            f"Default {settings.TASK_DEFAULT_TIMEOUT_MS:,}; "
            f"at most {settings.TASK_MAX_TIMEOUT_MS:,}."
        ),
    )
    min_reputation = forms.DecimalField(
        label="Minimum reputation",
        required=False,
        min_value=0,
        max_value=100,
        max_digits=7,
        decimal_places=4,
        help_text=(
            f"The agent must score at least this (default {settings.DEFAULT_MIN_REPUTATION})."
        ),
    )
    output_schema = forms.CharField(
        label="Output schema",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false"}),
        help_text='A JSON Schema the output must satisfy, like {"type": "object"}.',
    )

    payment = forms.ChoiceField(
        label="Pay with",
        required=False,
        help_text="A channel pays from its deposit: the task's budget is signed for, not held.",
    )

    ADVANCED = ("fuel_limit", "memory_limit_mb", "timeout_ms", "min_reputation", "output_schema")
    ESCROW = "escrow"

    def __init__(self, *args: Any, channels: Iterable[Any] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["agent"]
        assert isinstance(field, AgentChoiceField)
        field.queryset = task_agents()
        # The input fields are those of the chosen agent's current version: its input
        # schema's, or the text area when it has none (SPEC §19).
        self.use_agent_input()
        for name in self.ADVANCED:
            self.fields[name].widget.attrs.setdefault("placeholder", "default")
        self.channels = {str(channel.pk): channel for channel in channels}
        payment = self.fields["payment"]
        assert isinstance(payment, forms.ChoiceField)
        payment.choices = [(self.ESCROW, "Escrow: hold the budget from my wallet")] + [
            (
                key,
                f"Channel to {channel.agent.name}: "
                f"{format_credits(channel_available(channel))} available",
            )
            for key, channel in self.channels.items()
        ]

    def clean_payment(self) -> Any:
        """None for escrow, else the channel (which must pay the chosen agent)."""
        key = self.cleaned_data.get("payment") or self.ESCROW
        if key == self.ESCROW:
            return None
        return self.channels[key]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        channel, agent = cleaned.get("payment"), cleaned.get("agent")
        if channel is not None and agent is not None and channel.agent_id != agent.pk:
            self.add_error("payment", f"This channel pays {channel.agent.name}, not {agent.name}.")
        self.clean_input_document(cleaned)
        return cleaned

    def clean_input(self) -> Any:
        if self.input_form is not None:
            return self.cleaned_data.get("input")  # a field of the input schema's
        text = self.cleaned_data.get("input") or ""
        size = len(text.encode())
        if size > settings.TASK_MAX_INPUT_BYTES:
            raise ValidationError(
                f"The input is {size:,} bytes; the limit is {settings.TASK_MAX_INPUT_BYTES:,}."
            )
        return text

    def clean_output_schema(self) -> dict | None:
        text = (self.cleaned_data.get("output_schema") or "").strip()
        if not text:
            return None
        try:
            schema = json.loads(text)
        except ValueError as exc:
            raise ValidationError(f"Not valid JSON: {exc}") from None
        if not isinstance(schema, dict):
            raise ValidationError("A JSON Schema is a JSON object.")
        return schema

    def has_advanced_values(self) -> bool:
        return any(self[name].value() not in (None, "") for name in self.ADVANCED)
