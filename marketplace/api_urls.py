"""URLs of the JSON API, mounted at /api/v1/ (namespace `api`)."""

from __future__ import annotations

from django.urls import path, re_path
from drf_spectacular.views import SpectacularAPIView

from marketplace.api import (
    agents,
    apikeys,
    auth,
    channels,
    disputes,
    quotes,
    receipts,
    tasks,
    wallet,
    webhooks,
    withdrawals,
)
from marketplace.api.common import DocsView
from marketplace.exceptions import api_not_found

app_name = "api"

urlpatterns = [
    path("auth/register/", auth.register, name="register"),
    path("auth/token/", auth.TokenEndpoint.as_view(), name="token"),
    path("auth/token/rotate/", auth.token_rotate, name="token-rotate"),
    path("wallet/", wallet.wallet, name="wallet"),
    path("wallet/deposits/", wallet.deposits, name="deposits"),
    path("wallet/transfers/", wallet.transfers, name="transfers"),
    path("wallet/withdrawals/", withdrawals.withdrawals, name="withdrawals"),
    path("wallet/withdrawals/<int:withdrawal_id>/", withdrawals.withdrawal, name="withdrawal"),
    path(
        "wallet/withdrawals/<int:withdrawal_id>/cancel/",
        withdrawals.withdrawal_cancel_view,
        name="withdrawal-cancel",
    ),
    path("agents/", agents.agents, name="agents"),
    path("agents/<slug:slug>/", agents.agent, name="agent"),
    path("agents/<slug:slug>/binaries/", agents.agent_binaries, name="agent-binaries"),
    path("agents/<slug:slug>/reputation/", agents.agent_reputation, name="agent-reputation"),
    path("agents/<slug:slug>/versions/", agents.agent_versions, name="agent-versions"),
    path(
        "agents/<slug:slug>/openapi.json",
        agents.agent_openapi_document,
        name="agent-openapi",
    ),
    path("agents/<slug:slug>/quote/", quotes.agent_quote, name="agent-quote"),
    path("tasks/", tasks.tasks, name="tasks"),
    path("tasks/batch/", tasks.task_batch, name="task-batch"),
    path("tasks/<uuid:task_id>/", tasks.task, name="task"),
    path("tasks/<uuid:task_id>/cancel/", tasks.task_cancel_view, name="task-cancel"),
    path("tasks/<uuid:task_id>/receipt/", receipts.task_receipt, name="task-receipt"),
    path("tasks/<uuid:task_id>/dispute/", disputes.task_dispute, name="task-dispute"),
    path("disputes/", disputes.disputes, name="disputes"),
    path(
        "disputes/<int:dispute_id>/accept/",
        disputes.dispute_accept_view,
        name="dispute-accept",
    ),
    path(
        "disputes/<int:dispute_id>/contest/",
        disputes.dispute_contest_view,
        name="dispute-contest",
    ),
    path("receipts/public-key/", receipts.public_key, name="receipt-public-key"),
    path("receipts/public-keys/", receipts.public_keys, name="receipt-public-keys"),
    path("receipts/verify/", receipts.verify, name="receipt-verify"),
    path("channels/", channels.channels, name="channels"),
    path("channels/<uuid:channel_id>/", channels.channel, name="channel"),
    path("channels/<uuid:channel_id>/close/", channels.channel_close_view, name="channel-close"),
    path("keys/", channels.keys, name="keys"),
    path("keys/<int:key_pk>/", channels.key, name="key"),
    path("api-keys/", apikeys.api_keys, name="api-keys"),
    path("api-keys/<int:key_id>/", apikeys.api_key, name="api-key"),
    path("webhooks/", webhooks.webhooks, name="webhooks"),
    path("webhooks/<uuid:webhook_id>/", webhooks.webhook, name="webhook"),
    path(
        "webhooks/<uuid:webhook_id>/deliveries/",
        webhooks.webhook_deliveries,
        name="webhook-deliveries",
    ),
    path("webhooks/<uuid:webhook_id>/ping/", webhooks.webhook_ping_view, name="webhook-ping"),
    path("webhooks/<uuid:webhook_id>/enable/", webhooks.webhook_enable_view, name="webhook-enable"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", DocsView.as_view(url_name="api:schema"), name="docs"),
    # Last: any other path under the API answers with the JSON error envelope.
    re_path(r"^.*$", api_not_found, name="not-found"),
]
