"""The serving-ops building blocks without a cluster: ids, error bodies, auth, retries, temp folders."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from organseg.errors import ConfigError, DataError
from organseg.serve.ops import tempdirs
from organseg.serve.ops.auth import TokenCheck, client_token
from organseg.serve.ops.bind import bind_address
from organseg.serve.ops.requests import (
    BodyTimeout,
    JsonFormatter,
    RequestRecord,
    ServiceOverloaded,
    Unauthenticated,
    error_body,
    grpc_details,
    new_request_id,
    ops_status,
)
from organseg.serve.ops.retry import ModelVersionUnavailable, retry_reason, with_retries


def test_request_ids_keep_sane_client_ids_and_replace_others() -> None:
    assert new_request_id("abc-123_x.y:z") == "abc-123_x.y:z"
    for bad in (None, "", "a b", "x" * 200, "<script>", "id\nInjected: header"):
        generated = new_request_id(bad)
        assert generated != bad
        assert len(generated) == 32
        assert generated.isalnum()


def test_server_error_body_names_the_request_id_and_nothing_internal() -> None:
    exc = RuntimeError(
        "ActorDiedError: pid=4242, ip=10.1.2.3, actor_id=ffff, Traceback (most recent"
    )
    body = error_body(exc, 500, "req-1")
    assert body["type"] == "InternalError"
    assert body["request_id"] == "req-1"
    assert "internal error" in body["error"]
    assert "req-1" in body["error"]
    details = grpc_details(exc, 500, "req-1")
    assert details.endswith("[request_id=req-1]")
    for leak in ("4242", "10.1.2.3", "ffff", "Traceback", "Actor"):
        assert leak not in json.dumps(body)
        assert leak not in details
    # a client's own mistake keeps its message
    assert (
        error_body(DataError("field 'shape' is bad"), 400, "r")["error"] == "field 'shape' is bad"
    )


def test_ops_statuses() -> None:
    from ray.serve.exceptions import BackPressureError

    assert ops_status(Unauthenticated("x")) == 401
    assert ops_status(BodyTimeout(1.0)) == 408
    assert ops_status(ServiceOverloaded()) == 503
    assert ops_status(BackPressureError(3, 2)) == 503
    assert ops_status(ValueError("x")) is None
    assert error_body(BackPressureError(3, 2), 503, "r")["type"] == "BackPressureError"


def test_json_log_line_carries_traceback_only_in_the_log() -> None:
    rec = RequestRecord("rid-7", "http", "/v1/segment")
    rec.update(modality="CT", slices=12, model_version="m:abc", timings_s={"members": 0.2})
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logging.LogRecord(
            "organseg.requests", logging.ERROR, __file__, 1, rec.line("server_error", 500), None,
            sys.exc_info(),
        )  # fmt: skip
    line = json.loads(JsonFormatter().format(record))
    assert line["request_id"] == "rid-7"
    assert line["modality"] == "CT"
    assert line["slices"] == 12
    assert line["model_version"] == "m:abc"
    assert line["outcome"] == "server_error"
    assert "RuntimeError: boom" in line["traceback"]


def test_token_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    TokenCheck(env_token="").check(None)  # off: anything goes
    check = TokenCheck(env_token="s3cret")
    check.check("Bearer s3cret")
    check.check("bearer s3cret")
    for bad in (None, "", "s3cret", "Bearer", "Bearer wrong", "Basic s3cret", "Bearer s3cret2"):
        with pytest.raises(Unauthenticated):
            check.check(bad)
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    by_file = TokenCheck(str(token_file), env_token="")
    by_file.check("Bearer from-file")
    token_file.write_text("rotated-token")  # a rotated Secret applies without a restart
    os.utime(token_file, (1, 1))
    with pytest.raises(Unauthenticated):
        by_file.check("Bearer from-file")
    by_file.check("Bearer rotated-token")
    token_file.unlink()  # gone: fail closed
    with pytest.raises(Unauthenticated):
        by_file.check("Bearer rotated-token")
    with pytest.raises(ConfigError, match="cannot read"):
        TokenCheck(str(tmp_path / "missing"), env_token="")
    (tmp_path / "empty").write_text("  \n")
    with pytest.raises(ConfigError, match="empty"):
        TokenCheck(str(tmp_path / "empty"), env_token="")
    monkeypatch.setenv("ORGANSEG_API_TOKEN", "env-token")
    assert client_token() == "env-token"
    (tmp_path / "client").write_text("file-token\n")
    assert client_token(tmp_path / "client") == "file-token"


def test_retry_only_replica_failures() -> None:
    from ray.exceptions import ActorDiedError, ActorUnavailableError
    from ray.serve.exceptions import BackPressureError

    assert retry_reason(ActorDiedError()) == "replica_died"
    assert retry_reason(ActorUnavailableError("gone", None)) == "replica_unavailable"
    assert retry_reason(ModelVersionUnavailable("v")) == "model_version"
    assert retry_reason(BackPressureError(1, 1)) is None
    assert retry_reason(ValueError("bad volume")) is None

    calls = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ActorDiedError()
        return "ok"

    assert asyncio.run(with_retries(flaky, "t", budget_s=5, first_delay_s=0.01)) == "ok"
    assert len(calls) == 3

    async def model_error() -> str:
        calls.append(1)
        raise ValueError("bad volume")

    calls.clear()
    with pytest.raises(ValueError, match="bad volume"):
        asyncio.run(with_retries(model_error, "t", budget_s=5, first_delay_s=0.01))
    assert len(calls) == 1

    async def always_dead() -> str:
        calls.append(1)
        raise ActorDiedError()

    calls.clear()
    with pytest.raises(ActorDiedError):
        asyncio.run(with_retries(always_dead, "t", budget_s=0.2, first_delay_s=0.05))
    assert 2 <= len(calls) <= 5  # bounded by the budget


def test_private_tempdirs_are_swept_when_their_process_is_gone(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(dead.stdout)
    left = tmp_path / f"{tempdirs.PREFIX}{dead_pid}" / "organseg-dicom-x"
    left.mkdir(parents=True)
    (left / "slice.dcm").write_bytes(b"patient data")
    alive = tmp_path / f"{tempdirs.PREFIX}{os.getppid()}"
    alive.mkdir()
    import tempfile

    before = tempfile.tempdir
    try:
        mine = tempdirs.use_private_tempdir(tmp_path)
        assert Path(tempfile.gettempdir()) == mine
        assert oct(mine.stat().st_mode & 0o777) == "0o700"
    finally:
        tempfile.tempdir = before
    assert not left.parent.exists()
    assert alive.exists()


def test_sweep_takes_the_folders_of_zombies_and_of_reused_pids(tmp_path: Path) -> None:
    """A SIGKILLed replica may still be a zombie when its successor sweeps, and its pid may be reused
    later: neither keeps its folder; the sweep runs again now and then, not only at start-up."""
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])  # exits; not waited for: a zombie
    deadline = time.monotonic() + 30
    while psutil.Process(zombie.pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    undead = tmp_path / f"{tempdirs.PREFIX}{zombie.pid}"
    undead.mkdir()
    reused = tmp_path / f"{tempdirs.PREFIX}{os.getpid()}"  # this process, younger than the folder?
    older = tmp_path / f"{tempdirs.PREFIX}{os.getppid()}"
    older.mkdir()
    stamp = psutil.Process(os.getppid()).create_time() - 3600
    os.utime(older, (stamp, stamp))  # made an hour before the process now holding its pid
    reused.mkdir()
    tempdirs.sweep_now_and_then(tmp_path)
    tempdirs._last_sweep[0] = 0.0
    tempdirs.sweep_now_and_then(tmp_path)
    zombie.wait()
    assert not undead.exists()
    assert not older.exists()
    assert reused.exists()  # this process's own folder stays


def test_grpc_bind_address() -> None:
    assert bind_address("[::]:9000", "127.0.0.1") == "127.0.0.1:9000"
    assert bind_address("[::]:9000", "::1") == "[::1]:9000"
    assert bind_address("[::]:9000", "0.0.0.0") == "[::]:9000"
    assert bind_address("[::]:9000", None) == "[::]:9000"


def test_a_cancelled_caller_cancels_the_call_in_flight() -> None:
    """The graph's calls are never shielded: cancelling the caller cancels the callee's request."""

    class Pending:  # what a DeploymentResponse offers the retry loop: await and cancel()
        cancelled = False

        def __await__(self):
            return asyncio.sleep(30).__await__()

        def cancel(self) -> None:
            self.cancelled = True

    pending = Pending()

    async def caller() -> None:
        task = asyncio.ensure_future(with_retries(lambda: pending, "t", budget_s=5))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(caller())
    assert pending.cancelled


def _edge_app():
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.routing import Route

    from organseg.serve.ops import edge

    async def crash(request):
        raise KeyError("pid 4242")

    async def caught(request):
        try:
            raise KeyError("pid 4242")
        except KeyError as exc:
            return edge.error_response(exc, 500)

    async def slow(request):
        await asyncio.sleep(30)

    routes = [Route(f"/{f.__name__}", f, methods=["POST"]) for f in (crash, caught, slow)]
    return Starlette(routes=routes, middleware=[Middleware(edge.EdgeMiddleware)])  # as the router


class _Records(logging.Handler):
    """Every record of the organseg loggers while in use (they may not propagate to the root)."""

    def __enter__(self) -> list[logging.LogRecord]:
        self.records: list[logging.LogRecord] = []
        for name in ("organseg.requests", "organseg.serve"):
            logging.getLogger(name).addHandler(self)
            logging.getLogger(name).setLevel(logging.INFO)
        return self.records

    def __exit__(self, *exc: object) -> None:
        for name in ("organseg.requests", "organseg.serve"):
            logging.getLogger(name).removeHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.mark.parametrize("route", ["/crash", "/caught"])
def test_an_internal_error_is_logged_once_with_its_traceback(route: str) -> None:
    from starlette.testclient import TestClient

    with _Records() as records:
        answer = TestClient(_edge_app()).post(route, headers={"X-Request-ID": "rid-9"})
    assert answer.status_code == 500
    assert answer.json()["request_id"] == "rid-9" == answer.headers["x-request-id"]
    assert "4242" not in answer.text
    assert len(records) == 1, [r.getMessage() for r in records]
    assert records[0].exc_info is not None
    assert records[0].msg["request_id"] == "rid-9"


def test_a_cancelled_request_is_logged_as_cancelled() -> None:
    from organseg.serve.ops.requests import CANCELLED

    app = _edge_app()
    scope = {"type": "http", "method": "POST", "path": "/slow", "headers": [], "query_string": b""}

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        pass

    async def client_gives_up() -> None:
        task = asyncio.ensure_future(app(scope, receive, send))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with _Records() as records:
        asyncio.run(client_gives_up())
    (line,) = [r.msg for r in records]
    assert (line["status"], line["outcome"]) == (CANCELLED, "cancelled")
