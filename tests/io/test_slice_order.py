"""DICOM series are stacked by slice position, whatever the file names; broken stacks are refused."""

from __future__ import annotations

import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from organseg.errors import DataError, DataWarning
from organseg.io import read_dicom_geometry, read_dicom_series
from organseg.io.inspect import inspect_dataset


@pytest.fixture(scope="module")
def ordered(synth_ct_files: list[Path]):
    return read_dicom_series(synth_ct_files[0].parent)


def _copy(files: list[Path], folder: Path, names: list[str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for k, path in enumerate(files):
        shutil.copy(path, folder / (names[k] if names else path.name))
    return folder


def _uid_names(files: list[Path]) -> list[str]:
    return [f"{pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID}.dcm" for p in files]


def _assert_same(volume, ordered) -> None:
    np.testing.assert_array_equal(volume.array, ordered.array)
    assert volume.geometry.isclose(ordered.geometry, atol=1e-6)


def test_geometry_order_runs_along_the_normal(ordered, synth_ct_files: list[Path]) -> None:
    first, last = (
        pydicom.dcmread(p, stop_before_pixels=True) for p in (synth_ct_files[0], synth_ct_files[-1])
    )
    assert ordered.meta["slice_order"] == "geometry"
    assert ordered.origin[2] == pytest.approx(float(last.ImagePositionPatient[2]))  # lowest z first
    np.testing.assert_allclose(ordered.geometry.direction_matrix, np.eye(3))
    span = float(first.ImagePositionPatient[2]) - float(last.ImagePositionPatient[2])
    assert ordered.spacing[2] == pytest.approx(span / (len(synth_ct_files) - 1))
    by_name = read_dicom_series(synth_ct_files[0].parent, order="filename")
    np.testing.assert_array_equal(ordered.array, by_name.array[::-1])


@pytest.mark.parametrize("arrangement", ["uid-named", "reversed", "shuffled"])
def test_names_do_not_change_the_volume(
    ordered, synth_ct_files: list[Path], tmp_path: Path, arrangement: str
) -> None:
    n = len(synth_ct_files)
    if arrangement == "uid-named":
        names = _uid_names(synth_ct_files)
    elif arrangement == "reversed":
        names = [f"img{n - k:03d}.dcm" for k in range(n)]
    else:
        perm = np.random.default_rng(1).permutation(n)
        names = [f"slice{perm[k] + 1}.dcm" for k in range(n)]
    volume = read_dicom_series(_copy(synth_ct_files, tmp_path / "s", names))
    _assert_same(volume, ordered)
    geometry, _, _ = read_dicom_geometry(tmp_path / "s")
    assert geometry.isclose(ordered.geometry, atol=1e-6)


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_any_permutation_and_renaming_gives_the_same_labels_and_geometry(
    data, ordered, synth_ct_files: list[Path]
) -> None:
    """Property: file names and their order carry no meaning in geometry order."""
    n = len(synth_ct_files)
    perm = data.draw(st.permutations(range(n)), label="file order")
    alphabet = st.characters(whitelist_categories=("Ll", "Lu", "Nd"), max_codepoint=127)
    names = data.draw(
        st.lists(
            st.text(alphabet, min_size=1, max_size=12), min_size=n, max_size=n, unique_by=str.lower
        ),
        label="file names",
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = _copy([synth_ct_files[i] for i in perm], Path(tmp), [f"{m}.dcm" for m in names])
        volume = read_dicom_series(folder)
    _assert_same(volume, ordered)


def _rewrite(folder: Path, index: int, **changes) -> Path:
    path = sorted(folder.iterdir())[index]
    ds = pydicom.dcmread(path)
    for key, value in changes.items():
        setattr(ds, key, value)
    ds.save_as(path)
    return path


def test_bit_identical_duplicate_is_dropped(
    ordered, synth_ct_files: list[Path], tmp_path: Path
) -> None:
    folder = _copy(synth_ct_files, tmp_path / "s")
    shutil.copy(synth_ct_files[4], folder / "copy-of-5.dcm")
    with pytest.warns(DataWarning, match="duplicates InstanceNumber 5"):
        volume = read_dicom_series(folder)
    _assert_same(volume, ordered)


def test_differing_images_at_one_position_are_refused(
    synth_ct_files: list[Path], tmp_path: Path
) -> None:
    folder = _copy(synth_ct_files, tmp_path / "s")
    ds = pydicom.dcmread(synth_ct_files[4])
    ds.InstanceNumber, ds.EchoTime = 99, 20
    ds.PixelData = (ds.pixel_array + 1).astype(ds.pixel_array.dtype).tobytes()
    ds.save_as(folder / "other-echo.dcm")
    with pytest.raises(
        DataError, match=r"InstanceNumber 5 .* and InstanceNumber 99 .* same position"
    ):
        read_dicom_series(folder)


def test_missing_slice_is_refused_naming_its_neighbours(
    synth_ct_files: list[Path], tmp_path: Path
) -> None:
    folder = _copy(synth_ct_files[:6] + synth_ct_files[7:], tmp_path / "s")
    with pytest.raises(
        DataError, match=r"1 slice\(s\) missing.*InstanceNumber 8.*InstanceNumber 6"
    ):
        read_dicom_series(folder)
    # CHAOS file-name order keeps stacking (a warning) - training folders are checked by `data inspect`
    with pytest.warns(DataWarning, match="a slice may be missing"):
        read_dicom_series(folder, order="filename")


def test_mixed_sizes_and_orientations_are_refused(
    synth_ct_files: list[Path], tmp_path: Path
) -> None:
    folder = _copy(synth_ct_files, tmp_path / "tilted-one")
    _rewrite(folder, 3, ImageOrientationPatient=[1, 0, 0, 0, 0.9950042, 0.0998334])
    with pytest.raises(DataError, match=r"mixed orientations.*InstanceNumber 4"):
        read_dicom_series(folder)
    folder = _copy(synth_ct_files, tmp_path / "small-one")
    ds = pydicom.dcmread(folder / synth_ct_files[5].name)
    pixels = ds.pixel_array[:56, :56].copy()
    ds.Rows, ds.Columns = 56, 56
    ds.PixelData = pixels.tobytes()
    ds.save_as(folder / synth_ct_files[5].name)
    with pytest.raises(DataError, match=r"mixed slice sizes.*InstanceNumber 6"):
        read_dicom_series(folder)


def test_gantry_tilt_is_refused(synth_ct_files: list[Path], tmp_path: Path) -> None:
    folder = _copy(synth_ct_files, tmp_path / "s")
    for k, path in enumerate(sorted(folder.iterdir())):  # y drifts with z: a sheared stack
        ds = pydicom.dcmread(path)
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y + 0.5 * k, z]
        ds.save_as(path)
    with pytest.raises(DataError, match="gantry tilt"):
        read_dicom_series(folder)


def test_multiframe_object_reads_like_the_series(
    ordered, synth_ct_files: list[Path], tmp_path: Path
) -> None:
    """An enhanced (legacy-converted) multi-frame CT with frames in reverse order: per-frame positions."""
    import highdicom as hd

    sources = [pydicom.dcmread(p) for p in synth_ct_files]
    enhanced = hd.legacy.LegacyConvertedEnhancedCTImage(
        legacy_datasets=sources,
        series_instance_uid=hd.UID(),
        series_number=99,
        sop_instance_uid=hd.UID(),
        instance_number=1,
    )
    folder = tmp_path / "mf"
    folder.mkdir()
    enhanced.save_as(folder / "object.dcm", enforce_file_format=True)
    volume = read_dicom_series(folder)
    assert volume.meta["Modality"] == "CT"
    _assert_same(volume, ordered)


def test_inspect_warns_when_chaos_file_order_disagrees_with_positions(
    synth_root: Path, tmp_path: Path
) -> None:
    case = tmp_path / "Train_Sets" / "CT" / "1"
    shutil.copytree(synth_root / "Train_Sets" / "CT" / "1", case)
    (report,) = inspect_dataset(case)
    assert not any("disagrees" in w for w in report.warnings)
    files = sorted((case / "DICOM_anon").iterdir())
    a, b = files[2], files[7]  # swap two files' contents: names no longer follow positions
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (report,) = inspect_dataset(case)
    assert any("file-name order disagrees with slice positions" in w for w in report.warnings)
