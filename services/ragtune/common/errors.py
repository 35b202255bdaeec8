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


class RagtuneError(Exception):
    """Base class: an error whose message is safe to show to the client."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

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


class DeadlineExceeded(RagtuneError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


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
    """Map any exception to the (code, details) a client sees."""
    exc = unwrap(exc)
    if isinstance(exc, RagtuneError):
        return exc.code, str(exc)
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


def outcome(exc: BaseException) -> str:
    """Metric label for how a request ended with ``exc``: client_error, server_error or
    cancelled (the caller went away)."""
    if isinstance(exc, GeneratorExit | asyncio.CancelledError):
        return "cancelled"
    code, _ = to_status(exc)
    if code == grpc.StatusCode.CANCELLED:
        return "cancelled"
    return "client_error" if code in CLIENT_CODES else "server_error"
