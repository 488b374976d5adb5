"""The engine's own error base: the same shape as the product's domain errors (a stable
`code`, an HTTP `status`, a message and fields), so the API and the pages can report an
engine refusal like any other, without the engine importing the product."""

from __future__ import annotations


class EngineError(Exception):
    code = "error"
    status = 400
    default_message = "The request could not be completed."

    def __init__(self, message: str | None = None, *, fields: dict | None = None) -> None:
        super().__init__(message or self.default_message)
        self.message = message or self.default_message
        self.fields = fields or {}
