"""Pictures people can look at: organ overlays of predictions and reference contours."""

from organseg.viz.overlay import choose_slices, display_window, render_overlays, render_slice

__all__ = ["choose_slices", "display_window", "render_overlays", "render_slice"]
