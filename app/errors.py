"""Domain errors: raised by services, turned into clear messages by the UI, CLI and API."""


class DomainError(Exception):
    """Base class; `message` is safe to show to the person who acted."""

    status = 400

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class NotFound(DomainError):
    status = 404


class PermissionDenied(DomainError):
    status = 403


class InvalidTransition(DomainError):
    status = 409


class Conflict(DomainError):
    """Someone else changed the item first (optimistic lock or a claim race)."""

    status = 409


class SegregationOfDuties(DomainError):
    status = 403


class ValidationFailed(DomainError):
    status = 422

    def __init__(self, message: str, fields: dict[str, str] | None = None):
        super().__init__(message)
        self.fields = fields or {}
