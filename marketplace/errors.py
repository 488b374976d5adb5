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
