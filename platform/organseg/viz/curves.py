"""Learning curves of a training run: one PNG beside the model directory's members."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_learning_curves(
    model_dir: Path, histories: dict[str, list[dict[str, Any]]]
) -> Path | None:
    """``learning_curves.png`` in ``model_dir``: every member's training loss and validation Dice per
    epoch (``histories``: member name → its per-epoch metrics); None when no member has a history."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = [(name, history) for name, history in histories.items() if history]
    if not curves:
        return None
    fig, (ax_loss, ax_dice) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for name, history in curves:
        epochs = [h["epoch"] + 1 for h in history]
        ax_loss.plot(
            epochs, [h.get("train_loss", float("nan")) for h in history], marker="o", label=name
        )
        ax_dice.plot(
            epochs, [h.get("val_dice", float("nan")) for h in history], marker="o", label=name
        )
    ax_loss.set(title="training loss", xlabel="epoch", ylabel="loss")
    ax_dice.set(
        title="validation Dice (3D, mean over organs)", xlabel="epoch", ylabel="Dice", ylim=(0, 1)
    )
    for ax in (ax_loss, ax_dice):
        ax.grid(alpha=0.3)
        ax.legend()
    path = model_dir / "learning_curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
