"""The home page: the wallet summary, recent tasks (live) and the user's own agents."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.http import HttpResponse
from django.views.decorators.http import require_GET

from marketplace import selectors
from marketplace.views.common import (
    POLL_ACTIVE,
    POLL_IDLE,
    HtmxHttpRequest,
    login_required,
    render_page,
    user_of,
)

DASHBOARD_TASKS = 8


def _dashboard_context(user: User) -> dict[str, Any]:
    recent = list(selectors.tasks_of(user)[:DASHBOARD_TASKS])
    active = selectors.has_active_tasks(recent)
    return {
        "summary": selectors.wallet_summary(user),
        "recent_tasks": recent,
        "poll": POLL_ACTIVE if active else POLL_IDLE,
        "task_count": selectors.tasks_of(user).count(),
    }


@require_GET
@login_required
def dashboard(request: HtmxHttpRequest) -> HttpResponse:
    user = user_of(request)
    context = _dashboard_context(user)
    if not request.htmx:
        # The poll refreshes only the live part; the agents need not be queried for it.
        agents = list(selectors.agents_of(user))
        context.update(
            {
                "my_agents": agents,
                "earnings": sum(agent.earned for agent in agents),  # type: ignore[attr-defined]
            }
        )
    return render_page(request, "dashboard.html", context, fragment="live")
