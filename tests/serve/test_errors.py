"""Exceptions become answers: 4xx name the problem, 5xx carry only a request id (traceback in the log)."""

from __future__ import annotations

import logging

import grpc
import pytest

from organseg.errors import DataError, ModelError, RequestTooLarge
from organseg.serve.errors import grpc_error, http_error


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (DataError("spacing [1, 1, 1e+200] mm"), 400, grpc.StatusCode.INVALID_ARGUMENT),
        (RequestTooLarge("over the limit"), 413, grpc.StatusCode.RESOURCE_EXHAUSTED),
        (ModelError("no ensemble for MR-T1-out"), 422, grpc.StatusCode.FAILED_PRECONDITION),
    ],
)
def test_user_errors_keep_their_message(exc: Exception, status: int, code: grpc.StatusCode) -> None:
    got_status, body = http_error(exc, "rid-1")
    assert (got_status, body["error"], body["request_id"]) == (status, str(exc), "rid-1")
    assert grpc_error(exc) == (code, str(exc))


def test_our_bugs_answer_a_request_id_only(caplog: pytest.LogCaptureFixture) -> None:
    def buggy() -> None:
        raise KeyError("pid 4242 at 10.0.0.7:6379 in ServeReplica:organseg:router")

    try:
        buggy()
    except KeyError as exc:
        with caplog.at_level(logging.ERROR, logger="organseg.serve"):
            status, body = http_error(exc, "rid-2")
            code, details = grpc_error(exc, "rid-3")
    assert status == 500
    assert body == {
        "error": "internal error (request id rid-2); the server log has the details",
        "type": "InternalError",
        "request_id": "rid-2",
    }
    assert code is grpc.StatusCode.INTERNAL
    assert "rid-3" in details
    for text in (str(body), details):
        assert "4242" not in text
        assert "10.0.0.7" not in text
        assert "ServeReplica" not in text
    # the traceback is logged once, in the request's log line (tests/serve/test_ops.py), not here
    assert not caplog.records
