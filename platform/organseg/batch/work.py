"""Reading, segmenting and writing one series: the pure core every batch stage calls.

Nothing here knows about Ray. Each stage takes and returns a :class:`Carrier` (the discovered item,
its result row so far, and the pickled input or label map between stages) and never raises for bad
data: a refusal becomes ``status="refused"`` with the reason, a bug ``status="failed"`` with a request
id (the traceback goes to the log under that id, never into the row). Two seams keep the input
assembly and the model in one place each: :func:`load_input` (a discovered item → the
:class:`~organseg.ensemble.inputs.PredictInput` that ``predict --local`` would build) and
:func:`make_predictor`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import pickle
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from organseg.batch.discover import STATE_DIR, SeriesItem
from organseg.batch.records import write_record
from organseg.ensemble.assembly import RequestHints
from organseg.errors import OrgansegError

log = logging.getLogger("organseg.batch")

#: The serving limit on voxels per series (``organseg.serve.wire.WireLimits``): a batch refuses what
#: the service would refuse, from headers, before decoding pixels.
MAX_VOXELS = 400 * 1024 * 1024

FORMATS = ("nifti", "dicom-seg", "png")


@dataclass(frozen=True)
class Settings:
    """What every stage needs to know about the run (small and picklable: it travels to workers)."""

    model_dir: str
    out: str
    fmt: str
    model_version: str
    stack_t1: bool = False
    with_t2: bool = False
    #: (name, modality) of each input channel of a model that stacks a dataset's channels
    channels: tuple[tuple[str, str], ...] = ()
    device: str | None = None
    max_voxels: int = MAX_VOXELS


@dataclass
class Carrier:
    """One series between stages: the item, its row so far, and the pickled volume or labels."""

    item: dict[str, Any]
    row: dict[str, Any]
    payload: bytes = b""

    @property
    def open(self) -> bool:
        """Still to be worked on (not refused or failed yet)."""
        return not self.row["status"]


# -- the seams --------------------------------------------------------------------------------------


def load_input(item: SeriesItem, settings: Settings):
    """The :class:`~organseg.ensemble.inputs.PredictInput` for ``item``: the same readers, order and
    limits as ``predict --local`` and serving (geometry-ordered DICOM, validated volumes)."""
    from organseg.ensemble.inputs import PredictInput
    from organseg.io.validate import validate_volume

    if item.kind == "chaos":
        plans = {p.case_id: p for p in _chaos_plans(item.path, settings.stack_t1, settings.with_t2)}
        if item.case_id not in plans:
            raise OrgansegError(f"{item.source}: the case is no longer in the dataset")
        loaded = plans[item.case_id].load()
        validate_volume(loaded.image, item.source)
        return loaded
    if item.kind == "dicom" and item.stacked:
        return _load_stacked(item, settings)
    if item.kind == "dicom":
        volume = _read_series(item.files, item.label, settings)
        _scrub(volume)
        return PredictInput(item.key, validate_volume(volume, item.label))
    if item.channel_files:
        return _load_channels(item, settings)
    if item.kind in ("file", "uri"):
        from organseg.io.files import volume_suffix
        from organseg.io.readers import read_any
        from organseg.io.validate import check_volume_file

        with _local_copy(item.path) as path:
            try:
                check_volume_file(path, volume_suffix(path) or "", settings.max_voxels)
                volume = read_any(path)
            except OrgansegError as exc:
                if str(path) == item.path:
                    raise
                # a fetched copy: name the URI, not the temporary file
                raise type(exc)(str(exc).replace(str(path), item.source)) from None
        volume.meta.pop("source", None)
        return PredictInput(item.key, validate_volume(volume, item.source))
    raise OrgansegError(item.refused or f"{item.source}: nothing to read")


def _load_channels(item: SeriesItem, settings: Settings):
    """Every channel file of an nnU-Net case, named by the model's channels (as ``predict --local``
    reads ``CASE_0000`` … beside each other)."""
    from organseg.ensemble.inputs import PredictInput
    from organseg.io.files import volume_suffix
    from organseg.io.readers import read_any
    from organseg.io.validate import check_volume_file, validate_volume

    volumes = {}
    for (name, modality), path in zip(settings.channels, item.channel_files, strict=True):
        check_volume_file(Path(path), volume_suffix(path) or "", settings.max_voxels)
        volume = read_any(Path(path), modality)
        volume.meta.pop("source", None)
        volumes[name] = validate_volume(volume, f"{item.source} (channel {name!r})")
    first = volumes[settings.channels[0][0]]
    return PredictInput(item.key, first, channels=volumes)


def _read_series(files: list[str], label: str, settings: Settings):
    """One DICOM series by the serving reader (geometry order, the voxel limit)."""
    from organseg.io.dicom import read_dicom_series

    with staged_series(files) as folder:
        try:
            return read_dicom_series(
                folder, order="geometry", max_voxels=settings.max_voxels, anonymous=True
            )
        except OrgansegError as exc:
            message = str(exc).replace("the upload", "the series")
            raise type(exc)(f"{label}: {message}") from None


def _scrub(volume) -> None:
    """Drop what names files or the patient from a read volume's meta (it travels to the row)."""
    for key in ("source", "first_file", "last_file", "PatientID"):
        volume.meta.pop(key, None)


