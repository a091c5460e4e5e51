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
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import tenacity

from organseg.serve.ops import metrics

T = TypeVar("T")
logger = logging.getLogger(__name__)

#: Seconds a call between deployments is retried before the request fails: the one default of the
#: serve config's ``retry_budget_s`` and of every deployment that retries.
RETRY_BUDGET_S = 60.0


def backoff(
    retryable: Callable[[BaseException], bool],
    *,
    budget_s: float,
    first_delay_s: float,
    max_delay_s: float,
    attempts: int | None = None,
    wait: tenacity.wait.wait_base | None = None,
    before_sleep: Callable[[tenacity.RetryCallState], None] | None = None,
    asynchronous: bool = False,
) -> tenacity.BaseRetrying:
    """The project's one retry policy (tenacity): exponential backoff from ``first_delay_s`` doubling up
    to ``max_delay_s``, given up when the next wait would pass ``budget_s`` (or after ``attempts``);
    only what ``retryable`` accepts is retried, and the last error is raised as it was. ``wait``
    replaces the plain doubling (the clients add jitter and honour ``Retry-After``)."""
    stop: Any = tenacity.stop_before_delay(budget_s)
    if attempts is not None:
        stop = stop | tenacity.stop_after_attempt(attempts)
    kwargs: dict[str, Any] = {
        "retry": tenacity.retry_if_exception(retryable),
        "wait": wait or tenacity.wait_exponential(multiplier=first_delay_s, max=max_delay_s),
        "stop": stop,
        "reraise": True,
    }
    if before_sleep is not None:
        kwargs["before_sleep"] = before_sleep
    return tenacity.AsyncRetrying(**kwargs) if asynchronous else tenacity.Retrying(**kwargs)


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
    budget_s: float = RETRY_BUDGET_S,
    first_delay_s: float = 0.1,
    max_delay_s: float = 2.0,
) -> T:
    """``await call()``, retried on replica failures with backoff until ``budget_s`` has passed.

    Never shields the call from cancellation: when the caller is cancelled (its client's deadline
    passed), the call in flight is cancelled too, explicitly, so the callee stops its work even where
    Serve would not carry the cancellation down by itself.
    """

    async def once() -> T:
        response = call()
        try:
            return await response
        except asyncio.CancelledError:
            cancel = getattr(response, "cancel", None)  # a DeploymentResponse
            if cancel is not None:
                cancel()
            raise

    def note(state: tenacity.RetryCallState) -> None:
        failure = state.outcome.exception() if state.outcome else None
        reason = retry_reason(failure) if failure else None
        metrics.count_retry(target, reason or "unknown")
        delay = state.next_action.sleep if state.next_action else 0.0
        logger.warning(
            "call to %s failed (%s, attempt %d); retrying in %.2f s",
            target, reason, state.attempt_number, delay,
        )  # fmt: skip

    retrying = backoff(
        lambda exc: retry_reason(exc) is not None,
        budget_s=budget_s,
        first_delay_s=first_delay_s,
        max_delay_s=max_delay_s,
        before_sleep=note,
        asynchronous=True,
    )
    return await retrying(once)
