"""How much of a task an event body carries (SPEC §23).

A task's input and output are up to a MiB each, and JSON escapes a control character to six
bytes: one free task with a 1 MB input once sent 12 MB to each of its requester's ten
endpoints, and stored the body ten times. So a task goes out whole only while its rendering
stays within `WEBHOOK_MAX_INLINE_BYTES`. Past that, `input` and the result's `output` are
replaced by `{"omitted": true, "bytes": N, "sha256": "…"}`, the size and hash of the value
as `GET /api/v1/tasks/{id}/` returns it (which the event's `links.task` names); if the
task is still too large, so are its other long fields, largest first.
"""

from __future__ import annotations

import copy
import hashlib
from typing import Any

from rest_framework.renderers import JSONRenderer

# Replaced together as soon as the task is over the limit: what clients are told to expect.
ALWAYS = (("input",), ("result", "output"))
# Then these, largest first, only while the task is still over it.
IF_STILL_OVER = (("result", "stderr"), ("output_schema",), ("failure_detail",))


def _rendered(value: Any) -> bytes:
    return JSONRenderer().render(value)


def omitted(value: Any) -> dict[str, Any]:
    """What stands in for `value`: its size and SHA-256 (of a string's UTF-8, else of its
    JSON), so a receiver can tell whether what it fetches is what happened."""
    raw = value.encode() if isinstance(value, str) else _rendered(value)
    return {"omitted": True, "bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}


def _at(shown: dict[str, Any], path: tuple[str, ...]) -> tuple[dict[str, Any] | None, str]:
    """The dict holding the value at `path` (None when the path is absent), and its key."""
    holder: Any = shown
    for key in path[:-1]:
        holder = holder.get(key) if isinstance(holder, dict) else None
    return (holder if isinstance(holder, dict) and path[-1] in holder else None), path[-1]


def task_bounded(shown: dict[str, Any], limit: int) -> dict[str, Any]:
    """The task's API body as an event carries it: whole when it renders within `limit`
    bytes, else with its bulky values omitted."""
    if len(_rendered(shown)) <= limit:
        return shown
    bounded = copy.deepcopy(dict(shown))
    for path in ALWAYS:
        holder, key = _at(bounded, path)
        if holder is not None and holder[key] is not None:
            holder[key] = omitted(holder[key])
    sizes = []
    for path in IF_STILL_OVER:
        holder, key = _at(bounded, path)
        if holder is not None and holder[key] not in (None, ""):
            sizes.append((len(_rendered(holder[key])), path))
    for _, path in sorted(sizes, reverse=True):
        if len(_rendered(bounded)) <= limit:
            break
        holder, key = _at(bounded, path)
        assert holder is not None
        holder[key] = omitted(holder[key])
    return bounded
