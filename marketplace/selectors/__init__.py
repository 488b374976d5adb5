"""Reads for the browser pages and the API. Who may see what is decided here, in one place.

Agents are a catalogue every signed-in user can read, and only the owner manages one;
tasks, wallets and ledger lines belong to one user, and anybody else gets the same 404
as for something that does not exist. Each surface says "404" in its own words: the
lookups take the error to raise (see `access`).

Callers use `from marketplace import selectors` and `selectors.<name>(...)`; the names
below are that interface, whichever module of the package holds them.
"""

from __future__ import annotations

from marketplace.selectors.access import Refusal, page_not_found
from marketplace.selectors.agents import (
    AgentStats,
    Kind,
    Standing,
    agent_by_slug,
    agent_catalogue,
    agent_earnings,
    agent_owned_by,
    agent_recent_tasks,
    agent_standing,
    agent_stats,
    agent_versions,
    agents_annotated,
    agents_of,
    owner_earnings,
)
from marketplace.selectors.apikeys import api_key_charges, api_key_for, api_keys_of
from marketplace.selectors.channels import (
    channel_available,
    channel_for,
    channel_vouchers,
    channels_of,
    channels_paid_by,
    channels_to_agents_of,
    open_channels_of,
)
from marketplace.selectors.charts import (
    CHART_EVENTS,
    ChartPoint,
    ReputationChart,
    reputation_chart,
)
from marketplace.selectors.tasks import ACTIVE_STATUSES, has_active_tasks, task_of, tasks_of
from marketplace.selectors.wallet import (
    LedgerLine,
    WalletSummary,
    account_balance,
    channels_holding,
    ledger_export,
    ledger_lines,
    ledger_of,
    wallet_of,
    wallet_summary,
)

__all__ = [
    "ACTIVE_STATUSES",
    "CHART_EVENTS",
    "AgentStats",
    "ChartPoint",
    "Kind",
    "LedgerLine",
    "Refusal",
    "ReputationChart",
    "Standing",
    "WalletSummary",
    "account_balance",
    "agent_by_slug",
    "agent_catalogue",
    "agent_earnings",
    "agent_owned_by",
    "agent_recent_tasks",
    "agent_standing",
    "agent_stats",
    "agent_versions",
    "agents_annotated",
    "agents_of",
    "api_key_charges",
    "api_key_for",
    "api_keys_of",
    "channel_available",
    "channel_for",
    "channel_vouchers",
    "channels_holding",
    "channels_of",
    "channels_paid_by",
    "channels_to_agents_of",
    "has_active_tasks",
    "ledger_export",
    "ledger_lines",
    "ledger_of",
    "open_channels_of",
    "owner_earnings",
    "page_not_found",
    "reputation_chart",
    "task_of",
    "tasks_of",
    "wallet_of",
    "wallet_summary",
]
