"""Live progress of a training run on the console: the member table and per-epoch lines.

The launcher hands a view two callables (the members' latest snapshot, and whether the run is done), so
training itself never draws anything and callers choose how progress looks.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

Snapshot = Callable[[], dict[str, dict[str, Any]]]


class LiveProgress:
    """A :data:`organseg.train.launcher.ProgressView` for a console: a live table on a terminal, one line
    per epoch otherwise (logs, CI)."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def __call__(self, snapshot: Snapshot, done: Callable[[], bool], title: str) -> None:
        """Show progress until ``done()``; ``snapshot()`` gives each member's status and history."""
        follow(snapshot, done, self.console, title)


def follow(snapshot: Snapshot, done: Callable[[], bool], console: Console, title: str) -> None:
    """Show live progress until ``done()``: a table on a terminal, epoch lines otherwise."""
    printed: dict[str, int] = {}
    if console.is_terminal:
        with Live(render_table({}, title), console=console, refresh_per_second=2) as live:
            while not done():
                live.update(render_table(snapshot(), title))
                time.sleep(1.0)
            live.update(render_table(snapshot(), title))
        return
    while True:
        finished = done()
        for name, entry in sorted(snapshot().items()):
            history = entry.get("history") or []
            for item in history[printed.get(name, 0) :]:
                console.print(
                    f"  \\[{name}] epoch {int(item.get('epoch', 0)) + 1}/{int(item.get('epochs', 0))} "
                    f"loss {item.get('train_loss', float('nan')):.4f} "
                    f"val Dice {item.get('val_dice', float('nan')):.4f} "
                    f"(best {item.get('best_val_dice', float('nan')):.4f}, "
                    f"{item.get('train_slices_per_s', 0.0):.1f} slices/s)",
                    highlight=False,
                    soft_wrap=True,
                )
            printed[name] = len(history)
        if finished:
            return
        time.sleep(1.0)


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
    """One row per member: status, epoch, loss, validation Dice (latest and best), speed and ETA."""
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
