"""How a selector refuses an object that is missing or not the caller's to see.

The rules of who may see what live in the selectors, once; only the words differ. The
browser pages answer with Django's 404 page, so that is the default. The API has its own
error codes (`agent_not_found`, `task_not_found`, …), so it passes its error classes.

An API key may be limited to some agents; the API passes its `AgentAllowlist` to the
lookups, which then keep to those agents' objects.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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


@dataclass(frozen=True)
class AgentAllowlist:
    """The only agents a caller may act on (an API key's `agents`), and the refusal for the
    rest. The lookups that take one find the object first, so another user's object stays as
    absent as a missing one; only the caller's own object of another agent is refused."""

    ids: frozenset[int]
    slugs: frozenset[str]
    refuse: Refusal

    def check(self, *, agent_id: int | None = None, slug: str | None = None) -> None:
        if agent_id is not None and agent_id not in self.ids:
            raise self.refuse()
        if slug is not None and slug not in self.slugs:
            raise self.refuse()
