"""Domain errors and the one place they become gRPC status codes.

Services raise these; the Serve gRPC edge (``common.serving``) turns any exception into a
status with :func:`to_status`. Unknown exceptions become INTERNAL with a generic message, so a
stack trace never reaches a client (it is logged on the server instead).
"""

from __future__ import annotations

import asyncio
import logging

import grpc

log = logging.getLogger(__name__)

# Status details travel in the response's trailing metadata, percent-encoded (a non-ASCII
# character takes up to 12 bytes there) under gRPC's 8 KiB default limit on metadata: longer
# details reset the stream instead of reaching the client.
MAX_DETAILS_CHARS = 512
# How much of a caller's own input an error message may quote.
MAX_QUOTED_CHARS = 100


def quote(value: object, limit: int = MAX_QUOTED_CHARS) -> str:
    """``repr(value)`` for an error message, cut to ``limit`` characters of the value: a
    message names what was wrong without echoing a caller's whole input back."""
    text = str(value)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


def truncate(details: str, limit: int = MAX_DETAILS_CHARS) -> str:
    return details if len(details) <= limit else details[: limit - 3] + "..."


class RagtuneError(Exception):
    """Base class: an error whose message is safe to show to the client."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    # How a request that ends with this error counts in metrics (``outcome``): None means by
    # its code; a subclass may say otherwise (a quota refusal is the caller's: client_error).
    counts_as: str | None = None

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class InvalidArgument(RagtuneError):
    """Bad input; ``field`` names the offending request field."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(RagtuneError):
    """Unknown collection, adapter or model (or one the caller may not see)."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(RagtuneError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(RagtuneError):
    """The request is valid but the system is not in a state to run it."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Unauthenticated(RagtuneError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(RagtuneError):
    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(RagtuneError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class RetryLater(ResourceExhausted):
    """A refusal that says when to try again; the gRPC edge sends it as ``retry-after-ms``
    trailing metadata (``ragtune.common.serving``)."""

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Overloaded(RetryLater):
    """The replica already handles as many requests as it is configured to: refused at once
    instead of waiting in a queue until the caller's deadline passes. A capacity problem:
    ``server_error`` in metrics."""


class DeadlineExceeded(RagtuneError):
    """The caller's deadline (or latency budget) ran out: the caller's limit, not a fault of
    ragtune's. (A timeout inside ragtune raises ``TimeoutError``: a server error.)"""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
    counts_as = "cancelled"


class Unavailable(RagtuneError):
    """Retryable: the dependency or replica is not ready yet."""

    code = grpc.StatusCode.UNAVAILABLE


def unwrap(exc: BaseException) -> BaseException:
    """Return the user exception behind Ray's wrappers (a replica's error seen through a handle)."""
    seen = 0
    while (
        seen < 8
        and getattr(exc, "cause", None) is not None
        and type(exc).__module__.startswith("ray")
    ):
        exc = exc.cause  # type: ignore[assignment]
        seen += 1
    # Dual classes made by RayTaskError.as_instanceof_cause() keep the cause too.
    cause = getattr(exc, "cause", None)
    if isinstance(cause, RagtuneError) and not isinstance(exc, RagtuneError):
        return cause
    return exc


def to_status(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """Map any exception to the (code, details) a client sees; details are at most
    ``MAX_DETAILS_CHARS`` long."""
    code, details = _status(unwrap(exc))
    return code, truncate(details)


def _status(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    if isinstance(exc, RagtuneError):
        return exc.code, str(exc)
    if isinstance(exc, GeneratorExit | asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED, "cancelled by the caller"
    if isinstance(exc, TimeoutError):
        return grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded"
    if type(exc).__name__ in {"BackPressureError"}:
        return grpc.StatusCode.RESOURCE_EXHAUSTED, "server busy: queue full, retry later"
    if type(exc).__name__ in {"DeploymentUnavailableError", "RayActorError", "ActorDiedError"}:
        return grpc.StatusCode.UNAVAILABLE, "a backing service is unavailable, retry later"
    log.error("internal error", exc_info=exc)
    return grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__}); see server logs"


# Status codes that mean the caller's request was refused, not that ragtune failed: they do not
# count against availability SLOs.
CLIENT_CODES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.OUT_OF_RANGE,
    }
)


def outcome(exc: BaseException | None) -> str:
    """Metric label for how a request ended with ``exc`` (None: it succeeded): ok,
    client_error (the request was refused), cancelled (the caller went away, or its deadline or
    budget ran out) or server_error (ragtune failed it). Only server_error counts against the
    availability SLOs (deploy/prometheus/ragtune-rules.yml)."""
    if exc is None:
        return "ok"
    exc = unwrap(exc)
    if isinstance(exc, RagtuneError) and exc.counts_as is not None:
        return exc.counts_as
    code, _ = _status(exc)
    if code == grpc.StatusCode.CANCELLED:
        return "cancelled"
    return "client_error" if code in CLIENT_CODES else "server_error"
