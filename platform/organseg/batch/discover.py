"""What a batch run segments: one :class:`SeriesItem` per series under INPUT, found from headers only.

INPUT may be a folder tree of DICOM files as a PACS export writes it (series found by
SeriesInstanceUID, split by EchoTime, across sub-folders and whatever the files are called), a CHAOS
dataset, an nnU-Net dataset (``imagesTs``/``imagesTr``, single-channel ``_0000`` files), a folder of
NIfTI/MHA/NRRD files, or a CSV manifest of paths or URIs. Anything that can be refused before reading
(a multi-channel nnU-Net case, a DICOM file whose header cannot be placed in a series) becomes an item
that carries its refusal, so every input ends as exactly one row.

For a model that stacks T1 in-phase and out-of-phase (``preprocess.t1_mode: stack``) the DICOM series
of those sequences are gathered per study into one item (:func:`stack_studies`); which series is
which, and whether they fit together, is decided when they are read, by the same
:func:`~organseg.ensemble.assembly.assemble` as a multi-series request to the server.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from organseg.ensemble.inputs import channel_gaps
from organseg.errors import DataError
from organseg.io.files import VOLUME_SUFFIXES, is_volume_file, volume_suffix
from organseg.uri import is_uri, shown_uri

Kind = Literal["dicom", "chaos", "file", "uri", "none"]

#: Folder the batch keeps its bookkeeping in (inside OUT); discovery never descends into it.
STATE_DIR = ".organseg-batch"
_NNUNET_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


@dataclass
class SeriesItem:
    """One series to segment, before any pixel is read.

    ``key`` names its outputs and done record (a hash of what identifies it, never a patient name);
    ``source`` is how rows name it: the input path, URI or CHAOS case, or for DICOM the folder(s)
    its files are in; ``series_uid`` its SeriesInstanceUID (DICOM only); ``label`` the SeriesNumber
    and InstanceNumbers; ``files`` the DICOM files of the series; ``case_id`` the CHAOS case id;
    ``refused`` a reason found before reading; ``study`` a hash of the StudyInstanceUID and
    ``sequence`` the MR sequence the headers establish (DICOM only; what stacking groups by);
    ``stacked`` the series read together as one input (a stacking model's T1 phases of one study:
    each ``{"label", "series_uid", "files"}``, this item's own ``files`` being the first);
    ``channel_files`` an nnU-Net case's channel files for a model that stacks a dataset's channels.
    """

    key: str
    kind: Kind
    source: str
    series_uid: str = ""
    label: str = ""
    files: list[str] = field(default_factory=list)
    path: str = ""
    case_id: str = ""
    modality: str = ""
    refused: str = ""
    study: str = ""
    sequence: str = ""
    stacked: list[dict[str, Any]] = field(default_factory=list)
    #: A model that stacks a dataset's channels: the case's channel files, in channel order.
    channel_files: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SeriesItem:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def series_key(*identity: str) -> str:
    """A stable 20-hex-digit key for outputs: the same series always gets the same name."""
    return hashlib.sha256("\0".join(identity).encode()).hexdigest()[:20]


def discover(
    input_path: Path | str,
    stack_t1: bool = False,
    with_t2: bool = False,
    channels: tuple[str, ...] = (),
) -> list[SeriesItem]:
    """Every series under ``input_path`` (see the module docstring), in a stable order.

    ``stack_t1``/``with_t2`` are the model's T1 stacking settings, so a CHAOS dataset is planned
    exactly as ``predict --local`` plans it; ``channels`` the channel names of a model that stacks
    a dataset's channels, so an nnU-Net case becomes one item of all its channels. Raises
    :class:`DataError` when there is nothing to do.
    """
    text = str(input_path)
    if is_uri(text):
        if not shown_uri(text).lower().endswith(".csv"):
            raise DataError(
                f"{shown_uri(text)}: a URI INPUT must be a CSV manifest; give a local or mounted "
                "folder for anything else"
            )
        items = discover_manifest_uri(text)
        if not items:
            raise DataError(f"{shown_uri(text)}: the manifest lists no series")
        items = _unique(items)
        return stack_studies(items, with_t2) if stack_t1 else items
    path = Path(text)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_file():
        if path.suffix.lower() == ".csv":
            items = discover_manifest(path)
        elif is_volume_file(path):
            items = [_file_item(path)]
        else:
            raise DataError(f"{path}: not a folder, a CSV manifest nor a volume file")
    elif _is_chaos(path):
        items = discover_chaos(path, stack_t1, with_t2)
    else:
        nnunet = [path / n for n in ("imagesTs", "imagesTr") if (path / n).is_dir()]
        if nnunet:
            items = [i for f in nnunet for i in discover_files(f, channels)]
        elif channels and _holds_channel_files(path):
            items = discover_files(path, channels)
        else:
            items = discover_tree(path)
    if not items:
        raise DataError(f"{path}: no series found (DICOM, NIfTI/MHA/NRRD, CHAOS or nnU-Net)")
    items = _unique(items)
    return stack_studies(items, with_t2) if stack_t1 else items


def _unique(items: list[SeriesItem]) -> list[SeriesItem]:
    """One item per key (a manifest listing a file twice segments it once)."""
    seen: dict[str, SeriesItem] = {}
    for item in items:
        seen.setdefault(item.key, item)
    return list(seen.values())


def _is_chaos(path: Path) -> bool:
    from organseg.io.readers import _looks_like_chaos

    return path.name in ("CT", "MR") or _looks_like_chaos(path)


def discover_chaos(path: Path, stack_t1: bool, with_t2: bool) -> list[SeriesItem]:
    """The series of a CHAOS dataset, planned by the same code as ``predict --local``."""
    from organseg.ensemble.inputs import plan_inputs

    root = str(path.resolve())
    return [
        SeriesItem(
            key=series_key("chaos", root, plan.case_id),
            kind="chaos",
            source=f"{root}#{plan.case_id}",
            path=root,
            case_id=plan.case_id,
            modality=plan.modality.value if plan.modality is not None else "",
        )
        for plan in plan_inputs(path, None, stack_t1=stack_t1, with_t2=with_t2)
    ]


def _file_item(path: Path) -> SeriesItem:
    resolved = str(path.resolve())
    return SeriesItem(key=series_key("file", resolved), kind="file", source=resolved, path=resolved)


def _stem(name: str) -> str:
    suffix = volume_suffix(name) or ""
    return name[: len(name) - len(suffix)]


def discover_files(folder: Path, channels: tuple[str, ...] = ()) -> list[SeriesItem]:
    """Volume files under ``folder``; nnU-Net channel files (``case_0000.nii.gz``) are grouped per case.
    For a model that stacks a dataset's channels (``channels``: their names) a case is one item of
    all its channel files, and a case missing one or holding one more is refused, naming it;
    otherwise a case with more than one channel is refused (the model takes one series)."""
    files = sorted(
        p for p in folder.rglob("*") if p.is_file() and is_volume_file(p) and _visible(p, folder)
    )
    names = channels
    by_case: dict[tuple[Path, str], list[Path]] = {}
    items = []
    for path in files:
        match = _NNUNET_CHANNEL.match(_stem(path.name))
        if match is None:
            item = _file_item(path)
            if names:
                item.refused = (
                    f"not an nnU-Net channel file (CASE_0000...); the model reads the channels "
                    f"{', '.join(names)} of a case together"
                )
            items.append(item)
        else:
            by_case.setdefault((path.parent, match["case"]), []).append(path)
    for (_, case), paths in by_case.items():
        item = _file_item(sorted(paths)[0])
        if names:
            _channel_item(item, case, sorted(paths), names)
        elif len(paths) > 1:
            item.refused = (
                f"nnU-Net case {case} has {len(paths)} channels (_0000 … _{len(paths) - 1:04d}); "
                "batch segments single-channel cases"
            )
        items.append(item)
    return sorted(items, key=lambda i: i.source)


def _holds_channel_files(folder: Path) -> bool:
    """Whether ``folder`` holds nnU-Net channel files (``case_0000.nii.gz``), not a DICOM tree."""
    return any(
        is_volume_file(p) and _NNUNET_CHANNEL.match(_stem(p.name)) for p in folder.rglob("*")
    )


def _channel_item(item: SeriesItem, case: str, paths: list[Path], names: tuple[str, ...]) -> None:
    """``item`` made the case's one input of every channel, or refused naming what is missing or
    more than the model takes."""
    by_index = {int(_NNUNET_CHANNEL.match(_stem(p.name))["channel"]): p for p in paths}  # type: ignore[index]
    lacking, beyond = channel_gaps(by_index, len(names))
    missing = [f"{names[i]} (_{i:04d})" for i in lacking]
    extra = [f"_{i:04d}" for i in beyond]
    if missing:
        item.refused = (
            f"nnU-Net case {case} lacks channel(s) {', '.join(missing)}; the model reads "
            f"{', '.join(names)} together"
        )
    elif extra:
        item.refused = (
            f"nnU-Net case {case} has more channels than the model takes ({', '.join(extra)}); "
            f"it reads {len(names)}: {', '.join(names)}"
        )
    else:
        item.channel_files = [str(by_index[i].resolve()) for i in range(len(names))]
        item.key = series_key("channels", *item.channel_files)


def _visible(path: Path, root: Path) -> bool:
    return not any(part.startswith(".") for part in path.relative_to(root).parts)


def discover_manifest(path: Path) -> list[SeriesItem]:
    """A CSV manifest: one path or URI per row, in a ``path`` (or ``uri``) column or the first column.
    Relative paths are relative to the manifest; an entry may be a volume file, a DICOM series folder
    or a URI of a volume file."""
    with path.open(newline="") as handle:
        text = handle.read()
    return _manifest_items(text, str(path), lambda entry: path.parent / entry)


def discover_manifest_uri(uri: str) -> list[SeriesItem]:
    """A CSV manifest read from ``s3://``, ``gs://``... through pyarrow.fs; its relative entries are
    relative to the manifest's own location (URIs too)."""
    from organseg.uri import open_uri

    with open_uri(uri) as stream:
        data = stream.read()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{shown_uri(uri)}: the manifest is not UTF-8 text") from None
    base = uri.split("?", 1)[0].rsplit("/", 1)[0]
    return _manifest_items(text, shown_uri(uri), lambda entry: f"{base}/{entry}")


def _manifest_items(text: str, where: str, relative: Any) -> list[SeriesItem]:
    """The items a manifest's ``text`` lists; ``relative`` places an entry that is neither an
    absolute path nor a URI (a local path, or a URI beside a manifest read from a URI)."""
    rows = [r for r in csv.reader(io.StringIO(text)) if r and any(c.strip() for c in r)]
    if not rows:
        raise DataError(f"{where}: the manifest is empty")
    header = [c.strip().lower() for c in rows[0]]
    column = next((header.index(n) for n in ("path", "uri", "image") if n in header), None)
    body = rows[1:] if column is not None else rows
    column = column or 0
    items: list[SeriesItem] = []
    for line, row in enumerate(body, start=2 if body is not rows else 1):
        entry = row[column].strip() if column < len(row) else ""
        if not entry:
            raise DataError(f"{where}: line {line} has no path")
        located = entry if is_uri(entry) or Path(entry).is_absolute() else relative(entry)
        if is_uri(str(located)):
            items.append(_uri_item(str(located)))
            continue
        local = Path(located)
        if local.is_file() and is_volume_file(local):
            items.append(_file_item(local))
        elif local.is_dir():
            items.extend(discover_tree(local))
        else:
            resolved = str(local.resolve())
            items.append(
                SeriesItem(
                    key=series_key("missing", resolved),
                    kind="none",
                    source=resolved,
                    refused=f"line {line}: no such volume file or folder",
                )
            )
    return items


def _uri_item(uri: str) -> SeriesItem:
    """A volume file at a URI: rows show it without credentials, and it is fetched when read (a
    missing object or bucket is refused then, naming the URI)."""
    shown = shown_uri(uri)
    item = SeriesItem(key=series_key("uri", shown), kind="uri", source=shown, path=uri)
    if volume_suffix(shown) is None:
        item.refused = (
            f"URI entries must name a volume file ({', '.join(VOLUME_SUFFIXES)}); "
            "copy DICOM series to a local or mounted folder"
        )
    return item


# -- DICOM trees ------------------------------------------------------------------------------------


def discover_tree(root: Path) -> list[SeriesItem]:
    """Volume files and DICOM series under ``root``, DICOM files grouped by SeriesInstanceUID.

    The grouping is :func:`organseg.io.dicom.split_series` (UID, then EchoTime), as for uploads and
    STOW-RS bodies; labels by SeriesNumber and InstanceNumbers. Unlike an upload, a file that cannot
    be placed becomes a refused item of its own instead of stopping everything: one damaged file in
    an archive must not stop the run.
    """
    from organseg.io.dicom import _int_or_none, read_headers, split_series
    from organseg.io.modality import MODALITY_KEYWORDS, header_sequence
    from organseg.io.naming import series_label

    files = sorted(p for p in root.rglob("*") if p.is_file() and _visible(p, root))
    items = [_file_item(p) for p in files if is_volume_file(p)]
    candidates = [p for p in files if not is_volume_file(p) and p.name.upper() != "DICOMDIR"]
    found, unplaced = read_headers(
        candidates,
        ["SeriesInstanceUID", "SeriesNumber", "InstanceNumber", "StudyInstanceUID",
         *MODALITY_KEYWORDS],
    )  # fmt: skip
    for path in unplaced:
        resolved = str(path.resolve())
        items.append(
            SeriesItem(
                key=series_key("unplaced", resolved),
                kind="none",
                source=resolved,
                refused="DICOM header unreadable (truncated or corrupt) or without "
                "SeriesInstanceUID; the file cannot be assigned to a series",
            )
        )
    entries = [(uid, ds, (order, path)) for order, (uid, ds, path) in enumerate(found)]
    # series in the order their first file was found (the sort below is stable)
    for echo, split, grouped in sorted(split_series(entries), key=lambda g: g[2][0][1][0]):
        members = sorted(((path, ds) for ds, (_, path) in grouped), key=lambda m: str(m[0]))
        first = members[0][1]
        uid = str(first.get("SeriesInstanceUID") or "")
        instances = [
            n
            for _, ds in members
            if (n := _int_or_none(str(ds.get("InstanceNumber", "") or ""))) is not None
        ]
        label = series_label(
            number=first.get("SeriesNumber", ""),
            first=min(instances, default=None),
            last=max(instances, default=None),
            unnumbered="a series without number",
            echo=echo if split else None,
        )
        folders = sorted({str(p.parent.resolve()) for p, _ in members})
        study = str(first.get("StudyInstanceUID", "") or "")
        items.append(
            SeriesItem(
                key=series_key("dicom", uid, echo if split else ""),
                kind="dicom",
                source=";".join(folders),
                series_uid=uid,
                label=label,
                files=[str(p.resolve()) for p, _ in members],
                modality=str(first.get("Modality", "") or ""),
                study=series_key("study", study) if study else "",
                sequence=header_sequence(first),
            )
        )
    return sorted(items, key=lambda i: (i.kind != "dicom", i.source, i.label))


# -- stacking ---------------------------------------------------------------------------------------


def stack_studies(items: list[SeriesItem], with_t2: bool) -> list[SeriesItem]:
    """The DICOM series a stacking model reads together, gathered into one item per study.

    T1 in-phase and out-of-phase (and with ``with_t2`` T2-SPIR) series of one study become one
    item, whatever folders they lie in and whether the two echoes share one SeriesInstanceUID
    (a dual-echo series, split by EchoTime on discovery). Only grouping is done here: the item is
    read as one multi-series request, so a missing, doubled or misfitting series is refused by
    :func:`~organseg.ensemble.assembly.assemble`, naming it. A T2-SPIR series also keeps its own
    item (the model may segment it alone, as the DICOM node does). A series without a study is a
    group of its own (its partner cannot be matched to it, and the refusal says what is missing).
    """
    from organseg.io.volume import Modality

    order = [Modality.MR_T1_IN.value, Modality.MR_T1_OUT.value]
    if with_t2:
        order.append(Modality.MR_T2SPIR.value)
    t1 = order[:2]
    groups: dict[str, list[SeriesItem]] = {}
    for item in items:
        if item.kind == "dicom" and item.sequence in order and not item.refused:
            groups.setdefault(item.study or f"series:{item.key}", []).append(item)
    stacked: dict[str, SeriesItem] = {}  # the key of a group's first T1 series → the group's item
    for members in groups.values():
        if any(m.sequence in t1 for m in members):
            first = next(m for m in members if m.sequence in t1)
            stacked[first.key] = _stack_item(members, order)
    grouped = {m.key for g in groups.values() for m in g if m.sequence in t1}
    result = []
    for item in items:
        if item.key in stacked:
            result.append(stacked[item.key])
        elif item.key not in grouped:
            result.append(item)  # T2-SPIR stays an item of its own
    return result


def _stack_item(members: list[SeriesItem], order: list[str]) -> SeriesItem:
    members = sorted(members, key=lambda m: (order.index(m.sequence), m.label, m.key))
    head = members[0]
    return SeriesItem(
        key=series_key("stack", *(m.key for m in members)),
        kind="dicom",
        source=";".join(sorted({f for m in members for f in m.source.split(";")})),
        series_uid=head.series_uid,
        label=" + ".join(m.label for m in members),
        files=head.files,
        modality=head.modality,
        study=head.study,
        sequence=head.sequence,
        stacked=[{"label": m.label, "series_uid": m.series_uid, "files": m.files} for m in members],
    )


def keys(items: Iterable[SeriesItem]) -> list[str]:
    return [i.key for i in items]