#: How refusals of a study's stacked series tell a batch user what to do: the headers must say each
#: series' sequence, and a missing series belongs in the input.
BATCH_HINTS = RequestHints(
    undecided="the series' headers must say the sequence (SeriesDescription, or EchoTime with "
    "MagneticFieldStrength)",
    add_to="to the input (the study's series are gathered by StudyInstanceUID)",
    named_parts=False,
)


def _load_stacked(item: SeriesItem, settings: Settings):
    """A study's T1 phases (and T2-SPIR) read together and assembled exactly as a multi-series
    request to the server is (:func:`~organseg.ensemble.assembly.assemble`: which series is which
    by its headers, one study, one grid; anything missing or doubled is refused naming it)."""
    from organseg.ensemble.assembly import SeriesInput, assemble
    from organseg.ensemble.inputs import PredictInput
    from organseg.io.validate import validate_volume

    inputs = [
        SeriesInput(
            validate_volume(_read_series(s["files"], s["label"], settings), s["label"]),
            s["label"],
        )
        for s in item.stacked
    ]
    assembled = assemble(inputs, _spec(settings.model_dir), hints=BATCH_HINTS)
    for series in inputs:
        _scrub(series.volume)
    return PredictInput(item.key, assembled.image, assembled.partner, assembled.t2)


@functools.lru_cache(maxsize=4)
def _spec(model_dir: str):
    from organseg.ensemble.spec import load_spec

    return load_spec(Path(model_dir))


def make_predictor(settings: Settings):
    """The in-process ensemble, as ``predict --local`` builds it (loaded once per worker)."""
    from organseg.ensemble.backends import LocalBackend

    return LocalBackend(Path(settings.model_dir), settings.device)


@functools.lru_cache(maxsize=4)
def _chaos_plans(root: str, stack_t1: bool, with_t2: bool) -> list:
    from organseg.ensemble.inputs import plan_inputs

    return plan_inputs(Path(root), None, stack_t1=stack_t1, with_t2=with_t2)


@contextlib.contextmanager
def staged_series(files: list[str]) -> Iterator[Path]:
    """A temporary folder of links to one series' files, wherever they lie in the tree: the series
    reader reads folders, and a PACS export mixes series in folders or spreads one over several."""
    with tempfile.TemporaryDirectory(prefix="organseg-batch-") as tmp:
        folder = Path(tmp)
        for k, name in enumerate(files, start=1):
            (folder / f"{k:06d}.dcm").symlink_to(name)
        yield folder


