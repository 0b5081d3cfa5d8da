"""One error format, for HTTP answers and NATS replies alike.

`{"error": {"code": "...", "message": "...", "details": [...]}}`: `code` is a stable machine
name, `message` a sentence for people, `details` a list of `{"field"?, "problem"}` items.
Nothing secret or internal (stack traces, SQL, upstream bodies) is ever put in an error.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationError


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="forbid")
    field: str | None = None
    problem: str


class ErrorInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str
    message: str
    details: list[ErrorDetail] = []


class ErrorBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    error: ErrorInfo


class ApiError(Exception):
    """An error with an HTTP status that is safe to show to the caller."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: list[ErrorDetail] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []
        self.headers = headers or {}

    def body(self) -> ErrorBody:
        return ErrorBody(
            error=ErrorInfo(code=self.code, message=self.message, details=self.details)
        )

    @classmethod
    def from_body(cls, status: int, body: ErrorBody) -> ApiError:
        return cls(status, body.error.code, body.error.message, body.error.details)


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} not found")


def unavailable(message: str = "a dependency is unavailable, try again shortly") -> ApiError:
    return ApiError(503, "unavailable", message, headers={"Retry-After": "1"})


def validation_error(exc: ValidationError, status: int = 422) -> ApiError:
    """A pydantic error as a 422 naming every offending field (never echoing the input)."""
    details = []
    for err in exc.errors(include_url=False, include_input=False, include_context=False):
        loc = ".".join(str(part) for part in err.get("loc", ()) if part != "__root__")
        details.append(ErrorDetail(field=loc or None, problem=str(err.get("msg", "invalid"))))
    return ApiError(status, "validation_error", "the request is not valid", details)
