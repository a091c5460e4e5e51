"""Request ids, structured (JSON) request logs and the bodies of error answers.

A request id comes from the client (``X-Request-ID`` / gRPC ``request_id`` metadata, which Ray Serve also
uses for its own logs) or is generated; it is returned in a header / trailing metadata and in every
error body. A server error (5xx / INTERNAL) says only "internal error" and the request id: its traceback
goes to the log under that id, never to the client (no pids, addresses or actor names on the wire).
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Any

REQUEST_ID_HEADER = "x-request-id"
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

logger = logging.getLogger("organseg.requests")


def new_request_id(supplied: str | None = None) -> str:
    """The client's id when it is a sane token, else a fresh one (ids end up in logs and headers)."""
    if supplied and _VALID_ID.match(supplied):
        return supplied
    return uuid.uuid4().hex


def serve_request_id() -> str | None:
    """The id Ray Serve assigned to the request being handled (taken from the client when it sent one)."""
    try:
        from ray.serve.context import _get_serve_request_context  # no public accessor in 2.60

        return _get_serve_request_context().request_id or None
    except Exception:  # outside a replica (unit tests, local use)
        return None


class ServiceOverloaded(Exception):
    """The graph is full (a deployment's queue overflowed): 503 + Retry-After / RESOURCE_EXHAUSTED."""

    def __init__(self, retry_after_s: float = 1.0) -> None:
        super().__init__("the service is at capacity; retry after a short wait")
        self.retry_after_s = retry_after_s


class BodyTimeout(Exception):
    """The client stopped sending its request body (HTTP 408)."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(f"request body stalled: no data for {timeout_s:g} s")


class Unauthenticated(Exception):
    """Missing or wrong bearer token (HTTP 401, gRPC UNAUTHENTICATED)."""


#: Status recorded for a request its client gave up on (deadline passed, connection closed): nginx's
#: "client closed request". Nobody receives it; the log line and the metrics say ``cancelled``.
CANCELLED = 499


def is_cancellation(exc: BaseException) -> bool:
    """``exc`` means the request was cancelled (by its caller, a deadline or a closed connection)."""
    import asyncio

    from ray.exceptions import TaskCancelledError
    from ray.serve.exceptions import RequestCancelledError

    return isinstance(exc, (asyncio.CancelledError, RequestCancelledError, TaskCancelledError))


def ops_status(exc: BaseException) -> int | None:
    """The HTTP status of the failures this package owns (overload, stalled body, auth, a cancelled
    request); else None."""
    from ray.serve.exceptions import BackPressureError

    if isinstance(exc, Unauthenticated):
        return 401
    if isinstance(exc, BodyTimeout):
        return 408
    if isinstance(exc, (ServiceOverloaded, BackPressureError)):
        return 503
    if is_cancellation(exc):
        return CANCELLED
    return None


def retry_after_s(exc: BaseException) -> float | None:
    from ray.serve.exceptions import BackPressureError

    if isinstance(exc, ServiceOverloaded):
        return exc.retry_after_s
    if isinstance(exc, BackPressureError):
        return exc.retry_after_s or 1.0
    return None


def error_body(exc: BaseException, status: int, request_id: str) -> dict[str, Any]:
    """What a client sees: the message for its own mistakes (and for overload, auth and stalled
    uploads), only the request id for ours (``organseg.serve.errors`` words it and logs the traceback)."""
    if ops_status(exc) is None:
        from organseg.serve.errors import http_error

        return http_error(exc, request_id)[1]
    return {"error": str(exc), "type": type(exc).__name__, "request_id": request_id}


def grpc_details(exc: BaseException, status: int, request_id: str) -> str:
    """gRPC status details: the same message as the HTTP body, ending in ``[request_id=...]`` (clients
    tell organseg's own answers from a proxy's by it)."""
    return f"{error_body(exc, status, request_id)['error']} [request_id={request_id}]"


@dataclass
class RequestRecord:
    """What one request's log line says; routes fill in what they learn (modality, slices, timings)."""

    request_id: str
    protocol: str
    route: str
    started: float = field(default_factory=time.perf_counter)
    fields: dict[str, Any] = field(default_factory=dict)

    def update(self, **values: Any) -> None:
        self.fields.update({k: v for k, v in values.items() if v is not None})

    def line(self, outcome: str, status: int | str) -> dict[str, Any]:
        return {
            "event": "request",
            "request_id": self.request_id,
            "protocol": self.protocol,
            "route": self.route,
            "status": status,
            "outcome": outcome,
            "duration_s": round(time.perf_counter() - self.started, 4),
            **self.fields,
        }


current: contextvars.ContextVar[RequestRecord | None] = contextvars.ContextVar(
    "organseg_request", default=None
)


def record(**values: Any) -> None:
    """Add fields to the current request's log line (no-op outside a request)."""
    rec = current.get()
    if rec is not None:
        rec.update(**values)


def outcome_of(status: int) -> str:
    if status < 400:
        return "ok"
    if status in (401, 403):
        return "unauthenticated"
    if status == 408:
        return "timeout"
    if status == CANCELLED:
        return "cancelled"
    if status == 503:
        return "overloaded"
    return "client_error" if status < 500 else "server_error"


class JsonFormatter(logging.Formatter):
    """One JSON object per line; a traceback, when there is one, goes into ``traceback``."""

    def format(self, rec: logging.LogRecord) -> str:
        payload = rec.msg if isinstance(rec.msg, dict) else {"message": rec.getMessage()}
        payload = {"ts": round(rec.created, 3), "level": rec.levelname, **payload}
        if rec.exc_info:
            payload["traceback"] = "".join(traceback.format_exception(*rec.exc_info))
        return json.dumps(payload, default=str)


def configure_logging() -> None:
    """Request lines go to the replica's stderr (Ray's worker log files) as JSON, once per process."""
    if any(isinstance(h.formatter, JsonFormatter) for h in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def log_request(rec: RequestRecord, status: int, exc: BaseException | None = None) -> None:
    """The request's one log line; a server error carries its traceback under the request id."""
    outcome = outcome_of(status)
    line = rec.line(outcome, status)
    if exc is not None:
        line["error_type"] = type(exc).__name__
    if outcome == "server_error" and exc is not None:
        logger.error(line, exc_info=(type(exc), exc, exc.__traceback__))
    else:
        logger.info(line)
    from organseg.serve.ops import metrics

    metrics.observe_request(rec, outcome)