@contextlib.contextmanager
def _local_copy(location: str) -> Iterator[Path]:
    """A local path for ``location``; a URI is fetched through pyarrow.fs (as run storage is)."""
    from organseg.uri import is_uri, open_uri, shown_uri

    if not is_uri(location):
        yield Path(location)
        return
    from organseg.io.files import volume_suffix

    with tempfile.TemporaryDirectory(prefix="organseg-batch-") as tmp:
        local = Path(tmp) / f"volume{volume_suffix(shown_uri(location)) or ''}"
        with open_uri(location) as src, local.open("wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        yield local


# -- the stages -------------------------------------------------------------------------------------


def _refuse(carrier: Carrier, reason: str) -> Carrier:
    carrier.row.update(status="refused", reason=reason)
    carrier.payload = b""
    return carrier


def _fail(carrier: Carrier, stage: str) -> Carrier:
    request_id = uuid.uuid4().hex[:16]
    log.exception(
        "batch %s failed for series %s (request %s)", stage, carrier.row["key"], request_id
    )
    carrier.row.update(
        status="failed",
        reason=f"internal error while {stage}; see the log for request {request_id}",
        request_id=request_id,
    )
    carrier.payload = b""
    return carrier


def read_stage(carrier: Carrier, settings: Settings) -> Carrier:
    """Read and validate the series (CPU); a refusal or failure is recorded on the row."""
    if not carrier.open:
        return carrier
    from organseg.ensemble.routing import ModalityError

    started = time.perf_counter()
    item = SeriesItem.from_dict(carrier.item)
    try:
        loaded = load_input(item, settings)
    except ModalityError as exc:
        _refuse(carrier, exc.problem)
    except OrgansegError as exc:
        _refuse(carrier, str(exc))
    except Exception:
        _fail(carrier, "reading")
    else:
        carrier.payload = pickle.dumps(loaded, protocol=pickle.HIGHEST_PROTOCOL)
        carrier.row["modality"] = loaded.image.modality.value if loaded.image.modality else ""
    carrier.row["read_s"] = round(time.perf_counter() - started, 4)
    if not carrier.open:
        write_record(Path(settings.out), carrier.row)
    return carrier


def predict_stage(carrier: Carrier, backend: Any, out: str, node_id: str = "") -> Carrier:
    """Segment the read input with the ensemble (the same call as ``predict --local``)."""
    if not carrier.open:
        return carrier
    from organseg.ensemble.routing import ModalityError
    from organseg.viz import prediction_flags

    started = time.perf_counter()
    carrier.row["node_id"] = node_id
    try:
        loaded = pickle.loads(carrier.payload)
        prediction = backend.predict(loaded, None)
    except ModalityError as exc:
        _refuse(carrier, exc.problem)
    except OrgansegError as exc:
        _refuse(carrier, str(exc))
    except Exception:
        _fail(carrier, "predicting")
    else:
        report = prediction.report()
        carrier.row.update(
            modality=report["modality"],
            modality_reason=report["modality_reason"],
            modality_source=report["modality_source"],
            modality_confidence=report["modality_confidence"],
            model_version=report["model_version"],
            members=",".join(report["members"]),
            flags=" | ".join(prediction_flags(prediction.volumes_ml, prediction.uncertainty)),
        )
        for organ, value in report["volumes_ml"].items():
            carrier.row[f"volume_ml.{organ}"] = value
        for organ, value in report["uncertainty"].items():
            carrier.row[f"uncertainty.{organ}"] = value
        carrier.payload = pickle.dumps(prediction.labels, protocol=pickle.HIGHEST_PROTOCOL)
    carrier.row["predict_s"] = round(time.perf_counter() - started, 4)
    if not carrier.open:
        write_record(Path(out), carrier.row)
    return carrier


def output_path(out: Path, key: str, fmt: str) -> Path:
    """Where series ``key``'s labels go: named by the key (a hash), never by a patient's name."""
    suffix = {"nifti": ".nii.gz", "dicom-seg": ".dcm", "png": ""}[fmt]
    return Path(out) / "labels" / f"{key}{suffix}"


def write_stage(carrier: Carrier, settings: Settings) -> Carrier:
    """Write the labels atomically under their key, then the done record (CPU).

    A retried task writes the same file again and replaces it whole, so retries never duplicate.
    """
    if not carrier.open:
        return carrier
    from organseg.io.outputs import write_labels

    started = time.perf_counter()
    item = SeriesItem.from_dict(carrier.item)
    out = Path(settings.out)
    final = output_path(out, item.key, settings.fmt)
    partial = out / STATE_DIR / "partial" / f"{item.key}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    partial.mkdir(parents=True)
    try:
        labels = pickle.loads(carrier.payload)
        tmp = partial / final.name
        if settings.fmt == "dicom-seg":
            if item.kind != "dicom":
                raise OrgansegError(
                    "DICOM-SEG needs a DICOM source series; this input is a volume file"
                )
            with staged_series(item.files) as folder:
                write_labels(labels, tmp, "dicom-seg", folder)
        else:
            write_labels(labels, tmp, settings.fmt)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.is_dir():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except OrgansegError as exc:
        _refuse(carrier, str(exc))
    except Exception:
        _fail(carrier, "writing")
    else:
        carrier.row["output"] = str(final)
        carrier.row["status"] = "done"
        carrier.payload = b""
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    carrier.row["write_s"] = round(time.perf_counter() - started, 4)
    write_record(out, carrier.row)
    return carrier
