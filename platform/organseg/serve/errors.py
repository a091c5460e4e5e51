"""How an exception becomes an answer: HTTP status / gRPC code, and a body that leaks nothing.

Anything the sender can fix (:class:`~organseg.errors.OrgansegError` and its kinds) is a 4xx naming the
problem. Everything else is our bug: a 500 / INTERNAL whose body carries only a request id; the traceback,
with the same id, goes to the replica's log once, in the request's log line (``organseg.serve.ops``
writes it). Messages never carry process ids, addresses or actor names.
"""

from __future__ import annotations

import uuid

import grpc
from starlette.formparsers import MultiPartException

from organseg.errors import DataError, ModelError, OrgansegError, RequestTooLarge

#: Exceptions raised by request parsing (not our code) that mean a malformed request.
_MALFORMED = (MultiPartException, UnicodeDecodeError)


def _modality_error() -> type[Exception]:
    from organseg.ensemble.routing import ModalityError

    return ModalityError


def http_status(exc: BaseException) -> int:
    """HTTP status of a failed request: 413 too large, 422 modality/model mismatch, 400 bad input, 500
    our bug."""
    if isinstance(exc, RequestTooLarge):
        return 413
    if isinstance(exc, (_modality_error(), ModelError)):
        return 422
    if isinstance(exc, (DataError, OrgansegError, *_MALFORMED)):
        return 400
    return 500


def grpc_status(exc: BaseException) -> grpc.StatusCode:
    """gRPC status of a failed call, the counterpart of :func:`http_status`."""
    if isinstance(exc, RequestTooLarge):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    if isinstance(exc, ModelError):
        return grpc.StatusCode.FAILED_PRECONDITION
    if isinstance(exc, (DataError, OrgansegError, *_MALFORMED)):
        return grpc.StatusCode.INVALID_ARGUMENT
    return grpc.StatusCode.INTERNAL


def new_request_id() -> str:
    return uuid.uuid4().hex[:16]


def _message(exc: BaseException, request_id: str, internal: bool) -> str:
    if internal:  # the traceback is logged with the request's line, not here (once per request)
        return f"internal error (request id {request_id}); the server log has the details"
    return str(exc)


def http_error(exc: BaseException, request_id: str | None = None) -> tuple[int, dict[str, str]]:
    """``(status, JSON body)`` for ``exc``; a 5xx body holds only the request id."""
    request_id = request_id or new_request_id()
    status = http_status(exc)
    internal = status >= 500
    body = {
        "error": _message(exc, request_id, internal),
        "type": "InternalError" if internal else type(exc).__name__,
        "request_id": request_id,
    }
    return status, body


def grpc_error(exc: BaseException, request_id: str | None = None) -> tuple[grpc.StatusCode, str]:
    """``(status code, details)`` for ``exc``; INTERNAL details hold only the request id."""
    request_id = request_id or new_request_id()
    code = grpc_status(exc)
    return code, _message(exc, request_id, code is grpc.StatusCode.INTERNAL)
