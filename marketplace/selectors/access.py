"""How a selector refuses an object that is missing or not the caller's to see.

The rules of who may see what live in the selectors, once; only the words differ. The
browser pages answer with Django's 404 page, so that is the default. The API has its own
error codes (`agent_not_found`, `task_not_found`, …), so it passes its error classes.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import Http404

# Called with no arguments; returns the exception to raise. A domain error class fits.
Refusal = Callable[[], Exception]


def page_not_found(message: str) -> Refusal:
    """The pages' refusal: a 404, for a missing object and someone else's alike."""

    def refuse() -> Exception:
        return Http404(message)

    return refuse


# The pages' refusals, one per kind of object (the lookups' defaults).
NO_SUCH_AGENT = page_not_found("No such agent.")
NO_SUCH_TASK = page_not_found("No such task.")
NO_SUCH_CHANNEL = page_not_found("No such channel.")
