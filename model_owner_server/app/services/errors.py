"""What a service refuses, as domain errors: the services know no HTTP; `app/main.py` maps each kind
to its status code and the same `{"detail": ...}` body FastAPI gives an HTTPException."""

from __future__ import annotations


class ServiceError(Exception):
    """A request the service refuses; `detail` is a message, or a structure listing every problem."""

    def __init__(self, detail: object) -> None:
        super().__init__(detail if isinstance(detail, str) else repr(detail))
        self.detail = detail


class NotFound(ServiceError):
    """The object does not exist, or the caller may not see it (the same answer, on purpose)."""


class Conflict(ServiceError):
    """The request is valid but the current state does not allow it (retry later, or not at all)."""


class Gone(ServiceError):
    """A stored artifact the request needs is missing or damaged: the caller must provide it again."""


class Unprocessable(ServiceError):
    """The request is well-formed but asks for something that cannot be done."""


class TooManyRequests(ServiceError):
    """A data owner's quota is used up (429); `retry_after_s` says when to ask again (the Retry-After header)."""

    def __init__(self, detail: str, retry_after_s: int) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s
