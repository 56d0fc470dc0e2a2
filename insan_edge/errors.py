"""The project's one error hierarchy.

Core modules raise these; the API maps each to an HTTP status and a stable ``code`` string
(``{"error": {"code": ..., "message": ...}}``), and the CLI prints ``message`` and exits non-zero.
"""

from __future__ import annotations

from dataclasses import dataclass


class InsanEdgeError(Exception):
    """Base class of every error insan-edge raises on purpose."""

    code = "internal_error"
    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequestError(InsanEdgeError):
    code = "bad_request"
    status = 400


class NotFoundError(InsanEdgeError):
    code = "not_found"
    status = 404


class UnknownFamilyError(NotFoundError):
    code = "unknown_family"


class UnknownMemberError(NotFoundError):
    code = "unknown_member"


class PayloadTooLargeError(InsanEdgeError):
    code = "payload_too_large"
    status = 413


class BusyError(InsanEdgeError):
    """Too much work queued; the caller should retry after ``retry_after`` seconds."""

    code = "busy"
    status = 503

    def __init__(self, message: str, retry_after: int = 2) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UnauthorizedError(InsanEdgeError):
    """No valid app token came with a request to the LAN gateway."""

    code = "unauthorized"
    status = 401


class ForbiddenError(InsanEdgeError):
    """The token is valid but its scopes do not allow this request."""

    code = "forbidden"
    status = 403


class RateLimitedError(InsanEdgeError):
    """Too many requests from one token or address; retry after ``retry_after`` seconds."""

    code = "rate_limited"
    status = 429

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ModelError(InsanEdgeError):
    """The model could not be found, verified, loaded or run."""

    code = "model_error"
    status = 500


class StoreError(InsanEdgeError):
    code = "store_error"
    status = 500


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with a config file, located for a person to fix."""

    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return (
            f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        )


class ConfigError(InsanEdgeError):
    """The config file is unreadable or invalid; ``problems`` lists every error found."""

    code = "config_error"
    status = 500

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        n = len(problems)
        super().__init__(f"{n} problem{'s' if n != 1 else ''} in the config:\n{lines}")
