from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from execution.health import healthz
from execution.metrics import metrics
from marketplace.mcp.endpoint import mcp_endpoint
from marketplace.views import (
    account,
    agents,
    apikeys,
    auth,
    channels,
    dashboard,
    disputes,
    quotes,
    tasks,
    wallet,
    webhooks,
    withdrawals,
)

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics, name="metrics"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("marketplace.api_urls")),
    # The Model Context Protocol (Streamable HTTP), for LLM agents with an API key.
    path("mcp", mcp_endpoint, name="mcp"),
    path("mcp/", mcp_endpoint),
    # The browser UI.
    path("", dashboard.dashboard, name="dashboard"),
    path("accounts/signup/", auth.signup, name="signup"),
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(
            template_name="accounts/login.html", redirect_authenticated_user=True
        ),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("account/token/", account.account_token, name="account-token"),
    path("account/token/rotate/", account.account_token_rotate_view, name="account-token-rotate"),
    path("account/token/revoke/", account.account_token_revoke_view, name="account-token-revoke"),
    path("account/password/", account.account_password, name="account-password"),
    path("wallet/", wallet.wallet, name="wallet"),
    path("wallet/ledger.csv", wallet.wallet_export, name="wallet-export"),
    path("wallet/balances/", wallet.wallet_balances, name="wallet-balances"),
    path("wallet/withdrawals/", withdrawals.withdrawals, name="withdrawals"),
    path(
        "wallet/withdrawals/<int:withdrawal_id>/",
        withdrawals.withdrawal_row,
        name="withdrawal-row",
    ),
    path(
        "wallet/withdrawals/<int:withdrawal_id>/cancel/",
        withdrawals.withdrawal_cancel,
        name="withdrawal-cancel",
    ),
    path("agents/", agents.agent_list, name="agent-list"),
    path("agents/new/", agents.agent_new, name="agent-new"),
    path("agents/<slug:slug>/", agents.agent_detail, name="agent-detail"),
    path("agents/<slug:slug>/binaries/new/", agents.agent_binary_new, name="agent-binary-new"),
    path("tasks/", tasks.task_list, name="task-list"),
    path("tasks/new/", tasks.task_new, name="task-new"),
    path("tasks/quote/", quotes.task_quote, name="task-quote"),
    path("tasks/<uuid:task_id>/", tasks.task_detail, name="task-detail"),
    path("tasks/<uuid:task_id>/cancel/", tasks.task_cancel_view, name="task-cancel"),
    path("tasks/<uuid:task_id>/receipt.json", tasks.task_receipt, name="task-receipt"),
    path("tasks/<uuid:task_id>/dispute/", disputes.task_dispute_view, name="task-dispute"),
    path("disputes/received/", disputes.disputes_received, name="disputes-received"),
    path("disputes/opened/", disputes.disputes_opened, name="disputes-opened"),
    path("disputes/<int:dispute_id>/accept/", disputes.dispute_accept_view, name="dispute-accept"),
    path(
        "disputes/<int:dispute_id>/contest/", disputes.dispute_contest_view, name="dispute-contest"
    ),
    path("tasks/<uuid:task_id>/receipt/verify/", tasks.task_receipt_verify, name="task-verify"),
    path("channels/", channels.channel_list, name="channel-list"),
    path("channels/<uuid:channel_id>/", channels.channel_detail, name="channel-detail"),
    path("channels/<uuid:channel_id>/close/", channels.channel_close_view, name="channel-close"),
    path("api-keys/", apikeys.api_key_list, name="api-key-list"),
    path("api-keys/<int:key_id>/revoke/", apikeys.api_key_revoke_view, name="api-key-revoke"),
    path("webhooks/", webhooks.webhook_list, name="webhook-list"),
    path("webhooks/<uuid:webhook_id>/", webhooks.webhook_detail, name="webhook-detail"),
    path("webhooks/<uuid:webhook_id>/ping/", webhooks.webhook_ping_view, name="webhook-ping"),
    path("webhooks/<uuid:webhook_id>/enable/", webhooks.webhook_enable_view, name="webhook-enable"),
    path("webhooks/<uuid:webhook_id>/delete/", webhooks.webhook_delete_view, name="webhook-delete"),
]
