"""Pictures people can look at: organ overlays of predictions and reference contours, training curves
and the live progress of a training run."""

from organseg.viz.flags import disagreement_flags, prediction_flags, volume_flags
from organseg.viz.overlay import (
    choose_slices,
    display_window,
    image_box,
    render_overlays,
    render_slice,
)

__all__ = [
    "choose_slices",
    "disagreement_flags",
    "display_window",
    "image_box",
    "prediction_flags",
    "render_overlays",
    "render_slice",
    "volume_flags",
]
