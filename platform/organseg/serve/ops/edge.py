"""Where requests enter: an ASGI middleware for every HTTP route and a wrapper for every gRPC method.

Both do the same things in the same order: take or make the request id, check the bearer token (health
stays open), run the handler, turn any escaped exception into an error answer that carries the request
id (a 5xx never shows a traceback), and write one JSON log line. The HTTP side also bounds how long a
client may stall while sending its body (408), so slow senders cannot hold the router's slots.

A request whose client goes away (a gRPC deadline, a closed HTTP connection, Serve's
``request_timeout_s``) is cancelled by Serve: the cancellation travels down the graph (Ray cancels
the router's task recursively, the ensemble's and members' calls included, and ``ops.retry`` cancels
the call it awaits as well) and is let through here untouched, so their work stops too; it is logged
and counted as ``cancelled`` (status 499).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from organseg.serve.ops.auth import OPEN_GRPC_METHODS, OPEN_HTTP_PATHS, TokenCheck
from organseg.serve.ops.requests import (
    CANCELLED,
    REQUEST_ID_HEADER,
    BodyTimeout,
    RequestRecord,
    configure_logging,
    current,
    error_body,
    grpc_details,
    log_request,
    new_request_id,
    ops_status,
    retry_after_s,
    serve_request_id,
)

QUIET_PATHS = OPEN_HTTP_PATHS  # probes: answered and counted, not logged line by line


@dataclass
class EdgeSettings:
    """Per-process settings; the router replica sets them from the application's args."""

    auth: TokenCheck = field(default_factory=lambda: TokenCheck(env_token=""))
    body_timeout_s: float | None = 30.0


settings = EdgeSettings()


def configure(auth: TokenCheck, body_timeout_s: float | None) -> None:
    settings.auth = auth
    settings.body_timeout_s = body_timeout_s
    configure_logging()


def _headers_for(exc: BaseException, status: int, request_id: str) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"content-type", b"application/json"),
        (REQUEST_ID_HEADER.encode(), request_id.encode()),
    ]
    delay = retry_after_s(exc)
    if delay is not None:
        headers.append((b"retry-after", str(max(1, round(delay))).encode()))
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="organseg"'))
    return headers


def error_response(
    exc: BaseException,
    status: int,
    request_id: str | None = None,
    scrub: Callable[[str], str] | None = None,
):
    """A JSON error answer for a route that caught ``exc`` (``status`` from the error mapping), under
    the request's id; ``scrub`` rewrites the message (e.g. to redact patient data a file carried)."""
    from fastapi.responses import JSONResponse

    status = ops_status(exc) or status
    rec = current.get()
    request_id = request_id or (rec.request_id if rec else None) or new_request_id()
    if rec is not None:
        rec.update(error_type=type(exc).__name__)
        rec.fields["_exc"] = exc  # so the log line of a 5xx carries the traceback
    headers = {k.decode(): v.decode() for k, v in _headers_for(exc, status, request_id)}
    headers.pop("content-type")
    body = error_body(exc, status, request_id)
    if scrub is not None:
        body["error"] = scrub(body["error"])
    return JSONResponse(body, status_code=status, headers=headers)


class EdgeMiddleware:
    """Pure ASGI middleware (no buffering of bodies, unlike BaseHTTPMiddleware)."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode().lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        path = scope.get("path", "")
        serve_id = serve_request_id()  # Serve's proxy echoes it as X-Request-ID itself
        request_id = serve_id or new_request_id(headers.get(REQUEST_ID_HEADER))
        rec = RequestRecord(request_id, "http", path)
        token = current.set(rec)
        state = {"status": 500, "started": False}
        body_done = settings.body_timeout_s is None or scope.get("method") in ("GET", "HEAD")

        async def timed_receive() -> dict:
            nonlocal body_done
            if body_done:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), settings.body_timeout_s)
            except TimeoutError:
                raise BodyTimeout(settings.body_timeout_s) from None
            if message["type"] != "http.request" or not message.get("more_body"):
                body_done = True
            return message

        async def tagged_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                state["started"] = True
                state["status"] = message["status"]
                own = REQUEST_ID_HEADER.encode()
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() != own]
                if not serve_id:
                    kept.append((own, request_id.encode()))
                message = {**message, "headers": kept}
            await send(message)

        failure: BaseException | None = None
        try:
            if path not in OPEN_HTTP_PATHS:
                settings.auth.check(headers.get("authorization"))
            await self.app(scope, timed_receive, tagged_send)
        except asyncio.CancelledError:  # the client went away: let Serve cancel the work below
            state["status"] = CANCELLED
            raise
        except Exception as exc:
            failure = exc
            status = ops_status(exc) or 500
            state["status"] = status
            if not state["started"]:
                body = json.dumps(error_body(exc, status, request_id)).encode()
                await tagged_send(
                    {
                        "type": "http.response.start",
                        "status": status,
                        "headers": _headers_for(exc, status, request_id),
                    }
                )
                await send({"type": "http.response.body", "body": body})
        finally:
            current.reset(token)
            failure = failure or rec.fields.pop("_exc", None)
            if path not in QUIET_PATHS:
                log_request(rec, state["status"], failure)


async def grpc_call(
    method: str,
    grpc_context: Any,
    handler: Callable[[], Awaitable[Any]],
    empty: Callable[[], Any],
    status_for: Callable[[BaseException], Any],
) -> Any:
    """Run one gRPC method like the middleware runs a route; ``status_for`` maps the rest of the errors."""
    import grpc

    metadata = dict(grpc_context.invocation_metadata()) if grpc_context is not None else {}
    request_id = serve_request_id() or new_request_id(metadata.get("request_id"))
    rec = RequestRecord(request_id, "grpc", method)
    token = current.set(rec)
    failure: BaseException | None = None
    status = 200
    try:
        if method not in OPEN_GRPC_METHODS:
            settings.auth.check(metadata.get("authorization"))
        return await handler()
    except asyncio.CancelledError:  # deadline passed or the client cancelled: Serve stops the work
        status = CANCELLED
        raise
    except Exception as exc:
        failure = exc
        status = ops_status(exc) or 0
        code = {
            401: grpc.StatusCode.UNAUTHENTICATED,
            408: grpc.StatusCode.DEADLINE_EXCEEDED,
            503: grpc.StatusCode.RESOURCE_EXHAUSTED,
            CANCELLED: grpc.StatusCode.CANCELLED,
        }.get(status) or status_for(exc)
        if not status:
            status = 500 if code == grpc.StatusCode.INTERNAL else 400
        if grpc_context is not None:
            grpc_context.set_code(code)
            grpc_context.set_details(grpc_details(exc, status, request_id))
            delay = retry_after_s(exc)
            trailing = [("request_id", request_id)]
            if delay is not None:
                trailing.append(("retry-after", str(max(1, round(delay)))))
            grpc_context.set_trailing_metadata(trailing)
        return empty()
    finally:
        current.reset(token)
        if method not in OPEN_GRPC_METHODS:
            log_request(rec, status, failure)
