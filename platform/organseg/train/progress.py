"""Progress of members training in parallel: a tiny Ray actor fed by a Ray Train callback.

Metrics reach the driver as each epoch is reported (not when a run ends); what shows them (a live table or
epoch lines) is the caller's business (:mod:`organseg.viz.progress` draws it for the command line and
the quickstart).
"""

from __future__ import annotations

import time
from typing import Any

import ray
from ray.train import UserCallback


@ray.remote(num_cpus=0)
class ProgressBoard:
    """Latest metrics and history per member; lives as long as the training command."""

    def __init__(self) -> None:
        self.members: dict[str, dict[str, Any]] = {}

    def start(self, member: str, epochs: int, status: str = "starting") -> None:
        """``status``: "starting", or "waiting for resources: …" for a member queued behind others."""
        self.members[member] = {
            "status": status,
            "epochs": epochs,
            "history": [],
            "started": time.time(),
        }

    def update(self, member: str, metrics: dict[str, Any]) -> None:
        entry = self.members.setdefault(
            member, {"status": "running", "history": [], "started": time.time()}
        )
        entry["status"] = "running"
        entry["history"].append(
            {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}
        )

    def finish(self, member: str, status: str) -> None:
        self.members.setdefault(member, {"history": []})["status"] = status

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return self.members


class ProgressCallback(UserCallback):
    """Runs on each member's Ray Train controller and forwards every report to the board."""

    def __init__(self, board: Any, member: str) -> None:
        self.board = board
        self.member = member

    def after_report(
        self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any
    ) -> None:
        if metrics:
            self.board.update.remote(self.member, metrics[0])
