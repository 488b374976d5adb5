"""Template filters for the pages: money, scores and statuses, formatted at the edge."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from django import template
from django.utils.html import format_html
from django.utils.safestring import SafeString

register = template.Library()

MICRO = 1_000_000  # µCR in one credit


def format_credits(amount: int) -> str:
    """12_500_000 → "12.500000 CR": exact integer arithmetic, never a float."""
    sign = "−" if amount < 0 else ""
    whole, micro = divmod(abs(amount), MICRO)
    return f"{sign}{whole}.{micro:06d} CR"


@register.filter
def credits(amount: Any) -> str:
    """µCR → "12.500000 CR"; an empty amount (not settled yet) → "—"."""
    if amount is None or amount == "":
        return "—"
    return format_credits(int(amount))


@register.filter
def signed_credits(amount: Any) -> str:
    """A ledger line: "+5.000000 CR" in, "−5.000000 CR" out."""
    if amount is None or amount == "":
        return "—"
    value = int(amount)
    sign = "+" if value > 0 else "−" if value < 0 else ""
    return sign + format_credits(abs(value))


@register.filter
def credits_value(amount: Any) -> str:
    """µCR as a bare decimal for an input's value: 12500000 → "12.5"."""
    if amount is None or amount == "":
        return ""
    whole, micro = divmod(int(amount), MICRO)
    return f"{whole}.{micro:06d}".rstrip("0").rstrip(".")


@register.filter
def score(value: Any) -> str:
    """A reputation score (exact decimal) shown with one decimal place."""
    if value is None or value == "":
        return "—"
    return f"{Decimal(value):.1f}"


@register.filter
def delta(value: Any) -> str:
    if value is None or value == "":
        return "—"
    number = Decimal(value)
    return f"{'+' if number > 0 else '−' if number < 0 else '±'}{abs(number):.2f}"


@register.filter
def status_badge(status: str) -> SafeString:
    label = str(status).replace("_", " ")
    return format_html('<span class="badge badge-{}">{}</span>', status, label)


@register.filter
def humanize_reason(reason: str) -> str:
    return REASONS.get(reason, str(reason).replace("_", " "))


@register.filter
def bytes_text(data: Any) -> str:
    """Task output (bytes) as text; undecodable bytes show as U+FFFD."""
    if data is None:
        return ""
    return bytes(data).decode("utf-8", "replace")


@register.filter
def pretty_json(text: str) -> str:
    """Pretty-print JSON text; anything else comes back unchanged."""
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except (TypeError, ValueError):
        return text


@register.filter
def percent(value: Any) -> str:
    if value is None:
        return "—"
    return f"{Decimal(value):.0f} %"


@register.filter
def intcomma_plain(value: Any) -> str:
    """1234567 → "1,234,567" (for fuel and counts; never for money)."""
    if value is None or value == "":
        return "—"
    return f"{int(value):,}"


REASONS = {
    "out_of_fuel": "Out of fuel: the run needed more fuel than the task allowed",
    "timeout": "Timed out: the run went over its wall-clock limit",
    "memory_limit": "Memory limit: the agent tried to use more memory than allowed",
    "trap": "Trap: the agent crashed (a WebAssembly trap)",
    "exit_nonzero": "The agent exited with a non-zero code",
    "output_too_large": "Output too large: the agent wrote more than the output limit",
    "invalid_output": "Invalid output: the output did not match the required schema",
    "validation_failed": "Not started: a pre-execution check failed",
    "platform_error": "Platform error: the platform could not run the task",
}


@register.filter
def words(value: Any) -> str:
    """snake_case → "snake case", for codes shown to people."""
    return str(value or "").replace("_", " ")


LEDGER_LABELS = {
    "deposit": "Deposit",
    "escrow_hold": "Budget held in escrow",
    "escrow_payout": "Earned from a task",
    "escrow_fee": "Platform fee",
    "escrow_refund": "Refund from escrow",
    "channel_deposit": "Channel deposit",
    "channel_payout": "Earned through a channel",
    "channel_fee": "Channel platform fee",
    "channel_refund": "Channel refund",
    "withdrawal": "Withdrawal (paying out)",
    "withdrawal_payout": "Withdrawal paid out",
    "withdrawal_return": "Withdrawal returned",
    "earnings_release": "Earnings released from hold",
    "dispute_refund": "Dispute refund",
    "dispute_fee_refund": "Dispute refund of the platform fee",
}


@register.filter
def ledger_label(kind: str) -> str:
    return LEDGER_LABELS.get(kind, words(kind).capitalize())
