from __future__ import annotations

from escrow.errors import DomainError


class AgentNotFound(DomainError):
    code = "agent_not_found"
    status = 404
    default_message = "No such agent."


class AgentUnavailable(DomainError):
    code = "agent_inactive"
    status = 409
    default_message = "The agent is suspended and takes no tasks."


class AgentHasNoBinary(DomainError):
    code = "agent_has_no_binary"
    status = 409
    default_message = "The agent has no uploaded binary yet."


class LimitExceeded(DomainError):
    code = "limit_exceeded"
    default_message = "A limit is above the maximum this platform allows."


class InputTooLarge(DomainError):
    code = "input_too_large"
    status = 413
    default_message = "The task input is too large."


class BudgetTooLow(DomainError):
    code = "budget_below_base_fee"
    default_message = "The budget does not cover the agent's base fee."


class InvalidOutputSchema(DomainError):
    code = "invalid_output_schema"
    default_message = "output_schema is not a valid JSON Schema."


class SchemaTooLarge(InvalidOutputSchema):
    code = "schema_too_large"
    default_message = "output_schema is larger than the limit."


class PaymentUnavailable(DomainError):
    code = "payment_method_unavailable"
    default_message = "This payment method is not available."


class TaskStateConflict(DomainError):
    code = "task_state_conflict"
    status = 409
    default_message = "The task is not in a state that allows this operation."


# --- API keys --------------------------------------------------------------------------


class SpendLimitExceeded(DomainError):
    code = "spend_limit_exceeded"
    status = 402
    default_message = "This would take the API key over one of its spending limits."


class AgentNotAllowed(DomainError):
    code = "agent_not_allowed"
    status = 403
    default_message = "This API key may not use this agent."


class ScopeRequired(DomainError):
    code = "scope_required"
    status = 403
    default_message = "This API key lacks the scope this endpoint needs."


class ApiKeyNotFound(DomainError):
    code = "not_found"
    status = 404
    default_message = "No such API key."


class ApiKeyRevoked(DomainError):
    code = "api_key_revoked"
    status = 409
    default_message = "The API key is revoked and can no longer be changed."


class TooManyApiKeys(DomainError):
    code = "too_many_api_keys"
    status = 409
    default_message = "You have as many active API keys as allowed; revoke one first."


# --- abuse limits (SPEC §23) ---------------------------------------------------------------


class TooManyTasks(DomainError):
    code = "too_many_tasks"
    status = 429
    # Seconds a client should wait before it tries again (the Retry-After header).
    retry_after = 5
    default_message = "You have as many tasks in flight as allowed; wait for some to finish."


# --- contracts of agent versions (SPEC §19) -------------------------------------------------


class InvalidInput(DomainError):
    """An input that breaks its version's input schema. `path` (also `fields["path"]`) is
    the JSON pointer of the first failing place: for a missing required property, the
    pointer that property would have."""

    code = "invalid_input"
    default_message = "The input does not match the agent's input schema."

    def __init__(self, message: str | None = None, *, path: str = "") -> None:
        super().__init__(message, fields={"path": path})
        self.path = path


class VersionNotFound(DomainError):
    code = "version_not_found"
    default_message = "The agent has no such version."


class InvalidSchema(DomainError):
    code = "invalid_schema"
    default_message = "The schema is not a valid JSON Schema."
