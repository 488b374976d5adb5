from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from marketplace import views
from marketplace.health import healthz

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("marketplace.api_urls")),
    # The browser UI.
    path("", views.dashboard, name="dashboard"),
    path("accounts/signup/", views.signup, name="signup"),
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(
            template_name="accounts/login.html", redirect_authenticated_user=True
        ),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("wallet/", views.wallet, name="wallet"),
    path("wallet/ledger.csv", views.wallet_export, name="wallet-export"),
    path("agents/", views.agent_list, name="agent-list"),
    path("agents/new/", views.agent_new, name="agent-new"),
    path("agents/<slug:slug>/", views.agent_detail, name="agent-detail"),
    path("agents/<slug:slug>/binaries/new/", views.agent_binary_new, name="agent-binary-new"),
    path("tasks/", views.task_list, name="task-list"),
    path("tasks/new/", views.task_new, name="task-new"),
    path("tasks/<uuid:task_id>/", views.task_detail, name="task-detail"),
    path("tasks/<uuid:task_id>/cancel/", views.task_cancel_view, name="task-cancel"),
    path("tasks/<uuid:task_id>/receipt.json", views.task_receipt, name="task-receipt"),
    path("tasks/<uuid:task_id>/receipt/verify/", views.task_receipt_verify, name="task-verify"),
    path("channels/", views.channel_list, name="channel-list"),
    path("channels/<uuid:channel_id>/", views.channel_detail, name="channel-detail"),
    path("channels/<uuid:channel_id>/close/", views.channel_close_view, name="channel-close"),
]
