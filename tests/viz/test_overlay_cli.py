"""``--overlay`` on ``organseg predict --local`` and ``organseg evaluate``; DICOM-SEG from predict."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
from PIL import Image
from typer.testing import CliRunner

from organseg.cli import app
from organseg.io import write_volume_file
from organseg.io.volume import Geometry, Modality, Volume
from organseg.viz import image_box

runner = CliRunner()


def read(path: Path) -> np.ndarray:
    """The slice area of an overlay PNG, as ints."""
    x0, y0, x1, y1 = image_box(path)
    return np.asarray(Image.open(path).convert("RGB")).astype(int)[y0:y1, x0:x1]


def is_colour(pixels: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    return np.all(pixels == np.asarray(colour), axis=-1)


def test_predict_writes_overlays_and_dicom_seg(
    liver_everywhere_model: Path, synth_root: Path, tmp_path: Path
) -> None:
    series = synth_root / "Train_Sets" / "CT" / "1" / "DICOM_anon"
    out, overlay = tmp_path / "pred.dcm", tmp_path / "overlay"
    result = runner.invoke(
        app,
        ["predict", str(series), "-o", str(out), "--local", str(liver_everywhere_model),
         "--device", "cpu", "--overlay", str(overlay)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    slices = sorted(overlay.glob("slice_*.png"))
    assert slices
    assert (overlay / "montage.png").is_file()
    shown = read(slices[0])
    assert shown.shape[:2] == (256, 256)  # 64² synthetic slices are shown 4x enlarged
    r, g, b = shown[..., 0], shown[..., 1], shown[..., 2]
    # Liver everywhere: 0.6 grey + 0.4 yellow, so red equals green and exceeds blue by 102.
    assert np.array_equal(r, g)
    assert np.all(np.abs(r - b - 102) <= 1)
    assert len(np.unique(b)) > 10  # the CT image shows through
    seg = hd.seg.segread(out)
    assert seg.number_of_segments == 1
    assert seg.get_segment_description(1).SegmentLabel == "Liver"
    assert seg.NumberOfFrames == len(list(series.iterdir()))  # every slice holds liver


def test_evaluate_real_case_overlay(chaos_sample: Path, tmp_path: Path) -> None:
    case = chaos_sample / "Train_Sets" / "CT" / "1"
    submission = chaos_sample / "sample-submission" / "CT" / "1"
    overlay = tmp_path / "overlay"
    result = runner.invoke(
        app,
        ["evaluate", str(case / "Ground"), str(submission), "--dicom", str(case / "DICOM_anon"),
         "--overlay", str(overlay)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    slices = sorted(overlay.glob("slice_*.png"))
    assert 3 <= len(slices) <= 6
    assert (overlay / "montage.png").is_file()
    for path in slices:
        shown = read(path)
        outline = is_colour(shown, (255, 255, 0))  # the reference liver, full strength
        fill = (shown[..., 0] == shown[..., 1]) & (shown[..., 0] - shown[..., 2] >= 100) & ~outline
        assert outline.any(), path.name
        assert fill.any(), path.name
        assert len(np.unique(shown[..., 2])) > 50  # the CT image is drawn, not black


def test_evaluate_volume_files_overlay_on_black(tmp_path: Path) -> None:
    geometry = Geometry(spacing=(0.8, 0.8, 3.0))
    ref = np.zeros((4, 32, 256), np.uint8)
    ref[1:3, 8:20, 30:90] = 1
    pred = np.roll(ref, 5, axis=2)
    write_volume_file(Volume(ref, geometry, Modality.CT), tmp_path / "ref.nii.gz")
    write_volume_file(Volume(pred, geometry, Modality.CT), tmp_path / "pred.nii.gz")
    overlay = tmp_path / "overlay"
    result = runner.invoke(
        app,
        ["evaluate", str(tmp_path / "ref.nii.gz"), str(tmp_path / "pred.nii.gz"),
         "--overlay", str(overlay)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in overlay.iterdir()) == ["montage.png", "slice_002.png"]
    shown = read(overlay / "slice_002.png")  # z=1, counted from 1
    yellow = is_colour(shown, (102, 102, 0))
    outline = is_colour(shown, (255, 255, 0))
    np.testing.assert_array_equal(yellow | outline | is_colour(shown, (0, 0, 0)), True)
    np.testing.assert_array_equal(yellow, (pred[1] == 1) & ~outline)
    assert outline[8, 30:90].all()  # the reference's top edge


def test_evaluate_dataset_refuses_overlay(synth_root: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["evaluate", str(synth_root), str(tmp_path), "--overlay", str(tmp_path / "o")]
    )
    assert result.exit_code != 0
    assert "single case" in str(result.exception)
