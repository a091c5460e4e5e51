"""Slice cache and Dataset for training, plus patient-level splits.

Reading and preprocessing a DICOM series costs far more than a training step on one slice, so each
series is prepared once with :func:`~organseg.preprocess.pipeline.prepare_volume` and stored as ``.npy``;
the Dataset memory-maps those files and serves ``(image, target)`` slices, which several DataLoader
workers (or Ray workers on one node) share through the page cache.

Layout of a cache folder::

    index.json                  samples, organs, preprocessing config and fingerprints
    images/<safe id>.npy        (Z, C, size, size) cfg.cache_dtype
    labels/<safe id>.npy        (Z, size, size) uint8 label values (labels outside ``organs`` are 0;
                                the ignore label keeps its value)
    .lock                       fcntl lock serializing builders
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from organseg.datasets.refs import DatasetRef, load_ref, ref_fingerprint
from organseg.errors import ConfigError, DataError
from organseg.io.atomic import atomic_path, write_text_atomic
from organseg.io.chaos import CaseRef, load_case
from organseg.io.volume import Geometry, Modality
from organseg.labels import IGNORE_TARGET, LabelSet
from organseg.organs import ORGAN_LABELS, organ_ids
from organseg.preprocess.augment import SliceAugmenter
from organseg.preprocess.channels import to_channels
from organseg.preprocess.config import PreprocessConfig
from organseg.preprocess.modality_features import FEATURES_VERSION, series_features
from organseg.preprocess.pipeline import prepare_channels, prepare_volume
from organseg.preprocess.resample import resize_slices

#: Bumped whenever the on-disk layout or the preparation changes, so old caches rebuild
#: (2: records carry each series' modality features).
CACHE_FORMAT = 2
INDEX_NAME = "index.json"
T1_STACK_SUFFIX = "T1DUAL"


@dataclass(frozen=True)
class SampleRecord:
    """One cached sample: a series (or a stacked T1 in/out pair) of one patient.

    ``shape`` and ``geometry`` are the original image grid's, for metrics in millimetres.
    """

    id: str
    patient: str
    modality: Modality
    n_slices: int
    channels: int
    height: int
    width: int
    file: str
    modalities: tuple[Modality, ...]
    case_ids: tuple[str, ...]
    source_fingerprint: str
    labelled_slices: tuple[int, ...]
    shape: tuple[int, int, int]
    geometry: Geometry
    organ_voxels: dict[str, int] = field(default_factory=dict)
    #: Slices (prepared grid) holding each organ; ``labelled_slices`` is their union.
    organ_slices: dict[str, tuple[int, ...]] = field(default_factory=dict)
    #: Per series (keyed by modality): the modality classifier's features, computed from the series
    #: in stored units before windowing (:mod:`organseg.preprocess.modality_features`).
    modality_features: dict[str, list[float]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["modality"] = self.modality.value
        data["modalities"] = [m.value for m in self.modalities]
        data["geometry"] = asdict(self.geometry)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SampleRecord:
        data = dict(data)
        data["modality"] = Modality.parse(data["modality"])
        data["modalities"] = tuple(Modality.parse(m) for m in data["modalities"])
        data["case_ids"] = tuple(data["case_ids"])
        data["labelled_slices"] = tuple(data["labelled_slices"])
        data["shape"] = tuple(data["shape"])
        data["geometry"] = Geometry(**data["geometry"])
        data["organ_slices"] = {k: tuple(v) for k, v in data.get("organ_slices", {}).items()}
        return cls(**data)


@dataclass(frozen=True)
class _Plan:
    id: str
    patient: str
    refs: tuple[Ref, ...]  # the image series, then the T1 out-phase partner and T2 when stacked


#: A CHAOS series or one channel of an nnU-Net/MSD case.
Ref = CaseRef | DatasetRef


def _load(ref: Ref, with_label: bool) -> Any:
    return load_ref(ref, with_label) if isinstance(ref, DatasetRef) else load_case(ref, with_label)


def label_values(organs: Sequence[str], label_set: LabelSet | None) -> dict[str, int]:
    """Label value of each of ``organs``: from ``label_set``, or the CHAOS ids when it is None."""
    if label_set is None:
        return {o: ORGAN_LABELS[o] for o in organs}
    return {o: label_set[o].value for o in organs}


def safe_id(sample_id: str) -> str:
    """File-name form of a sample id (``MR/3/T1DUAL`` → ``MR_3_T1DUAL``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", sample_id).strip("_") or "sample"


def _plans(refs: Sequence[Ref], cfg: PreprocessConfig) -> list[_Plan]:
    """Group series into samples, pairing T1 in/out of one patient when ``t1_mode == "stack"``."""
    plans: list[_Plan] = []
    if cfg.t1_mode == "separate":
        plans = [_Plan(r.case_id, r.patient, (r,)) for r in refs]
    else:
        # a ref holding all channels of its case (DatasetRef.stacked) is a sample of its own
        alone = [r for r in refs if isinstance(r, DatasetRef) and r.stacked]
        refs = [r for r in refs if not (isinstance(r, DatasetRef) and r.stacked)]
        plans = [_Plan(r.case_id, r.patient, (r,)) for r in alone]
        outs = {(r.patient, r.split): r for r in refs if r.modality is Modality.MR_T1_OUT}
        t2s = {(r.patient, r.split): r for r in refs if r.modality is Modality.MR_T2SPIR}
        used: set[str] = set()
        for ref in refs:
            if ref.modality is Modality.MR_T1_OUT:
                continue
            if ref.modality is Modality.MR_T1_IN:
                partner = outs.get((ref.patient, ref.split))
                if partner is None:
                    raise DataError(
                        f"{ref.image_dir}: T1 in-phase of {ref.patient} has no out-phase series among "
                        "the cases given; t1_mode='stack' needs both (or use t1_mode='separate')"
                    )
                used.add(partner.case_id)
                stacked: tuple[CaseRef, ...] = (ref, partner)
                if cfg.t2_channel:
                    t2 = t2s.get((ref.patient, ref.split))
                    if t2 is None:
                        raise DataError(
                            f"{ref.image_dir}: T1 of {ref.patient} has no T2-SPIR series among the "
                            "cases given; t2_channel stacks it as the third channel (include the "
                            "patient's T2SPIR series, or set t2_channel: false)"
                        )
                    stacked = (*stacked, t2)
                plans.append(_Plan(f"{ref.patient}/{T1_STACK_SUFFIX}", ref.patient, stacked))
            else:
                plans.append(_Plan(ref.case_id, ref.patient, (ref,)))
        for ref in outs.values():
            if ref.case_id not in used:
                raise DataError(
                    f"{ref.image_dir}: T1 out-phase of {ref.patient} has no in-phase series among the "
                    "cases given; t1_mode='stack' needs both (or use t1_mode='separate')"
                )
    seen: dict[str, str] = {}
    for plan in plans:
        name = safe_id(plan.id)
        if name in seen:
            raise DataError(
                f"samples {seen[name]!r} and {plan.id!r} would share cache file {name}.npy"
            )
        seen[name] = plan.id
    return plans


def _listing(folder: Path | None) -> list[tuple[str, int, int]]:
    if folder is None or not folder.is_dir():
        return []
    out = []
    for entry in os.scandir(folder):
        if entry.is_file():
            st = entry.stat()
            out.append((entry.name, st.st_size, st.st_mtime_ns))
    return sorted(out)


def source_fingerprint(refs: Sequence[Ref]) -> str:
    """Hash of the file names, sizes and mtimes of the series and mask folders (no pixel reads).

    Folder paths are left out, so a dataset mounted elsewhere (``cp -p``, another node) still matches.
    """
    digest = hashlib.sha256()
    for ref in refs:
        if isinstance(ref, DatasetRef):
            digest.update(json.dumps(ref_fingerprint(ref)).encode())
            continue
        for role, folder in (("image", ref.image_dir), ("mask", ref.mask_dir)):
            digest.update(json.dumps([ref.case_id, role, _listing(folder)]).encode())
    return digest.hexdigest()[:16]


def cache_fingerprint(
    cfg: PreprocessConfig, organs: Sequence[str], label_set: LabelSet | None = None
) -> str:
    """Hash of what decides the cached pixels: the format, the preprocessing config and the organs
    (with a dataset's own label set: its values and ignore label too)."""
    parts: list[Any] = [CACHE_FORMAT, FEATURES_VERSION, cfg.model_dump(mode="json"), list(organs)]
    if label_set is not None:
        parts.append(label_set.to_nnunet())
    payload = json.dumps(parts, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Exclusive fcntl lock: several builders on one node (Ray workers) take turns."""
    with open(path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _save_atomic(path: Path, array: np.ndarray) -> None:
    """Write ``path`` via a temporary file and rename, so readers never see half a file."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, array)


def _write_index(root: Path, index: dict[str, Any]) -> None:
    write_text_atomic(root / INDEX_NAME, json.dumps(index, indent=1))


def _read_index(root: Path) -> dict[str, Any] | None:
    try:
        index = json.loads((root / INDEX_NAME).read_text())
    except (OSError, ValueError):
        return None
    return index if isinstance(index, dict) and index.get("format") == CACHE_FORMAT else None


def _build_sample(
    plan: _Plan,
    root: Path,
    cfg: PreprocessConfig,
    organs: Sequence[str],
    fingerprint: str,
    label_set: LabelSet | None = None,
) -> SampleRecord:
    case = _load(plan.refs[0], with_label=True)
    if case.label is None:
        raise DataError(
            f"{plan.refs[0].image_dir}: {plan.refs[0].case_id} has no ground-truth masks; "
            "the slice cache holds labelled training cases only"
        )
    partner = _load(plan.refs[1], with_label=False).image if len(plan.refs) > 1 else None
    t2 = _load(plan.refs[2], with_label=False).image if len(plan.refs) > 2 else None
    # the sample's own series only: a T2-SPIR stacked as a channel is also a sample of its own
    features = {case.modality.value: series_features(case.image.array).tolist()}
    if partner is not None:
        features[partner.modality.value] = series_features(partner.array).tolist()
    head = plan.refs[0]
    if isinstance(head, DatasetRef) and head.stacked:  # every channel of the case, stacked
        prepared = prepare_channels(case.channels, cfg, head.dataset.channel_names)
    else:
        prepared = prepare_volume(case.image, cfg, partner=partner, t2=t2)
    values = label_values(organs, label_set)
    ids = np.asarray(list(values.values()), dtype=np.uint8)
    kept = (
        ids if label_set is None or label_set.ignore is None else np.append(ids, label_set.ignore)
    )
    label = np.asarray(case.label.array, dtype=np.uint8)
    label = np.where(np.isin(label, kept), label, 0).astype(np.uint8)
    label = resize_slices(label, cfg.size, order=0)
    name = safe_id(plan.id)
    _save_atomic(root / "images" / f"{name}.npy", prepared.array.astype(cfg.cache_dtype))
    _save_atomic(root / "labels" / f"{name}.npy", label)
    z, c, h, w = prepared.array.shape
    return SampleRecord(
        id=plan.id,
        patient=plan.patient,
        modality=case.modality,
        n_slices=z,
        channels=c,
        height=h,
        width=w,
        file=name,
        modalities=prepared.modalities,
        case_ids=tuple(r.case_id for r in plan.refs),
        source_fingerprint=fingerprint,
        labelled_slices=tuple(
            int(i) for i in np.flatnonzero(np.isin(label, ids).reshape(z, -1).any(axis=1))
        ),
        shape=prepared.shape,
        geometry=prepared.geometry,
        organ_voxels={o: int(np.count_nonzero(case.label.array == values[o])) for o in organs},
        organ_slices={o: _slices_with(label, values[o]) for o in organs},
        modality_features=features,
    )


def _slices_with(label: np.ndarray, label_id: int) -> tuple[int, ...]:
    present = (label == label_id).reshape(label.shape[0], -1).any(axis=1)
    return tuple(int(i) for i in np.flatnonzero(present))


class SliceCache:
    """Preprocessed samples on disk, memory-mapped on first use in each process."""

    def __init__(self, root: Path, index: dict[str, Any], sample_ids: Sequence[str] | None = None):
        self.root = Path(root)
        self.cfg = PreprocessConfig(**index["cfg"])
        self.organs: list[str] = list(index["organs"])
        #: Label value of each organ in the cached label maps (CHAOS ids unless the dataset had its own).
        self.label_values: dict[str, int] = dict(
            index.get("label_values") or {o: ORGAN_LABELS[o] for o in self.organs}
        )
        #: Value of the ignore label's voxels in the cached label maps (None: every voxel is annotated).
        self.ignore: int | None = index.get("ignore")
        self.fingerprint: str = index["cfg_fingerprint"]
        records = [SampleRecord.from_json(s) for s in index["samples"]]
        by_id = {r.id: r for r in records}
        if sample_ids is not None:
            missing = [s for s in sample_ids if s not in by_id]
            if missing:
                raise ConfigError(f"{self.root}: samples {missing} are not in the cache")
            records = [by_id[s] for s in sample_ids]
        self.samples: list[SampleRecord] = records
        self._by_id = {r.id: r for r in records}
        self._open: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        #: Sample ids (re)built by the :meth:`build` call that returned this object (empty: all reused).
        self.built: list[str] = []

    # -- building ---------------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        refs: Sequence[Ref],
        cache_dir: Path | str,
        cfg: PreprocessConfig,
        organs: Sequence[str],
        label_set: LabelSet | None = None,
    ) -> SliceCache:
        """Prepare ``refs`` into ``cache_dir`` unless already there; returns a cache over exactly them.

        Samples whose source files (names, sizes, mtimes) are unchanged are reused; a different
        ``cfg``/``organs`` rebuilds everything (use one folder per config to keep several). Samples of
        other refs built earlier with the same config stay, so builders with different case lists can
        share a folder. ``label_set`` gives the values of ``organs`` (and the ignore label) of a
        dataset with its own labels; None: the CHAOS organs.
        """
        label_values(organs, label_set) if label_set else organ_ids(list(organs))  # names checked
        if not organs:
            raise ConfigError("organs must name at least one organ")
        root = Path(cache_dir)
        plans = _plans(refs, cfg)
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "labels").mkdir(parents=True, exist_ok=True)
        fp = cache_fingerprint(cfg, organs, label_set)
        with _locked(root / ".lock"):
            index = _read_index(root)
            if index is None or index.get("cfg_fingerprint") != fp:
                if index is not None:  # a different config: nothing on disk is reusable
                    for sub in ("images", "labels"):
                        shutil.rmtree(root / sub, ignore_errors=True)
                        (root / sub).mkdir()
                index = {
                    "format": CACHE_FORMAT,
                    "cfg": cfg.model_dump(mode="json"),
                    "cfg_fingerprint": fp,
                    "organs": list(organs),
                    "samples": [],
                }
                if label_set is not None:
                    index["label_values"] = label_values(organs, label_set)
                    index["ignore"] = label_set.ignore
            for stale in [*root.glob("images/.*.tmp"), *root.glob("labels/.*.tmp")]:
                stale.unlink(missing_ok=True)  # left by a builder that died; we hold the lock
            records = {s["id"]: s for s in index["samples"]}
            built: list[str] = []
            for plan in plans:
                fingerprint = source_fingerprint(plan.refs)
                old = records.get(plan.id)
                if (
                    old is not None
                    and old["source_fingerprint"] == fingerprint
                    and all(
                        (root / sub / f"{old['file']}.npy").is_file()
                        for sub in ("images", "labels")
                    )
                ):
                    continue
                records[plan.id] = _build_sample(
                    plan, root, cfg, organs, fingerprint, label_set
                ).to_json()
                built.append(plan.id)
                index["samples"] = list(records.values())
                _write_index(root, index)  # after each sample, so a failure later keeps the work
            if not (root / INDEX_NAME).is_file():
                _write_index(root, index)
        cache = cls(root, index, [p.id for p in plans])
        cache.built = built
        return cache

    @classmethod
    def open(cls, cache_dir: Path | str) -> SliceCache:
        """Every sample of an existing cache."""
        root = Path(cache_dir)
        index = _read_index(root)
        if index is None:
            raise DataError(
                f"{root}: no slice cache here ({INDEX_NAME} missing or of another version)"
            )
        return cls(root, index)

    # -- reading ----------------------------------------------------------------------------------
    def sample(self, sample_id: str) -> SampleRecord:
        """The cache record of sample ``sample_id``, or a ConfigError naming it."""
        try:
            return self._by_id[sample_id]
        except KeyError:
            raise ConfigError(
                f"{self.root}: no sample {sample_id!r}; have {[s.id for s in self.samples]}"
            ) from None

    def volume(self, sample_id: str) -> tuple[np.ndarray, np.ndarray]:
        """``(image (Z, C, H, W), labels (Z, H, W))`` as read-only memory maps."""
        if sample_id not in self._open:
            name = self.sample(sample_id).file
            self._open[sample_id] = (
                np.load(self.root / "images" / f"{name}.npy", mmap_mode="r"),
                np.load(self.root / "labels" / f"{name}.npy", mmap_mode="r"),
            )
        return self._open[sample_id]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_open"] = {}  # memory maps are reopened in each worker, never pickled
        return state

    def __len__(self) -> int:
        return len(self.samples)


