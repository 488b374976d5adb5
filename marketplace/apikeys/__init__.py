"""API keys for programs and autonomous agents: scoped, capped, shown once, stored hashed.

`lifecycle` creates, checks, changes and revokes keys; `spending` counts what a key's
submissions and channels commit against its limits and gives back what they return. The
models are in `marketplace.apikey_models`; the API's authentication in
`marketplace.api.auth_keys`.
"""

from __future__ import annotations

from marketplace.apikeys.lifecycle import (
    KEY_START,
    SCOPES,
    InvalidKeySettings,
    KeyRefused,
    api_key_allowlist,
    api_key_check_agent,
    api_key_create,
    api_key_find,
    api_key_revoke,
    api_key_touch,
    api_key_update,
)
from marketplace.apikeys.spending import (
    Spending,
    Windows,
    api_key_channel_open,
    api_key_charge_task,
    api_key_give_back,
    api_key_spending,
    api_keys_settle_channels,
)

__all__ = [
    "KEY_START",
    "SCOPES",
    "InvalidKeySettings",
    "KeyRefused",
    "Spending",
    "Windows",
    "api_key_allowlist",
    "api_key_channel_open",
    "api_key_charge_task",
    "api_key_check_agent",
    "api_key_create",
    "api_key_find",
    "api_key_give_back",
    "api_key_revoke",
    "api_key_spending",
    "api_key_touch",
    "api_key_update",
    "api_keys_settle_channels",
]
