"""Volumes for 3D members: the prepared grid resampled to a member's spacing, cached, and cut into patches.

A 3D member sees the same normalised pixels as the 2D members: the slice cache's prepared volume
``(Z, C, S, S)`` (and, when serving, :func:`~organseg.ensemble.predictor.prepare_input`'s identical array)
is resampled once to the member's voxel spacing with :func:`to_member_grid`. Training reads those
resampled volumes from a memory-mapped cache beside the slice cache; :class:`PatchDataset` cuts
foreground-oversampled patches from them (nnU-Net's sampling) and augments them with MONAI transforms.

Layout of ``<slice cache>/volumes/<key>/`` (``key`` hashes the spacing and the slice cache's config)::

    index.json             samples: file, shape, intensity statistics (also per channel when the
                           slice cache stacks a dataset's channels)
    images/<id>.npy        (C, D, H, W) float16 on the member's grid
    labels/<id>.npy        (D, H, W) uint8 organ label ids
    foreground/<id>.npy    (N, 3) int32 organ voxel coordinates (a random subset), for oversampling
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from organseg.io.atomic import write_text_atomic
from organseg.labels import IGNORE_TARGET
from organseg.organs import ORGAN_LABELS
from organseg.preprocess.channels import to_channels
from organseg.preprocess.dataset import SliceCache, _locked, _save_atomic, safe_id
from organseg.preprocess.volume_config import VolumeConfig

#: Foreground coordinates kept per volume: plenty for sampling, small on disk.
MAX_FOREGROUND = 20_000


def member_shape(
    shape_zyx: Sequence[int], spacing_xyz: Sequence[float], target_xyz: Sequence[float]
) -> tuple[int, int, int]:
    """Voxels per axis (z, y, x) covering the same field of view at ``target_xyz`` spacing."""
    z, y, x = shape_zyx
    sx, sy, sz = spacing_xyz
    tx, ty, tz = target_xyz
    return (
        max(1, round(z * sz / tz)),
        max(1, round(y * sy / ty)),
        max(1, round(x * sx / tx)),
    )


def to_member_grid(
    array_zchw: np.ndarray | torch.Tensor,
    spacing_xyz: Sequence[float],
    target_xyz: Sequence[float],
    is_label: bool = False,
) -> torch.Tensor:
    """``(Z, C, H, W)`` image (or ``(Z, H, W)`` labels) → ``(C, D', H', W')`` float32 (labels ``(D', H', W')``
    uint8) at the member's spacing, over the same field of view (trilinear / nearest, edges aligned as
    in :func:`~organseg.preprocess.resample.resize_slices`)."""
    if isinstance(array_zchw, np.ndarray):  # a copy: memory maps are read-only
        tensor = torch.from_numpy(np.array(array_zchw, dtype=np.uint8 if is_label else np.float32))
    else:
        tensor = array_zchw
    # (1, 1, Z, H, W) labels or (1, C, Z, H, W) image
    volume = tensor[None, None].float() if is_label else tensor.float().permute(1, 0, 2, 3)[None]
    size = member_shape(volume.shape[2:], spacing_xyz, target_xyz)
    if tuple(volume.shape[2:]) != size:
        mode = (
            {"mode": "nearest-exact"} if is_label else {"mode": "trilinear", "align_corners": False}
        )
        volume = F.interpolate(volume, size=size, **mode)
    return volume[0, 0].to(torch.uint8) if is_label else volume[0]


def from_member_grid(probs_kdhw: torch.Tensor, shape_zyx: Sequence[int]) -> torch.Tensor:
    """``(K, D', H', W')`` probabilities back to the prepared grid as ``(Z, K, H, W)`` (trilinear)."""
    volume = probs_kdhw[None].float()
    if tuple(volume.shape[2:]) != tuple(shape_zyx):
        volume = F.interpolate(volume, size=tuple(shape_zyx), mode="trilinear", align_corners=False)
    return volume[0].permute(1, 0, 2, 3)


#: Intensity statistics of a volume: ``(mean, std)`` pooled over its channels, or per channel
#: ``([mean per channel], [std per channel])``.
IntensityStats = tuple[float, float] | tuple[Sequence[float], Sequence[float]]


def apply_intensity(
    image: torch.Tensor,
    mode: str,
    stats: IntensityStats | None = None,
    per_channel: bool = False,
) -> torch.Tensor:
    """The member's intensity convention on top of the shared preprocessing (see VolumeConfig.intensity).

    ``zscore`` uses the whole volume's mean and standard deviation (``stats`` when already known);
    with ``per_channel`` each channel of the ``(C, D, H, W)`` volume its own, as nnU-Net normalises
    the channels of a case (a dataset's stacked channels, e.g. two CT phases or T1 and T2, need not
    share a scale). The T1 in/out stack keeps the pooled statistics: two echoes of one series.
    """
    if mode == "zscore" and per_channel:
        if stats is None:
            mean, std = image.mean(dim=(1, 2, 3)), image.std(dim=(1, 2, 3))
        else:
            mean = torch.as_tensor(stats[0], dtype=image.dtype)
            std = torch.as_tensor(stats[1], dtype=image.dtype)
        shape = (-1, *([1] * (image.dim() - 1)))
        return (image - mean.view(shape)) / std.clamp_min(1e-6).view(shape)
    if mode == "zscore":
        mean, std = stats if stats is not None else (float(image.mean()), float(image.std()))
        return (image - mean) / max(std, 1e-6)
    if mode == "symmetric":
        return image * 2.0 - 1.0
    return image


def volume_channels(x: torch.Tensor, in_channels: int) -> torch.Tensor:
    """:func:`~organseg.preprocess.channels.to_channels` for one ``(C, D, H, W)`` volume."""
    if x.shape[0] == in_channels:
        return x
    return to_channels(x.transpose(0, 1), in_channels).transpose(0, 1)


def stacks_dataset_channels(cache: SliceCache) -> bool:
    """Whether the cache's channels are a dataset's stacked channels (``preprocess.channels``), each
    z-scored on its own by 3D members, rather than one series (or the T1 in/out stack)."""
    return cache.cfg.channels is not None


def _key(cache: SliceCache, spacing: Sequence[float]) -> str:
    blob = json.dumps(["head-first", cache.fingerprint, [round(float(s), 4) for s in spacing]])
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


class VolumeCache:
    """Samples of a slice cache resampled to one spacing, memory-mapped on first use in each process."""

    def __init__(
        self,
        root: Path,
        index: dict[str, Any],
        label_values: dict[str, int] | None = None,
        ignore: int | None = None,
        per_channel: bool = False,
    ) -> None:
        self.root = root
        self.index = index
        #: Label value of each organ in the label maps (the slice cache's; CHAOS ids by default).
        self.label_values = dict(label_values or ORGAN_LABELS)
        #: Value of the ignore label's voxels (None: every voxel is annotated).
        self.ignore = ignore
        #: The slice cache stacks a dataset's channels: z-scored per channel (:func:`apply_intensity`).
        self.per_channel = per_channel
        self._open: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    @classmethod
    def build(
        cls, cache: SliceCache, sample_ids: Sequence[str], spacing: Sequence[float]
    ) -> VolumeCache:
        """Resample the samples not cached yet (under the cache lock: parallel members take turns)."""
        root = cache.root / "volumes" / _key(cache, spacing)
        per_channel = stacks_dataset_channels(cache)
        for sub in ("images", "labels", "foreground"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        with _locked(root / ".lock"):
            path = root / "index.json"
            index = (
                json.loads(path.read_text())
                if path.is_file()
                else {"spacing": list(spacing), "samples": {}}
            )
            for sample_id in sample_ids:
                record = cache.sample(sample_id)
                entry = index["samples"].get(sample_id)
                if (
                    entry is not None
                    and entry["source"] == record.source_fingerprint
                    and (not per_channel or "channel_mean" in entry)
                ):
                    continue
                index["samples"][sample_id] = cls._build_one(
                    cache, sample_id, root, spacing, per_channel
                )
                write_text_atomic(path, json.dumps(index))
        return cls(root, index, cache.label_values, cache.ignore, per_channel)

    @staticmethod
    def _build_one(
        cache: SliceCache,
        sample_id: str,
        root: Path,
        spacing: Sequence[float],
        per_channel: bool = False,
    ) -> dict[str, Any]:
        record = cache.sample(sample_id)
        images, labels = cache.volume(sample_id)
        if (
            record.geometry.direction_matrix[2, 2] < 0
        ):  # head-first, as 3D members always see volumes
            images, labels = images[::-1], labels[::-1]
        prepared_spacing = _prepared_spacing(record, cache.cfg.size)
        image = to_member_grid(np.asarray(images), prepared_spacing, spacing)
        label = to_member_grid(np.asarray(labels), prepared_spacing, spacing, is_label=True).numpy()
        name = safe_id(sample_id)
        _save_atomic(root / "images" / f"{name}.npy", image.numpy().astype(np.float16))
        _save_atomic(root / "labels" / f"{name}.npy", label)
        foreground = label > 0
        if cache.ignore is not None:  # unannotated voxels are no organ to centre a patch on
            foreground &= label != cache.ignore
        coords = np.argwhere(foreground).astype(np.int32)
        if len(coords) > MAX_FOREGROUND:
            pick = np.random.default_rng(0).choice(len(coords), MAX_FOREGROUND, replace=False)
            coords = coords[np.sort(pick)]
        _save_atomic(root / "foreground" / f"{name}.npy", coords)
        entry = {
            "file": name,
            "shape": list(label.shape),
            "source": record.source_fingerprint,
            "mean": float(image.mean()),
            "std": float(image.std()),
        }
        if per_channel:  # only then: single-channel and T1 indexes stay as they were
            entry["channel_mean"] = [float(v) for v in image.mean(dim=(1, 2, 3))]
            entry["channel_std"] = [float(v) for v in image.std(dim=(1, 2, 3))]
        return entry

    def volume(self, sample_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(image (C, D, H, W), labels (D, H, W), foreground coordinates (N, 3))`` memory maps."""
        if sample_id not in self._open:
            name = self.index["samples"][sample_id]["file"]
            self._open[sample_id] = tuple(  # type: ignore[assignment]
                np.load(self.root / sub / f"{name}.npy", mmap_mode="r")
                for sub in ("images", "labels", "foreground")
            )
        return self._open[sample_id]

    def stats(self, sample_id: str) -> IntensityStats:
        """The sample's intensity statistics on the member's grid: per channel when the cache stacks
        a dataset's channels (:attr:`per_channel`), else pooled."""
        entry = self.index["samples"][sample_id]
        if self.per_channel:
            return list(entry["channel_mean"]), list(entry["channel_std"])
        return float(entry["mean"]), float(entry["std"])

    def normalise(self, sample_id: str, image: torch.Tensor, mode: str) -> torch.Tensor:
        """``image`` (the sample's volume or a patch of it) in the member's intensity convention."""
        return apply_intensity(image, mode, self.stats(sample_id), self.per_channel)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_open"] = {}
        return state


def _prepared_spacing(record: Any, size: int) -> tuple[float, float, float]:
    """Spacing (x, y, z) of a sample's prepared ``size``² grid (same field of view as the original)."""
    sx, sy, sz = record.geometry.spacing
    _, h, w = record.shape
    return (sx * w / size, sy * h / size, sz)


def crop(array: np.ndarray, start: Sequence[int], patch: Sequence[int]) -> np.ndarray:
    """``patch`` voxels of the last three axes from ``start``; zero-padded where they leave the volume."""
    spatial = array.shape[-3:]
    out = np.zeros(
        (*array.shape[:-3], *patch), dtype=np.float32 if array.dtype.kind == "f" else array.dtype
    )
    src, dst = [], []
    for s, p, n in zip(start, patch, spatial, strict=True):
        lo, hi = max(s, 0), min(s + p, n)
        src.append(slice(lo, max(lo, hi)))
        dst.append(slice(lo - s, lo - s + max(0, hi - lo)))
    out[(..., *dst)] = array[(..., *src)]
    return out


class PatchDataset(Dataset):
    """Training patches ``(image (C, d, h, w), target (K, d, h, w))`` from a :class:`VolumeCache`.

    Item ``i`` of epoch ``e`` draws from volume ``i mod n`` with ``np.random.default_rng([seed, e, i])``:
    with probability ``foreground_fraction`` the patch is centred on a random organ voxel, else anywhere
    (nnU-Net's oversampling, so small organs are seen often enough).
    """

    def __init__(
        self,
        cache: VolumeCache,
        sample_ids: Sequence[str],
        organs: Sequence[str],
        cfg: VolumeConfig,
        in_channels: int,
        seed: int = 0,
        augment: bool = True,
    ) -> None:
        self.cache, self.sample_ids, self.cfg = cache, list(sample_ids), cfg
        self.organs, self.in_channels, self.seed, self.epoch = list(organs), in_channels, seed, 0
        self._label_ids = np.asarray([cache.label_values[o] for o in organs], np.uint8)[
            :, None, None, None
        ]
        self._ignore = cache.ignore
        from organseg.preprocess.augment3d import build_augment3d

        self.augment = build_augment3d(cfg.augment) if augment and cfg.augment else None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.sample_ids) * self.cfg.patches_per_volume

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        sample_id = self.sample_ids[index % len(self.sample_ids)]
        image, labels, foreground = self.cache.volume(sample_id)
        patch = self.cfg.patch
        shape = labels.shape
        low = [min(0, n - p) for p, n in zip(patch, shape, strict=True)]
        high = [max(0, n - p) for p, n in zip(patch, shape, strict=True)]
        if len(foreground) and rng.random() < self.cfg.foreground_fraction:
            # centred on an organ voxel, jittered by up to a quarter patch so the organ is not always central
            centre = foreground[rng.integers(len(foreground))]
            jitter = [int(rng.integers(-(p // 4), p // 4 + 1)) for p in patch]
            start = [
                min(max(int(c) - p // 2 + j, lo), hi)
                for c, p, j, lo, hi in zip(centre, patch, jitter, low, high, strict=True)
            ]
        else:
            start = [int(rng.integers(lo, hi + 1)) for lo, hi in zip(low, high, strict=True)]
        x = torch.from_numpy(crop(image, start, patch))
        y = torch.from_numpy(crop(labels, start, patch))
        x = self.cache.normalise(sample_id, x, self.cfg.intensity)
        if self.augment is not None:
            x, y = self.augment(x, y, int(rng.integers(2**31)))
        x = volume_channels(x, self.in_channels)
        labels_np = y.numpy()
        target_np = (labels_np[None] == self._label_ids).astype(np.float32)
        if self._ignore is not None:  # left out of the loss (organseg.losses.IGNORE_TARGET)
            target_np[:, labels_np == self._ignore] = IGNORE_TARGET
        target = torch.from_numpy(target_np)
        return x.float().contiguous(), target
