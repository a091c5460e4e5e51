"""Live progress of members training in parallel: a tiny Ray actor fed by a Ray Train callback.

Metrics reach the driver as each epoch is reported (not when a run ends), so the table shows every
member's epoch, loss, validation Dice and ETA while they train side by side.
"""

from __future__ import annotations

import math
import time
from typing import Any

import ray
from ray.train import UserCallback
from rich.table import Table


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


def _eta(entry: dict[str, Any]) -> str:
    history = entry.get("history") or []
    if not history or entry.get("status") != "running":
        return "-"
    last = history[-1]
    epochs = int(last.get("epochs", entry.get("epochs", 0)))
    times = [h.get("epoch_time_s", 0.0) for h in history]
    remaining = max(0, epochs - int(last.get("epoch", 0)) - 1)
    seconds = remaining * (sum(times) / len(times))
    return f"{seconds // 60:.0f}m{seconds % 60:02.0f}s"


def render_table(snapshot: dict[str, dict[str, Any]], title: str = "training") -> Table:
    table = Table(title=title)
    for column in (
        "member",
        "status",
        "epoch",
        "train loss",
        "val Dice",
        "best",
        "slices/s",
        "ETA",
    ):
        table.add_column(column, justify="right" if column not in ("member", "status") else "left")
    for name, entry in sorted(snapshot.items()):
        last = (entry.get("history") or [{}])[-1]
        epochs = last.get("epochs", entry.get("epochs", "?"))

        def fmt(key: str, spec: str = ".4f", source: dict[str, Any] = last) -> str:
            value = source.get(key)
            return (
                "-"
                if value is None or (isinstance(value, float) and math.isnan(value))
                else format(value, spec)
            )

        epoch = f"{int(last['epoch']) + 1}/{epochs}" if "epoch" in last else f"0/{epochs}"
        table.add_row(
            name,
            entry.get("status", "?"),
            epoch,
            fmt("train_loss"),
            fmt("val_dice"),
            fmt("best_val_dice"),
            fmt("train_slices_per_s", ".1f"),
            _eta(entry),
        )
    return table
