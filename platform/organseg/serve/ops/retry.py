"""Bounded retries of calls between deployments whose replica died or was briefly unavailable.

Ray Serve does not retry a request whose replica died mid-call; requests to this graph are idempotent
(the same volume gives the same masks), so the caller retries them with exponential backoff until a
time budget runs out. Only failures of the *replica* are retried: a model or input error raised by the
callee (any other exception, including one wrapped in ``RayTaskError``) is raised at once, and a full
queue (``BackPressureError``) goes back to the client as 503 / RESOURCE_EXHAUSTED, which the clients
retry after ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from organseg.serve.ops import metrics

T = TypeVar("T")
logger = logging.getLogger(__name__)


class ModelVersionUnavailable(Exception):
    """The callee does not (yet, or any more) hold the model version the caller asked for; retryable."""


def retry_reason(exc: BaseException) -> str | None:
    """Why ``exc`` is worth retrying (a dead/unavailable replica, a version switch), or None."""
    from ray.exceptions import ActorUnavailableError, RayActorError
    from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

    if isinstance(exc, BackPressureError):
        return None
    if isinstance(exc, ModelVersionUnavailable):
        return "model_version"
    if isinstance(exc, ActorUnavailableError):
        return "replica_unavailable"
    if isinstance(exc, RayActorError):
        return "replica_died"
    if isinstance(exc, DeploymentUnavailableError):
        return "deployment_unavailable"
    return None


async def with_retries(
    call: Callable[[], Awaitable[T]],
    target: str,
    budget_s: float = 60.0,
    first_delay_s: float = 0.1,
    max_delay_s: float = 2.0,
) -> T:
    """``await call()``, retried on replica failures with backoff until ``budget_s`` has passed.

    Never shields the call from cancellation: when the caller is cancelled (its client's deadline
    passed), the call in flight is cancelled too, explicitly, so the callee stops its work even where
    Serve would not carry the cancellation down by itself.
    """
    deadline = time.monotonic() + budget_s
    delay = first_delay_s
    attempt = 1
    while True:
        response = call()
        try:
            return await response
        except asyncio.CancelledError:
            cancel = getattr(response, "cancel", None)  # a DeploymentResponse
            if cancel is not None:
                cancel()
            raise
        except Exception as exc:
            reason = retry_reason(exc)
            if reason is None or time.monotonic() + delay > deadline:
                raise
            metrics.count_retry(target, reason)
            logger.warning(
                "call to %s failed (%s, attempt %d); retrying in %.2f s",
                target, reason, attempt, delay,
            )  # fmt: skip
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay_s)
            attempt += 1
