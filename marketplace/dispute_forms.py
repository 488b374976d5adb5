"""Forms of the dispute pages: a requester's reason, an owner's statement. The rules of
who may dispute what, and when, are the services' (`marketplace.disputes`)."""

from __future__ import annotations

from typing import Any

from django import forms

# As in the API (marketplace/api/serializers/disputes.py).
TEXT_MAX = 2000


class DisputeForm(forms.Form):
    reason = forms.CharField(
        label="Reason",
        max_length=TEXT_MAX,
        strip=True,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="What was wrong with the result. The agent's owner reads it.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("auto_id", "dispute_%s")
        super().__init__(*args, **kwargs)


class ContestForm(forms.Form):
    statement = forms.CharField(
        label="Statement",
        max_length=TEXT_MAX,
        strip=True,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Why the result was right. An operator decides.",
    )

    def __init__(self, *args: Any, dispute_id: int | None = None, **kwargs: Any) -> None:
        # Several of these on one page: ids of their own.
        self.dispute_id = dispute_id
        kwargs.setdefault("auto_id", f"contest_{dispute_id}_%s" if dispute_id else "contest_%s")
        super().__init__(*args, **kwargs)
