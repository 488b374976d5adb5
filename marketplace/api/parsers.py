"""Request parsing: JSON that every database can store, and bounded WASM uploads."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework import parsers
from rest_framework.exceptions import ParseError

from execution.engine.validation import WasmTooLarge


def check_strings(value: Any) -> None:
    """Refuse text no database can store: NUL characters and lone UTF-16 surrogates."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise ParseError("JSON strings may not contain NUL characters.")
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise ParseError("JSON strings may not contain lone surrogates.") from None
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, plus: no NaN/Infinity, bounded nesting, storable strings only."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply.") from None
        check_strings(data)
        return data


class WasmUploadParser(parsers.MultiPartParser):
    """Multipart with the size checked before anything is spooled to disk."""

    def parse(self, stream, media_type=None, parser_context=None):
        request = (parser_context or {}).get("request")
        meta = request.META if request is not None else {}
        try:
            length = int(meta.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        limit = settings.WASM_MAX_UPLOAD_BYTES
        # Multipart framing adds a few hundred bytes; 64 KiB leaves room for any client.
        if length > limit + 64 * 1024:
            raise WasmTooLarge(
                f"The request is {length} bytes; binaries are at most {limit} bytes.",
                fields={"size": length, "limit": limit},
            )
        return super().parse(stream, media_type, parser_context)
