"""URLs of the JSON API, mounted at /api/v1/ (namespace `api`)."""

from __future__ import annotations

from django.urls import path, re_path
from drf_spectacular.views import SpectacularAPIView

from execution import api as execution_api
from marketplace import api
from marketplace.exceptions import api_not_found

app_name = "api"

urlpatterns = [
    path("auth/register/", api.register, name="register"),
    path("auth/token/", api.token, name="token"),
    path("wallet/", api.wallet, name="wallet"),
    path("wallet/deposits/", api.deposits, name="deposits"),
    path("wallet/transfers/", api.transfers, name="transfers"),
    path("agents/", api.agents, name="agents"),
    path("agents/<slug:slug>/", api.agent, name="agent"),
    path("agents/<slug:slug>/binaries/", api.agent_binaries, name="agent-binaries"),
    path("agents/<slug:slug>/reputation/", api.agent_reputation, name="agent-reputation"),
    path("tasks/", api.tasks, name="tasks"),
    path("tasks/<uuid:task_id>/", api.task, name="task"),
    path("tasks/<uuid:task_id>/cancel/", api.task_cancel_view, name="task-cancel"),
    path("tasks/<uuid:task_id>/receipt/", execution_api.task_receipt, name="task-receipt"),
    path("receipts/public-key/", execution_api.public_key, name="receipt-public-key"),
    path("receipts/verify/", execution_api.verify, name="receipt-verify"),
    path("channels/", api.channels, name="channels"),
    path("channels/<uuid:channel_id>/", api.channel, name="channel"),
    path("channels/<uuid:channel_id>/close/", api.channel_close_view, name="channel-close"),
    path("keys/", api.keys, name="keys"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", api.DocsView.as_view(url_name="api:schema"), name="docs"),
    # Last: any other path under the API answers with the JSON error envelope.
    re_path(r"^.*$", api_not_found, name="not-found"),
]
