"""``--overlay`` on ``organseg predict --local`` and ``organseg evaluate``; DICOM-SEG from predict."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from organseg.cli import app
from organseg.ensemble.spec import EnsembleSpec, MemberEntry, save_spec
from organseg.io import write_volume_file
from organseg.io.volume import Geometry, Modality, Volume
from organseg.models import create_member
from organseg.preprocess.config import PreprocessConfig

runner = CliRunner()
KWARGS = {"base_channels": 8, "depth": 4}


def read(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def is_colour(pixels: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    return np.all(pixels == np.asarray(colour), axis=-1)


@pytest.fixture(scope="module")
def liver_everywhere_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model directory whose one untrained member says "liver" everywhere: its output layer is
    zeroed with a bias of +4 (probability 0.98), so the prediction is known without training."""
    model_dir = tmp_path_factory.mktemp("model")
    member = create_member("attention_unet", 1, 1, encoder_weights=None, **KWARGS)
    head = [m for m in member.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    assert head.out_channels == 1
    with torch.no_grad():
        head.weight.zero_()
        head.bias.fill_(4.0)
    (model_dir / "attn").mkdir()
    torch.save(member.state_dict(), model_dir / "attn" / "model.pt")
    spec = EnsembleSpec(
        name="liver-everywhere",
        task=2,
        organs=["liver"],
        preprocess=PreprocessConfig(size=64),
        members=[
            MemberEntry(
                name="attn",
                arch="attention_unet",
                kwargs=KWARGS,
                in_channels=1,
                organs=["liver"],
                modalities=[Modality.CT],
                weights="attn/model.pt",
            )
        ],
    )
    save_spec(spec, model_dir)
    return model_dir


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
    shown = read(slices[0])[:256]  # 64² synthetic slices are shown 4x enlarged
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
        shown = read(path)[:512]
        green = is_colour(shown, (0, 255, 0))
        yellowish = (shown[..., 0] == shown[..., 1]) & (shown[..., 0] - shown[..., 2] >= 100)
        assert green.any(), path.name
        assert yellowish.any(), path.name
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
    shown = read(overlay / "slice_001.png")[:32]
    yellow = is_colour(shown, (102, 102, 0))
    green = is_colour(shown, (0, 255, 0))
    np.testing.assert_array_equal(yellow | green | is_colour(shown, (0, 0, 0)), True)
    np.testing.assert_array_equal(yellow, (pred[1] == 1) & ~green)
    assert green[8, 30:90].all()  # the reference's top edge


def test_evaluate_dataset_refuses_overlay(synth_root: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["evaluate", str(synth_root), str(tmp_path), "--overlay", str(tmp_path / "o")]
    )
    assert result.exit_code != 0
    assert "single case" in str(result.exception)