class SliceDataset(Dataset):
    """2D training slices ``(image (C, H, W), target (K, H, W))`` from a :class:`SliceCache`.

    ``target`` is one-hot per organ in ``organs`` order. With ``augment``, item ``i`` in epoch ``e``
    uses ``np.random.default_rng([seed, e, i])``: reproducible, yet new every epoch. Call
    :meth:`set_epoch` before iterating each epoch (with ``persistent_workers`` the workers keep the
    epoch they were started with). ``only_labelled_slices`` keeps the slices showing at least one
    of ``organs``. ``in_channels`` optionally adapts channels via :func:`to_channels`
    so CT (1 channel) and stacked T1 (2) can feed one network.
    """

    def __init__(
        self,
        cache: SliceCache,
        sample_ids: Sequence[str],
        organs: Sequence[str],
        augment: SliceAugmenter | None = None,
        seed: int = 0,
        only_labelled_slices: bool = False,
        in_channels: int | None = None,
    ) -> None:
        absent = [o for o in organs if o not in cache.organs]
        if absent:
            raise ConfigError(
                f"organs {absent} are not in the slice cache {cache.root} (it holds {cache.organs}); "
                "rebuild it with those organs"
            )
        self.cache = cache
        self.sample_ids = list(sample_ids)
        self.organs = list(organs)
        self.augment = augment
        self.seed = int(seed)
        self.epoch = 0
        self.in_channels = in_channels
        ids = np.asarray([cache.label_values[o] for o in organs], dtype=np.uint8)
        self._label_ids = ids[:, None, None]
        self._ignore = cache.ignore
        items = []
        for position, sample_id in enumerate(self.sample_ids):
            record = cache.sample(sample_id)
            if only_labelled_slices:  # slices showing at least one of *these* organs
                slices = sorted(set().union(*(record.organ_slices[o] for o in self.organs)))
            else:
                slices = range(record.n_slices)
            items.extend((position, z) for z in slices)
        self._items = np.asarray(items, dtype=np.int64).reshape(-1, 2)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self._items)

    def item_source(self, index: int) -> tuple[str, int]:
        """``(sample id, slice index)`` of item ``index``."""
        position, z = self._items[index]
        return self.sample_ids[position], int(z)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        sample_id, z = self.item_source(index)
        images, labels = self.cache.volume(sample_id)
        image = np.array(images[z], dtype=np.float32)
        label = np.array(labels[z])
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, self.epoch, int(index)])
            image, label = self.augment(image, label, rng)
        target = (label[None] == self._label_ids).astype(np.float32)
        if self._ignore is not None:  # left out of the loss (organseg.losses.IGNORE_TARGET)
            target[:, label == self._ignore] = IGNORE_TARGET
        if self.in_channels is not None:
            image = to_channels(image[None], self.in_channels)[0]
        return torch.from_numpy(np.ascontiguousarray(image)), torch.from_numpy(target)
